# Switchyard: `make run` and `make test` are the whole quick start (Python 3.11+).
# `make run` installs the runtime dependencies only (.installed-run); `make test` and the other
# developer targets add the dev tools (.installed-dev, which implies the runtime install).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
STAMP  := $(VENV)/.installed-dev

.PHONY: install install-run run test lint check bench faults contract screenshots clean

define make_venv
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Switchyard needs Python 3.11 or newer (set PYTHON=...)")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
endef

$(RUN_STAMP): pyproject.toml
	$(make_venv)
	@echo "Installing Switchyard's runtime dependencies into $(VENV) (the first time takes a few minutes)"
	$(BIN)/python -m pip install --progress-bar on -e .
	@touch $(RUN_STAMP)

$(STAMP): pyproject.toml
	$(make_venv)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP) $(RUN_STAMP)

install: $(STAMP)

install-run: $(RUN_STAMP)

run: install-run
	$(BIN)/switchyard run

test: install
	$(BIN)/pytest

# The static checks (.ci/run runs them before the tests); `make check` adds the tests.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

check: lint
	$(BIN)/pytest

bench: install
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]"
	$(BIN)/python -m bench.queue
	$(BIN)/python -m bench.e2e
	$(BIN)/python -m bench.flow

# Fault scenarios (tests/faults): small by default (CI runs them with the suite); SCALE=large
# runs them at the sizes the README quotes.
SCALE ?= small
faults: install
	FAULT_SCALE=$(SCALE) $(BIN)/pytest tests/faults -p no:cacheprovider -s --timeout=3600

# Contract fuzzing (tests/contract): schemathesis against a live api process. CI runs 20 examples
# per operation with the suite; this runs EXAMPLES (default 200) per operation.
EXAMPLES ?= 200
contract: install
	CONTRACT_EXAMPLES=$(EXAMPLES) $(BIN)/pytest tests/contract -p no:cacheprovider --timeout=3600

# The README's console screenshots (docs/screenshots/*.png): sample data in a throwaway
# embedded PostgreSQL, pages taken by headless Chromium (Debian's `chromium` package).
screenshots: install
	$(BIN)/python -m scripts.screenshots

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
