# Lake: `make run` builds and runs Redis with the module and the sidecar;
# `make test` runs the whole suite (unit and end-to-end).

CARGO ?= cargo
# moto_server (PyPI) for the second S3 implementation, kept inside target/.
PY_VENV := target/py
MOTO := $(PY_VENV)/bin/moto_server

.PHONY: run cluster test build deps test-deps faults fuzz soak lint compose-check bench clean

deps:
	@scripts/deps.sh

test-deps:
	@scripts/deps.sh test

build: deps
	$(CARGO) build --release --workspace --locked

run: build
	@scripts/run.sh

# A local Redis Cluster (3 primaries, 3 replicas, a sidecar per node, one
# shared store) for trying Lake the way it scales out.
cluster: build
	@scripts/cluster.sh

$(MOTO):
	python3 -m venv $(PY_VENV)
	$(PY_VENV)/bin/pip install --quiet --disable-pip-version-check 'moto[server]==5.2.5'

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets --locked -- -D warnings

compose-check: test-deps
	docker-compose -f docker-compose.yml config -q
	docker-compose -f docker-compose.cluster.yml config -q

# The module built with LAKE.FAULT (tests only: a panic armed at any entry
# Redis calls), in a target directory of its own so liblake.so stays clean.
faults: deps
	$(CARGO) build --release --locked -p lake-module --features fault-injection --target-dir target/faults

# One release build, shared by every test binary. The benchmark harness
# runs once in its quick mode so it cannot rot.
test: test-deps build faults $(MOTO) compose-check
	$(CARGO) test --release --workspace --locked
	target/release/lake-bench --quick --out target/bench/quick.json > /dev/null
	target/release/lake-bench --apps --secs 0.2 --clients 1,8 > /dev/null
	scripts/soak.sh $(SOAK_SHORT_SECS) target/soak/short

# The nemesis soak at length, standalone and 3+3 cluster side by side:
# random faults on a printed seed, a list-append history checker; report,
# history and timeline.svg in target/soak/long/<topology>
# (`SOAK_SECS=600 make soak` for a shorter one).
SOAK_SECS ?= 1800
SOAK_SHORT_SECS ?= 150
soak: build
	scripts/soak.sh $(SOAK_SECS) target/soak/long

# The command fuzzer at length (`make test` runs 3,000 commands); a seed
# replays a run: make fuzz LAKE_FUZZ_SEED=123.
LAKE_FUZZ_COMMANDS ?= 100000
fuzz: build
	LAKE_FUZZ_COMMANDS=$(LAKE_FUZZ_COMMANDS) $(CARGO) test --release --locked -p lake-tests --test fuzz -- --nocapture

# Lake against its baselines in one run; prints markdown tables and writes
# target/bench/results.json. About 7 minutes on 2 cores.
bench: build
	target/release/lake-bench
	target/release/lake-bench --apps
	target/release/lake-bench --plateau 200000

clean:
	$(CARGO) clean
