# Set-up and entry points. `make demo` and `make test` each create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.p2m-installed
# The body model, warp and matplotlib caches live in the project, never in the home folder.
export P2M_CACHE_DIR ?= $(CURDIR)/.cache
export MPLCONFIGDIR ?= $(CURDIR)/.cache/matplotlib

.PHONY: demo test test-fast lint bench setup clean

setup: $(STAMP)

# torch is installed first and pinned: an unpinned torch would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,detect]'
	$(BIN)/python -m p2m.body.prepare
	touch $@

demo: $(STAMP)
	$(BIN)/p2m demo --out demo-out

test: $(STAMP)
	$(BIN)/ruff check p2m tests benchmarks scripts
	$(BIN)/ruff format --check p2m tests benchmarks scripts
	bash scripts/ensure-chromium
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check p2m tests benchmarks scripts
	$(BIN)/ruff format --check p2m tests benchmarks scripts

# img2dataset (the crawl baseline) gets a venv of its own: it pins webdataset<0.3 and a dataclasses backport.
I2D := .venv-img2dataset
bench: $(STAMP)
	$(BIN)/pip install -q -e '.[bench]'
	test -x $(I2D)/bin/python || ($(PYTHON) -m venv $(I2D) && $(I2D)/bin/pip install -q img2dataset)
	P2M_IMG2DATASET_PYTHON=$(CURDIR)/$(I2D)/bin/python $(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) $(I2D) .cache demo-out
