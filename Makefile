# drostudy: `make study` runs the whole study, `make test` the test suite; both set up .venv first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS ?= 1
# FULL=1 selects each notebook's larger (GPU) configuration.
FULL ?= 0

.PHONY: setup study capacity test lint lab sweep data clean-cache

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $(STAMP)

setup: $(STAMP)

data: setup
	$(PY) -m drostudy data build

# Writes results/ (comparisons CSVs, scalar records, PROVENANCE.json) and figures/*.png, which are committed,
# then regenerates the README's findings section from them.
study: data
	$(PY) -m drostudy study --full $(FULL)
	$(PY) -m drostudy.analysis.findings

# Notebook 06 (does the verdict survive capacity?): too long for the study's budget, so it runs on its own,
# resumably (a finished run is never redone); its results are committed beside the study's. STAGES=dpo (or
# reward, testbed, comma-separated) runs those stages only and keeps the committed rows of the others.
STAGES ?= reward,dpo,testbed
capacity: data
	$(PY) -m drostudy study --only 06 --full $(FULL) --param STAGES=$(STAGES)

# Test files run in TEST_WORKERS processes (pytest-xdist), each file whole in one of them: its module fixtures
# are built once. Most tests keep one core busy at a time, so two workers use a 2-core machine's second core.
TEST_WORKERS ?= 2
test: setup
	$(PY) scripts/check_notebooks.py
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

lint: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Opens the repository: notebooks/ holds the sources (no outputs), runs/study/NN_slug/ the executed study.
lab: setup
	@echo "make lab: the executed study notebooks (with outputs, from make study) are in runs/study/NN_slug/; the sources in notebooks/"
	$(VENV)/bin/jupyter lab --notebook-dir=.

# Two runs at a time, one thread each: on 2 cores that beats one run on two threads (kernel start and
# feature caching run side by side).
sweep: data
	OMP_NUM_THREADS=1 $(PY) -m drostudy sweep --grid default --workers 2

clean-cache:
	rm -rf .cache
