# Switchyard: `make run` and `make test` are the whole quick start (Python 3.11+).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev

.PHONY: install run test check bench faults clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Switchyard needs Python 3.11 or newer (set PYTHON=...)")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/switchyard run

test: install
	$(BIN)/pytest

check: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/pytest

bench: install
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]"
	$(BIN)/python -m bench.queue
	$(BIN)/python -m bench.e2e

# Fault scenarios (tests/faults): small by default (CI runs them with the suite); SCALE=large
# runs them at the sizes the README quotes.
SCALE ?= small
faults: install
	FAULT_SCALE=$(SCALE) $(BIN)/pytest tests/faults -p no:cacheprovider -s --timeout=3600

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
