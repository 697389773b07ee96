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
# Every benchmark runs even when one misses its target (it exits non-zero);
# the last status says whether all met theirs.
BENCHMARKS := exec_storm pipeline exporter_json exporter_otlp exporter_outage enforcement open_storm enricher_hooks syscall_dispatch
bench: setup
	@status=0; for b in $(BENCHMARKS); do \
		$(PY) -m benchmarks.$$b || status=1; \
	done; exit $$status

check: setup
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

fmt: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache
