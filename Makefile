# The two commands of the README: `make train` and `make test`. Each creates .venv when missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
ARGS   ?=

.PHONY: train test test-fast install clean

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

install: $(VENV)/.installed

## Train on the embedded default (synthetic data, no network); extra Hydra overrides via ARGS="...".
train: $(VENV)/.installed
	$(PY) train.py $(ARGS)

## Run the whole test suite.
test: $(VENV)/.installed-test
	$(PY) -m pytest -n 2 --dist loadfile $(ARGS)

## The suite without the end-to-end runs marked slow.
test-fast: $(VENV)/.installed-test
	$(PY) -m pytest -n 2 --dist loadfile -m "not slow" $(ARGS)

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
