# Plain targets; each does its own setup. See README.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CACHE  := $(or $(TXINGEST_CACHE),.cache)
TOXIPROXY_VERSION := v2.12.0
TOXIPROXY := $(CACHE)/toxiproxy/$(TOXIPROXY_VERSION)/bin/server

.PHONY: install test unit lint demo kafka-up kafka-down image clean chaos chaos-content chaos-full chaos-broken chaos-net toxiproxy bench bench-quick

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

test: install
	$(BIN)/python -m pytest -q -ra

unit: install
	$(BIN)/python -m pytest -q tests/unit

lint: install
	$(BIN)/ruff check app tests tools chaos bench
	$(BIN)/mypy app tools chaos bench

kafka-up:
	$(PYTHON) tools/local_kafka.py up

kafka-down:
	$(PYTHON) tools/local_kafka.py down

demo: install kafka-up
	$(BIN)/python -m tools.demo

# Exactly once under faults (chaos/run.py); SEED=n repeats a run.
chaos: install
	$(BIN)/python -m chaos.run --tier ci $(if $(SEED),--seed $(SEED))

# The same faults with DEDUP=content and repeated inputs (CI runs it too).
chaos-content: install
	$(BIN)/python -m chaos.run --tier ci-content $(if $(SEED),--seed $(SEED))

chaos-full: install
	$(BIN)/python -m chaos.run --tier full $(if $(SEED),--seed $(SEED))

chaos-broken: install
	$(BIN)/python -m chaos.run --tier ci --copier broken $(if $(SEED),--seed $(SEED))

# The network tier: copiers reach the 3-node cluster through Toxiproxy (chaos/netfaults.py).
chaos-net: install $(TOXIPROXY)
	$(BIN)/python -m chaos.run --tier net --toxiproxy $(TOXIPROXY) $(if $(SEED),--seed $(SEED))

# Toxiproxy's server, built once from its Go module (chaos/toxiproxy.py drives it).
toxiproxy: $(TOXIPROXY)

$(TOXIPROXY):
	GOBIN=$(abspath $(dir $@)) go install github.com/Shopify/toxiproxy/v2/cmd/server@$(TOXIPROXY_VERSION)

# Benchmarks (bench/run.py): results in bench/results/latest.{json,md,png}.
# BENCH_ARGS passes options, e.g. BENCH_ARGS="--runs 5 --s2-files 300".
bench: $(VENV)/.bench-installed
	$(BIN)/python -m bench.run --all $(BENCH_ARGS)

bench-quick: $(VENV)/.bench-installed
	$(BIN)/python -m bench.run --quick $(BENCH_ARGS)

$(VENV)/.bench-installed: $(VENV)/.installed bench/requirements.lock
	$(BIN)/pip install -q --disable-pip-version-check -r bench/requirements.lock
	touch $@

image:
	docker build -t txingest:0.1.0 .

clean: kafka-down
	rm -rf $(VENV) .cache
