"""Targets of the processes that tests/test_workers.py spawns (see the comment there)."""

from __future__ import annotations

import os
import time

from mbr_bench.benchmark import workers


def worker(url: str, budget: int, seconds: float) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = workers.open_storage(url, heartbeat=1)
    study = optuna.load_study(study_name="shared", storage=storage)

    def objective(trial):
        time.sleep(seconds)
        return trial.suggest_float("x", 0.0, 1.0)

    workers.run_trials(study, objective, budget, workers.study_lock(storage, "shared"), None, wait_for_others=True,
                       poll_seconds=0.2)


def claim_and_fill(root: str, marker: str) -> None:
    from mbr_bench.benchmark.features.cache import CacheKey, EmbeddingCache

    cache = EmbeddingCache(root)
    key = CacheKey("v1", {"backbone": {"backbone": "toy"}})
    with cache.claim(key):
        if cache.load(key) is not None:
            return
        with open(marker, "a") as handle:  # one line per worker that computed the entry
            handle.write(f"{os.getpid()}\n")
        with cache.writer(key, (50, 4), {}) as out:
            time.sleep(1.0)
            out[:] = 1.0


def write_forever(root: str) -> None:
    from mbr_bench.benchmark.features.cache import CacheKey, EmbeddingCache

    cache = EmbeddingCache(root)
    key = CacheKey("v1", {"backbone": {"backbone": "toy"}})
    with cache.claim(key), cache.writer(key, (1000, 16), {}) as out:
        out[:10] = 1.0
        out.flush()
        time.sleep(600)

