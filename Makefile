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

.PHONY: run test venv data clean peers

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

# Peer toolkits for benchmarks/peers/ (not part of the package): each in its own virtual env, so
# the project's .venv never gets their dependencies. torch==2.13.0 (the local CPU wheel) goes in
# first and benchmarks/peers/constraints.txt pins it, so no install can swap in a CUDA build.
# Install flags as found in practice: USB and LAMDA-SSL with --no-deps (their declared
# dependencies pull torchaudio / torchtext / torch-geometric, which do not fit torch 2.13.0+cpu).
PEERS := benchmarks/peers
PEER_PIP = -m pip install -q -c $(PEERS)/constraints.txt

peers: $(PEERS)/.venv-modssc/.installed $(PEERS)/.venv-usb/.installed $(PEERS)/.venv-lamda/.installed

$(PEERS)/.venv-modssc/.installed: $(PEERS)/constraints.txt
	python3 -m venv $(@D)
	$(@D)/bin/python $(PEER_PIP) "$(TORCH)"
	$(@D)/bin/python $(PEER_PIP) modssc==1.2.2 pillow
	touch $@

$(PEERS)/.venv-usb/.installed: $(PEERS)/constraints.txt
	python3 -m venv $(@D)
	$(@D)/bin/python $(PEER_PIP) "$(TORCH)"
	$(@D)/bin/python $(PEER_PIP) --no-deps semilearn==0.3.2 torchvision==0.28.0
	$(@D)/bin/python $(PEER_PIP) numpy pillow scipy scikit-learn scikit-image matplotlib tqdm progress \
		"ruamel.yaml" tensorboard timm transformers
	touch $@

$(PEERS)/.venv-lamda/.installed: $(PEERS)/constraints.txt
	python3 -m venv $(@D)
	$(@D)/bin/python $(PEER_PIP) "$(TORCH)"
	$(@D)/bin/python $(PEER_PIP) --no-deps lamda-ssl==1.0.2 torchvision==0.28.0
	$(@D)/bin/python $(PEER_PIP) numpy pillow scipy scikit-learn pandas matplotlib joblib
	touch $@
