# Two commands do all set-up on a fresh machine:
#   make run   virtual env + dependencies + Fashion-MNIST, then the default preset (fmnist-1000)
#   make test  the same set-up, then the whole test suite
# TORCH is installed first so that the package's own `torch>=...` requirement adds nothing: on these
# machines `torch==2.13.0` is a local CPU wheel. On a GPU machine use e.g. `make TORCH=torch run`.
VENV  ?= .venv
PY    := $(VENV)/bin/python
TORCH ?= torch==2.13.0
FMNIST := /usr/share/datasets/fashion-mnist
ARGS  ?=

.PHONY: run test venv data bench clean

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

# Debian's dataset-fashion-mnist package: the IDX files under $(FMNIST). Skipped where apt is missing
# (the loader then also searches $$METASSL_DATA and ~/.cache/metassl, and says what to do if absent).
data:
	@if [ -d $(FMNIST) ]; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
		(apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null); \
	else echo "note: install Fashion-MNIST with: sudo apt-get install dataset-fashion-mnist"; fi

run: venv data
	$(VENV)/bin/metassl train --preset fmnist-1000 $(ARGS)

test: venv data
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
