"""Targets 1 and 2: embedding pipeline throughput vs bare predict, and the cache hit's cost.

Run by `make bench`; skipped in the normal run (pyproject's --benchmark-skip).
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import pytest

from mbr_bench.benchmark.backbones import BACKBONES
from mbr_bench.benchmark.data.crops import iter_crops
from mbr_bench.benchmark.data.manifest import load_dataset
from mbr_bench.benchmark.features import cache as cache_module
from mbr_bench.core import hashing as hashing_module
from mbr_bench.benchmark.features.cache import EmbeddingCache
from mbr_bench.benchmark.features.embed import embed_video

from .conftest import mobilenet_weights

BATCH = 32
PIPELINE_TARGET = 0.85
CACHE_TARGET = 0.02

# Frames per video and interleaved rounds (bare pass then pipeline pass, each round): enough batches
# for a steady state on 2 cores, small enough that `make bench` stays within its budget.
CASES = {
    "mobilenet_v2": {"frames": 320, "rounds": 3},
    "resnet50v2": {"frames": 128, "rounds": 2},
}


def _bare_batches(dataset, size: int) -> list[np.ndarray]:
    """The video's crops, decoded once, in the batches the pipeline would form."""
    entry = dataset.videos[0]
    crops = np.stack(list(iter_crops(entry.video, dataset.crop, size)))
    return [np.ascontiguousarray(crops[i : i + BATCH]) for i in range(0, len(crops), BATCH)]


def _bare_pass(backbone, batches: list[np.ndarray]) -> float:
    started = time.perf_counter()
    for batch in batches:
        backbone.embed_images(batch)
    return time.perf_counter() - started


def _backbone(name: str):
    import keras

    keras.utils.set_random_seed(0)
    weights = mobilenet_weights() if name == "mobilenet_v2" else "none"
    backbone = BACKBONES.build(name, weights=weights)
    backbone.build()
    return backbone, weights


@pytest.mark.parametrize("name", list(CASES))
def test_pipeline_throughput_vs_bare_predict(benchmark, bench_dataset, tmp_path, name):
    frames, rounds = CASES[name]["frames"], CASES[name]["rounds"]
    dataset = load_dataset(bench_dataset(frames))
    entry = dataset.videos[0]
    backbone, weights = _backbone(name)
    batches = _bare_batches(dataset, backbone.input_size)
    assert sum(len(b) for b in batches) == frames
    for batch in {len(b): b for b in batches}.values():  # trace every batch shape once, outside timing
        backbone.embed_images(batch)

    bare_seconds: list[float] = []
    pipe_seconds: list[float] = []
    counter = iter(range(1000))

    def setup():
        # Interleaved: a bare pass right before each pipeline pass, so both see the same machine load.
        bare_seconds.append(_bare_pass(backbone, batches))
        hashing_module._hash_memo.clear()  # a fresh cache in a fresh process hashes the video too
        cache = EmbeddingCache(tmp_path / f"cache{next(counter)}")
        return (cache,), {}

    def pipeline(cache):
        started = time.perf_counter()
        result = embed_video(dataset, entry, backbone, cache, batch_size=BATCH, progress=False)
        pipe_seconds.append(time.perf_counter() - started)
        return result

    result = benchmark.pedantic(pipeline, setup=setup, rounds=rounds, iterations=1)
    assert result.computed == frames

    bare_fps = frames / min(bare_seconds)
    pipe_fps = frames / min(pipe_seconds)
    ratio = pipe_fps / bare_fps
    # Per-round ratios show how much of the spread is machine noise.
    per_round = [b / p for b, p in zip(bare_seconds, pipe_seconds)]
    benchmark.extra_info.update(
        target=f"1. embed_video throughput / bare predict ({name}, weights {weights})",
        ratio=round(ratio, 4),
        comparison=">=",
        target_value=PIPELINE_TARGET,
        note=(f"{frames} frames 640x480 mp4v, crop full->224, batch {BATCH}; best of {rounds} interleaved "
              f"rounds: pipeline {pipe_fps:.1f} fps vs bare {bare_fps:.1f} fps; "
              f"per-round ratios {', '.join(f'{r:.3f}' for r in per_round)}"),
        frames=frames,
        batch_size=BATCH,
        bare_seconds=[round(s, 4) for s in bare_seconds],
        pipeline_seconds=[round(s, 4) for s in pipe_seconds],
        bare_fps=round(bare_fps, 2),
        pipeline_fps=round(pipe_fps, 2),
        median_per_round_ratio=round(statistics.median(per_round), 4),
    )


def test_cache_hit_cost(benchmark, bench_dataset, tmp_path):
    frames = CASES["mobilenet_v2"]["frames"]
    dataset = load_dataset(bench_dataset(frames))
    entry = dataset.videos[0]
    backbone, weights = _backbone("mobilenet_v2")
    backbone.embed_images(np.zeros((BATCH, backbone.input_size, backbone.input_size, 3), np.uint8))
    cache = EmbeddingCache(tmp_path / "cache")

    hashing_module._hash_memo.clear()
    started = time.perf_counter()
    first = embed_video(dataset, entry, backbone, cache, batch_size=BATCH, progress=False)
    first_seconds = time.perf_counter() - started
    assert first.computed == frames

    hits: list[float] = []

    def second():
        started = time.perf_counter()
        result = embed_video(dataset, entry, backbone, cache, batch_size=BATCH, progress=False)
        hits.append(time.perf_counter() - started)
        return result

    result = benchmark.pedantic(second, rounds=5, iterations=1)
    assert result.computed == 0

    # The same hit in a new process: neither the video's sha256 nor the entry's checksum is memoised.
    cold: list[float] = []
    for _ in range(3):
        hashing_module._hash_memo.clear()
        cache_module._verified.clear()
        started = time.perf_counter()
        again = embed_video(dataset, entry, backbone, cache, batch_size=BATCH, progress=False)
        cold.append(time.perf_counter() - started)
        assert again.computed == 0

    hit_seconds = statistics.median(hits)
    cold_seconds = statistics.median(cold)
    ratio = hit_seconds / first_seconds
    benchmark.extra_info.update(
        target="2. cache hit time / first embed_video time (mobilenet_v2, computed == 0)",
        ratio=round(ratio, 5),
        comparison="<=",
        target_value=CACHE_TARGET,
        note=(f"first {first_seconds:.3f} s ({frames} frames computed), hit {hit_seconds * 1e3:.1f} ms "
              f"(median of 5, computed {result.computed}); hit with the video's sha256 and the entry's checksum not yet memoised "
              f"(new process) {cold_seconds * 1e3:.1f} ms = {cold_seconds / first_seconds:.4f} x"),
        first_seconds=round(first_seconds, 4),
        hit_seconds=round(hit_seconds, 5),
        cold_hit_seconds=round(cold_seconds, 5),
        cold_ratio=round(cold_seconds / first_seconds, 5),
        computed_on_hit=result.computed,
    )
