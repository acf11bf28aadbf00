# The two commands a newcomer needs: `make demo` and `make test`. Each sets up its own virtualenv.
# `make demo` brings up a real Airflow 3.3.2 (installed into its own venv on the first run: a few minutes),
# its metadata DB, example DAGs and dagcache in front, until Ctrl-C. ARGS=--clean removes it all;
# ARGS=--stand-in is the quick mode without Airflow.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint typecheck unit bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("dagcache needs Python >= 3.11") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

demo: $(BIN)/.installed
	$(BIN)/dagcache demo $(ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check proxy cache

typecheck: $(BIN)/.installed
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest $(PYTEST_ARGS)

unit: $(BIN)/.installed
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

bench: $(BIN)/.installed
	$(BIN)/python -m bench.passthrough $(ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
