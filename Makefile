# Two entry points (see README): `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
WORKDIR ?= mbr-work
# ImageNet weights: Keras downloads them into ~/.keras/models on first use. Where a folder of
# pre-fetched weights sits beside the checkout (offline machines), use it.
ifneq ($(wildcard ../shared/keras_home/models),)
export KERAS_HOME ?= $(abspath ../shared/keras_home)
endif

.PHONY: setup demo test test-fast bench clean

setup: $(BIN)/.installed

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

# The main job on the built-in default: the synthetic open field, small budget, all default pairs,
# then the leaderboard: each pair's best trial refit, tested once on the held-out videos, compared.
demo: setup
	$(BIN)/mbr-bench run --study wall_rearing --workdir $(WORKDIR)
	$(BIN)/mbr-bench leaderboard --study wall_rearing --workdir $(WORKDIR)

test: setup
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

# Performance suite (tests/bench): ratios measured side by side, saved as pytest-benchmark JSON and
# turned into bench-results/report.md (with search_efficiency.png). The normal test run skips these
# (--benchmark-skip in addopts); their pure parts (report, cost model) are ordinary tests.
bench: setup
	mkdir -p bench-results
	MBR_BENCH_RESULTS=bench-results \
	$(BIN)/python -m pytest tests/bench -o addopts="--import-mode=importlib -ra" --benchmark-only \
		--benchmark-json=bench-results/benchmark.json
	$(BIN)/python tests/bench/report.py bench-results/benchmark.json bench-results/report.md

clean:
	rm -rf $(VENV) $(WORKDIR) .pytest_cache *.egg-info
