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

.PHONY: setup demo test test-fast lint bench lock clean

setup: $(BIN)/.installed

# From the lock: every package at the version of constraints.txt, so a new upstream release cannot
# change the tested environment (`make lock` refreshes the lock).
$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]" -c constraints.txt
	touch $@

# The main job on the built-in default: the synthetic open field, small budget, all default pairs,
# then the leaderboard: each pair's best trial refit, tested once on the held-out videos, compared.
demo: setup
	$(BIN)/mbr-bench run --study wall_rearing --workdir $(WORKDIR)
	$(BIN)/mbr-bench leaderboard --study wall_rearing --workdir $(WORKDIR)

# --durations: the slowest tests, so that a slow CI run says where its time went.
test: setup
	$(BIN)/lint-imports
	$(BIN)/python -m pytest --durations=15

test-fast: setup
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -m "not slow"

# The import layers of [tool.importlinter] in pyproject.toml (run by `make test` before pytest).
lint: setup
	$(BIN)/lint-imports

# Performance suite (tests/bench): ratios measured side by side, saved as pytest-benchmark JSON and
# turned into bench-results/report.md (with search_efficiency.png) and docs/performance.md. The normal test run skips these
# (--benchmark-skip in addopts); their pure parts (report, cost model) are ordinary tests.
bench: setup
	mkdir -p bench-results
	MBR_BENCH_RESULTS=bench-results \
	$(BIN)/python -m pytest tests/bench -o addopts="--import-mode=importlib -ra" --benchmark-only \
		--benchmark-json=bench-results/benchmark.json
	$(BIN)/python tests/bench/report.py bench-results/benchmark.json bench-results/report.md --docs docs/performance.md

# Refresh constraints.txt: resolve .[dev] afresh (no constraints) in a throwaway virtualenv and
# write its `pip freeze` under the file's header comment. The one command that writes the lock.
lock:
	@set -e; tmp="$$(mktemp -d)"; trap 'rm -rf "$$tmp"' EXIT; \
	$(PYTHON) -m venv "$$tmp/venv"; \
	"$$tmp/venv/bin/python" -m pip install --quiet --upgrade pip; \
	"$$tmp/venv/bin/python" -m pip install --quiet -e ".[dev]"; \
	sed -n '/^#/!q; p' constraints.txt > "$$tmp/constraints.txt"; \
	"$$tmp/venv/bin/python" -m pip freeze --all --exclude-editable --exclude pip --exclude setuptools \
		--exclude wheel --exclude distribute --exclude mbr-bench >> "$$tmp/constraints.txt"; \
	mv "$$tmp/constraints.txt" constraints.txt; \
	echo "constraints.txt: $$(grep -c '==' constraints.txt) pins; run make test to install and test them"

clean:
	rm -rf $(VENV) $(WORKDIR) .pytest_cache .grimp_cache .import_linter_cache *.egg-info
