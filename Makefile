PYTHON ?= python3
STAMP := .installed

.PHONY: install lint test bench demo up

$(STAMP): pyproject.toml
	$(PYTHON) -m pip install -q -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m mypy

test: $(STAMP)
	$(PYTHON) -m pytest

bench: $(STAMP)
	$(PYTHON) -m bench.pipeline
	$(PYTHON) -m bench.pulls
	$(PYTHON) -m bench.security
	$(PYTHON) -m bench.reconciler
	$(PYTHON) -m bench.telemetry

demo: $(STAMP)
	bash scripts/demo.sh

up: $(STAMP)
	agenticore up
