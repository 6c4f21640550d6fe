# molml: `make run` sets up and runs the offline quickstart; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.molml-installed
export MOLML_DATA_DIR ?= $(abspath ../shared/datasets)

.PHONY: setup run test test-all test-wheel lint bench clean

setup: $(STAMP)

# torch 2.13.0 first (the CPU wheel), then molml and its dependencies.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	# the ZINC pretraining corpus (optional for users: molml pretrain also reads SMILES files)
	$(BIN)/pip install --quiet --no-deps molsets==0.3.1
	touch $(STAMP)

run: setup
	$(BIN)/molml quickstart

test: setup
	$(BIN)/pytest -q

test-all: setup
	$(BIN)/pytest -q -m ""

# molml as installed from its wheel (not editable), run outside the checkout: the packaging
# tests, then `molml quickstart` from a fresh venv that reuses .venv's dependencies (offline).
WHEEL_DIR := build/wheel-check
test-wheel: setup
	$(BIN)/pytest -q -m slow tests/test_packaging.py
	rm -rf $(WHEEL_DIR) && mkdir -p $(WHEEL_DIR)
	$(BIN)/pip wheel --quiet --no-deps --no-build-isolation -w $(WHEEL_DIR) .
	$(BIN)/python -m venv --without-pip $(WHEEL_DIR)/venv
	$(BIN)/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))' > \
		"$$($(WHEEL_DIR)/venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/molml-deps.pth"
	$(BIN)/pip --python $(WHEEL_DIR)/venv/bin/python install --quiet --no-deps --ignore-installed \
		$(WHEEL_DIR)/molml-*.whl
	cd "$$(mktemp -d)" && trap 'rm -rf "$$PWD"' EXIT && \
		$(abspath $(WHEEL_DIR))/venv/bin/python -c 'import molml, sys; assert molml.__file__.startswith(sys.prefix)' && \
		$(abspath $(WHEEL_DIR))/venv/bin/molml quickstart --max-epochs 1

lint: setup
	$(BIN)/ruff check molml tests scripts
	$(BIN)/ruff format --check molml tests scripts

bench: setup
	$(BIN)/python scripts/bench_featurize.py

clean:
	rm -rf runs .molml_cache
