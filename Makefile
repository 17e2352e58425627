# Plain targets; each does its own setup. See README.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: install test unit lint demo kafka-up kafka-down image clean

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
	$(BIN)/ruff check app tests tools
	$(BIN)/mypy app

kafka-up:
	$(PYTHON) tools/local_kafka.py up

kafka-down:
	$(PYTHON) tools/local_kafka.py down

demo: install kafka-up
	$(BIN)/python tools/demo.py

image:
	docker build -t txingest:0.1.0 .

clean: kafka-down
	rm -rf $(VENV) .cache
