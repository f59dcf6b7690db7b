# Lake: `make run` builds and runs Redis with the module and the sidecar;
# `make test` runs the whole suite (unit and end-to-end).

CARGO ?= cargo
# moto_server (PyPI) for the second S3 implementation, kept inside target/.
PY_VENV := target/py
MOTO := $(PY_VENV)/bin/moto_server

.PHONY: run test build deps test-deps lint compose-check clean

deps:
	@scripts/deps.sh

test-deps:
	@scripts/deps.sh test

build: deps
	$(CARGO) build --release --workspace --locked

run: build
	@scripts/run.sh

$(MOTO):
	python3 -m venv $(PY_VENV)
	$(PY_VENV)/bin/pip install --quiet --disable-pip-version-check 'moto[server]==5.2.5'

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets --locked -- -D warnings

compose-check: test-deps
	docker-compose -f docker-compose.yml config -q

# One release build, shared by every test binary.
test: test-deps build $(MOTO) compose-check
	$(CARGO) test --release --workspace --locked

clean:
	$(CARGO) clean
