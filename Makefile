# alertd: `make run` starts the daemon (Sentry off, alerts in the log); `make test` runs every check.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup tools run test lint typecheck pytest clean

# Each area adds its own targets in mk/*.mk and appends the checks `make test` must run to TEST_EXTRA.
TEST_EXTRA :=
-include mk/*.mk

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

tools:
	./scripts/install-tools.sh

run: setup
	$(BIN)/alertd serve

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

pytest: setup tools
	$(BIN)/pytest

# pytest runs last, so that its summary line closes the output.
test: lint typecheck $(TEST_EXTRA) pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
