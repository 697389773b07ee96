# Ocellus. `make run` and `make test` set up everything they need (idempotent).
VENV   ?= .venv
PY     := $(VENV)/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: setup run test bench check fmt clean

setup:
	@./scripts/setup-host.sh

run: setup
	$(VENV)/bin/ocellus up

test: setup
	$(PY) -m pytest -ra $(PYTEST_ARGS)

# Speed and memory targets (not part of `make test`); root, a quiet machine.
bench: setup
	$(PY) -m benchmarks.exec_storm $(BENCH_ARGS)
	$(PY) -m benchmarks.pipeline
	$(PY) -m benchmarks.exporter_json
	$(PY) -m benchmarks.exporter_otlp
	$(PY) -m benchmarks.exporter_outage
	$(PY) -m benchmarks.enforcement
	$(PY) -m benchmarks.open_storm

check: setup
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

fmt: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache
