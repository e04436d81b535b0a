# The two commands a newcomer needs (see README.md): `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo down test lint

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## The main job: install into .venv, bring the whole dev stack up in the background, and run
## the demo scenario on it.
demo: install
	$(BIN)/q2c dev up
	$(BIN)/q2c demo

down:
	$(BIN)/q2c dev down

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## The whole test suite: lint, type check, tests (real Temporal, Tryton, stand-ins, PostgreSQL).
test: lint
	$(BIN)/pytest
