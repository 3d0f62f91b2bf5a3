# Switchyard: `make run` and `make test` are the whole quick start (Python 3.11+).
# `make run` installs the runtime dependencies only (.installed-run); `make test` and the other
# developer targets add the dev tools (.installed-dev, which implies the runtime install).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
STAMP  := $(VENV)/.installed-dev

.PHONY: install install-run run test test-pooler lint check bench bench-scale faults contract screenshots clean

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

# The scaling curve (bench/scale.py): the api in one process, 1, 2 and 4 worker processes, and
# 4 through PgBouncer, on the PostgreSQL at 127.0.0.1:5432 (DSN=... for another).
DSN ?= postgresql://postgres@127.0.0.1:5432
bench-scale: install
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]"
	$(BIN)/python -m bench.scale --dsn $(DSN)

# The end-to-end tests, the kill-workers drill and the SIGTERM drain through a real PgBouncer
# in transaction mode (tests/support/pooler.py); .ci/run's last pass.
POOLER_TESTS := tests/e2e tests/faults/test_kill_workers.py \
	tests/faults/test_worker_faults.py::test_sigterm_during_long_steps_stops_claiming_and_exits_within_the_grace
test-pooler: install
	SWITCHYARD_TEST_POOLER=pgbouncer $(BIN)/pytest $(POOLER_TESTS) -p no:cacheprovider

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
