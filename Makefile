# The two commands of the README: `make train` and `make test`. Each creates .venv when missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
ARGS   ?=

.PHONY: train test test-fast install openmmlab gpu-wheels clean

$(PY):
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

install: $(VENV)/.installed

## Install the openmmlab extra: mmengine, mmcv (with ops), mmdet, mmsegmentation, pycocotools.
openmmlab: $(VENV)/.installed-openmmlab

## Train on the embedded default (synthetic data, no network); extra Hydra overrides via ARGS="...".
train: $(VENV)/.installed
	$(PY) train.py $(ARGS)

## Run the whole test suite.
test: $(VENV)/.installed-test $(VENV)/.installed-openmmlab
	$(PY) -m pytest -n 2 --dist loadfile $(ARGS)

## The suite without the end-to-end runs marked slow.
test-fast: $(VENV)/.installed-test $(VENV)/.installed-openmmlab
	$(PY) -m pytest -n 2 --dist loadfile -m "not slow" $(ARGS)

## The pure-Python packages benchmarks/gpu.sh needs beyond torch and timm, as wheels in .whl/, for a GPU machine
## without a package index: carry .whl/ there and run `benchmarks/gpu.sh --wheels .whl`.
gpu-wheels: $(PY)
	$(PIP) wheel -q --no-deps -c constraints.txt -w .whl hydra-core omegaconf antlr4-python3-runtime

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
