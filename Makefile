# The two commands the README opens with: `make run` (the default study, end to end) and `make test`.
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
export TORCHINDUCTOR_CACHE_DIR ?= $(CURDIR)/.cache/inductor
export HWR_DATA ?= $(HOME)/.cache/hwr
# study processes, one thread each (hwr.tune.pool: small eager runs go 3x faster this way on 2 cores)
WORKERS ?= 2

.PHONY: run test lint bench setup clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e '.[dev,jax]'
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/hwr data fetch mnist
	$(BIN)/hwr study run optdigits_longtail --workers $(WORKERS)
	$(BIN)/hwr study best optdigits_longtail --evaluate --workers $(WORKERS)
	$(BIN)/hwr study plot optdigits_longtail --out runs/studies/optdigits_longtail/plots

test: $(STAMP)
	$(BIN)/ruff check hwr studies benchmarks tests
	$(BIN)/ruff format --check hwr studies benchmarks tests
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -n auto --maxprocesses 4 --dist loadfile --no-loadscope-reorder --durations=15 tests; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; fi; exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check hwr studies benchmarks tests
	$(BIN)/ruff format --check hwr studies benchmarks tests
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/python benchmarks/step.py

clean:
	rm -rf $(VENV) .cache
