# Plain targets; each does its own setup. See README.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# KAFKA_VERSION=3.9.1 (in the environment or on the command line) runs that broker
# version for kafka-up, test, chaos* (the 3-node cluster) and demo (tools/local_kafka.py reads it);
# unset: the version pinned in tools/kafka/pom.xml. docs/testing.md#kafka-versions.
# A chosen version's chaos report gets its own name, beside the default one's.
chaos_report = $(if $(KAFKA_VERSION),--report results/chaos/$(1)-kafka-$(KAFKA_VERSION)-latest.json)

# promtool (Prometheus's rule checker and rule unit tester), built from the Prometheus
# Go module into .cache: Go module v0.316.0 is Prometheus 3.16.0. remove_all_sd leaves
# out the service discovery plugins, which rule checks and tests never use. The Go
# caches are deleted after a good build (they are GBs); a new version builds afresh.
# CPU heavy: run it under the heavy lock. Build time: docs/observability.md.
PROMTOOL_VERSION := v0.316.0
PROMTOOL := .cache/promtool-$(PROMTOOL_VERSION)/promtool
GO_ENV := GOPATH=$(CURDIR)/.cache/go GOCACHE=$(CURDIR)/.cache/go-build GOFLAGS=-modcacherw \
	GOTOOLCHAIN=local CGO_ENABLED=0

CACHE  := $(or $(TXINGEST_CACHE),.cache)
TOXIPROXY_VERSION := v2.12.0
TOXIPROXY := $(CACHE)/toxiproxy/$(TOXIPROXY_VERSION)/bin/server

.PHONY: install test unit lint demo kafka-up kafka-down image clean chaos chaos-content chaos-full chaos-broken chaos-net toxiproxy bench bench-quick promtool lock

install: $(VENV)/.installed

# The dev lock (runtime + dev tools, hashes checked); the image installs requirements.lock.
$(VENV)/.installed: pyproject.toml requirements-dev.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --require-hashes -r requirements-dev.lock
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

# Re-lock after changing pyproject.toml's dependencies: runtime first, then dev
# constrained to the same runtime versions. --universal: one lock for every platform.
UV_COMPILE := $(BIN)/uv pip compile pyproject.toml --quiet --universal --python-version 3.11 \
	--generate-hashes --custom-compile-command "make lock"
lock: install
	$(UV_COMPILE) -o requirements.lock
	$(UV_COMPILE) --extra dev --constraint requirements.lock -o requirements-dev.lock

test: install $(PROMTOOL)
	$(BIN)/python -m pytest -q -ra

unit: install $(PROMTOOL)
	$(BIN)/python -m pytest -q tests/unit

lint: install
	$(BIN)/ruff check app tests tools chaos bench
	$(BIN)/mypy app tools chaos bench
	$(BIN)/python -m pytest --collect-only -q > /dev/null  # every test module imports

# A re-drive session on a private broker, printed as it runs (captured in docs/redrive.md).
.PHONY: redrive-demo
redrive-demo: install
	$(BIN)/python -m tools.redrive_demo

kafka-up:
	$(PYTHON) tools/local_kafka.py up

kafka-down:
	$(PYTHON) tools/local_kafka.py down

demo: install kafka-up
	$(BIN)/python -m tools.demo

# Exactly once under faults (chaos/run.py); SEED=n repeats a run.
chaos: install
	$(BIN)/python -m chaos.run --tier ci $(if $(SEED),--seed $(SEED)) $(call chaos_report,ci)

# The same faults with DEDUP=content and repeated inputs (CI runs it too).
chaos-content: install
	$(BIN)/python -m chaos.run --tier ci-content $(if $(SEED),--seed $(SEED)) \
		$(call chaos_report,ci-content)

chaos-full: install
	$(BIN)/python -m chaos.run --tier full $(if $(SEED),--seed $(SEED)) $(call chaos_report,full)

chaos-broken: install
	$(BIN)/python -m chaos.run --tier ci --copier broken $(if $(SEED),--seed $(SEED)) \
		$(call chaos_report,broken-ci)

# The network tier: copiers reach the 3-node cluster through Toxiproxy (chaos/netfaults.py).
chaos-net: install $(TOXIPROXY)
	$(BIN)/python -m chaos.run --tier net --toxiproxy $(TOXIPROXY) $(if $(SEED),--seed $(SEED))

# Toxiproxy's server, built once from its Go module (chaos/toxiproxy.py drives it).
toxiproxy: $(TOXIPROXY)

$(TOXIPROXY):
	GOBIN=$(abspath $(dir $@)) go install github.com/Shopify/toxiproxy/v2/cmd/server@$(TOXIPROXY_VERSION)

# The Kafka Streams peer's jar (below); bench/kstreams_peer.py runs it from there.
KSTREAMS_JAR := .cache/kstreams-peer/kstreams-peer.jar

# Benchmarks (bench/run.py): results in results/bench/latest.{json,md,png} (git-ignored).
# BENCH_ARGS passes options, e.g. BENCH_ARGS="--runs 5 --s2-files 300".
bench: $(VENV)/.bench-installed $(KSTREAMS_JAR)
	$(BIN)/python -m bench.run --all $(BENCH_ARGS)

bench-quick: $(VENV)/.bench-installed
	$(BIN)/python -m bench.run --quick $(BENCH_ARGS)

# The Kafka Streams peer (bench/kstreams/, docs/benchmarks.md): its jar and lib/ in .cache,
# Maven's local repository there too, so a clean clone builds it itself.
.PHONY: kstreams-peer
kstreams-peer: $(KSTREAMS_JAR)

$(KSTREAMS_JAR): bench/kstreams/pom.xml $(wildcard bench/kstreams/src/main/java/txingest/kstreams/*.java)
	mvn -q -B -Dstyle.color=never -f bench/kstreams/pom.xml -Dmaven.repo.local=$(abspath $(CACHE))/m2 \
		-Dpeer.out=$(abspath $(dir $@)) package
	touch $@

$(VENV)/.bench-installed: $(VENV)/.installed bench/requirements.lock
	$(BIN)/pip install -q --disable-pip-version-check -r bench/requirements.lock
	touch $@

# Peak RSS of one service per scenario (bench/memory/): results in
# .cache/results/bench-memory/. MEMORY_ARGS passes options, e.g.
# MEMORY_ARGS="--only big16 --source /path/to/another/checkout".
.PHONY: bench-memory
bench-memory: install
	$(BIN)/python -m bench.memory $(MEMORY_ARGS)

image:
	docker build -t txingest:0.1.0 .

promtool: $(PROMTOOL)

$(PROMTOOL):
	$(GO_ENV) GOBIN=$(CURDIR)/$(dir $@) go install -trimpath -tags remove_all_sd \
		-ldflags "-X github.com/prometheus/common/version.Version=$(PROMTOOL_VERSION)" \
		github.com/prometheus/prometheus/cmd/promtool@$(PROMTOOL_VERSION)
	rm -rf .cache/go .cache/go-build

clean: kafka-down
	rm -rf $(VENV) .cache
