# The two commands of the README: `make train` and `make test`. Each creates .venv when missing. `make help` lists
# the targets. constraints.txt pins releases that need Python 3.11 or later (scipy 1.17, numpy 2.4), so .venv is made
# with python3.11 (else python3, if that is 3.11+; else set PYTHON=...); `pip install .` alone works on Python 3.10+.
PYTHON ?= $(or $(shell command -v python3.11 || command -v python3),python3)
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
ARGS   ?=

.PHONY: help train test test-fast install openmmlab gpu-wheels clean

## List the targets and what they do.
help:
	@awk '/^## /{doc = doc (doc ? " " : "") substr($$0, 4); next} /^[a-zA-Z_-]+:/ && doc {split($$0, t, ":"); \
	  printf "  %-11s %s\n", t[1], doc} {doc = ""}' $(firstword $(MAKEFILE_LIST))

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { echo "error: the pinned \
	environment (constraints.txt) needs Python 3.11 or later, and PYTHON=$(PYTHON) is $$($(PYTHON) --version 2>/dev/null \
	|| echo missing); run make PYTHON=/path/to/python3.11 ... (pip install . without the Makefile needs only 3.10)" >&2; \
	exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# Stamps: reinstall only when the project's requirements change.
$(VENV)/.installed: $(PY) pyproject.toml constraints.txt
	$(PIP) install -q -c constraints.txt -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -q -c constraints.txt -e ".[test]"
	touch $@

# The openmmlab extra (task=detection|segmentation): mmcv 2.1.0 has only an sdist, so its wheel is built
# once (about 15 min on 2 cores) into $${REPL_WHEEL_CACHE:-~/.cache/repl/wheels} and reused from there.
$(VENV)/.installed-openmmlab: $(VENV)/.installed scripts/build_mmcv.sh
	bash scripts/build_mmcv.sh $(PY)
	touch $@

## Create .venv and install the package with the pinned versions (constraints.txt).
install: $(VENV)/.installed

## Install the openmmlab extra: mmengine, mmcv (with ops), mmdet, mmsegmentation, pycocotools.
openmmlab: $(VENV)/.installed-openmmlab

## Train on the embedded default (synthetic data, no network); extra Hydra overrides via ARGS="...".
train: $(VENV)/.installed
	$(PY) train.py $(ARGS)

## Run the whole test suite (builds and installs the openmmlab extra first, as CI does).
test: $(VENV)/.installed-test $(VENV)/.installed-openmmlab
	$(PY) -m pytest -n 2 --dist loadfile $(ARGS)

# No mmcv build here: the openmmlab tests skip themselves without the extra; `make openmmlab` first to run them too.
## The suite without the end-to-end runs marked slow; it skips the mm tests when the openmmlab extra is absent.
test-fast: $(VENV)/.installed-test
	$(PY) -m pytest -n 2 --dist loadfile -m "not slow" $(ARGS)

## The pure-Python packages benchmarks/gpu.sh needs beyond torch and timm, as wheels in .whl/, for a GPU machine
## without a package index: carry .whl/ there and run `benchmarks/gpu.sh --wheels .whl`.
gpu-wheels: $(PY)
	$(PIP) wheel -q --no-deps -c constraints.txt -w .whl hydra-core omegaconf antlr4-python3-runtime

## Remove .venv, outputs/, multirun/ and pytest's cache.
clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
