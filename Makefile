# molml: `make run` sets up and runs the offline quickstart; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.molml-installed
export MOLML_DATA_DIR ?= $(abspath ../shared/datasets)

.PHONY: setup run test test-all lint bench clean

setup: $(STAMP)

# torch 2.13.0 first (the CPU wheel), then molml and its dependencies.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

run: setup
	$(BIN)/molml quickstart

test: setup
	$(BIN)/pytest -q

test-all: setup
	$(BIN)/pytest -q -m ""

lint: setup
	$(BIN)/ruff check molml tests scripts
	$(BIN)/ruff format --check molml tests scripts

bench: setup
	$(BIN)/python scripts/bench_featurize.py

clean:
	rm -rf runs .molml_cache
