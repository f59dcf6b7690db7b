# Lake: `make run` builds and runs Redis with the module and the sidecar;
# `make test` runs the whole suite (unit and end-to-end).

CARGO ?= cargo

.PHONY: run test build deps lint clean

deps:
	@scripts/deps.sh

build: deps
	$(CARGO) build --release --workspace --locked

run: build
	@scripts/run.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets --locked -- -D warnings

# One release build, shared by every test binary.
test: build
	$(CARGO) test --release --workspace --locked

clean:
	$(CARGO) clean
