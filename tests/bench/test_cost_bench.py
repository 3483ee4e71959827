"""Target 6: the cost model's inputs, measured on this machine through the product paths.

Embedding seconds per frame per default backbone (`embed_video` on a fresh cache), and per head the
training seconds per frame-epoch (`Head.fit`, first epoch left out: it holds tracing) and inference
seconds per frame (`Head.predict_proba`) of a few calibration architectures spanning the reference
grid, on random embeddings of resnet50v2's width. Parameter counts of every grid architecture come from
`cost_model`'s formulas, checked here against Keras' `count_params`. `benchmark/cost_model.py`
projects the reference study from these figures alone (the report's cost-model section).

Run by `make bench`; skipped in the normal run (pyproject's --benchmark-skip).
"""

from __future__ import annotations

import itertools
import os
import time
from collections import Counter
from pathlib import Path

import numpy as np

from mbr_bench.benchmark.backbones import BACKBONES
from mbr_bench.benchmark.data.manifest import load_dataset
from mbr_bench.core import hashing as hashing_module
from mbr_bench.benchmark.features.cache import EmbeddingCache
from mbr_bench.benchmark.features.embed import embed_video
from mbr_bench.benchmark.features.sequences import sample_weights
from mbr_bench.benchmark.heads import HEADS
from mbr_bench.search_spaces.loader import load_search_space

from mbr_bench.benchmark.cost_model import (
    ARCHITECTURE_KEYS,
    Epochs,
    StudyShape,
    describe,
    fit_power,
    head_params,
    inputs_from_info,
    project,
    residuals,
)

EMBED_FRAMES = 96  # 3 batches of 32: the backbones' steady state on 2 cores, ~20 s for both
EMBED_BATCH = 32
SEQUENCE_LENGTH = 300
HEAD_BATCH = 8  # the grid's smallest batch and the reference's best configurations'
STUDY = StudyShape()
CALIBRATION_BACKBONE = "resnet50v2"  # random embeddings of its width (2048)
CALIBRATION_DIM = BACKBONES.get(CALIBRATION_BACKBONE).output_dim

# (architecture, windows of 300 frames per epoch, epochs, windows predicted): epoch 1 holds tracing and
# is left out. Each epoch is at least one full batch of 8 windows (Adam's update per step costs in
# proportion to the parameters, so a smaller batch would overstate a large TCN's cost per frame). The
# grid's largest TCN (3 layers, 1024 filters, kernel 5: ~196 M parameters, ~10-25 ms per frame-epoch on 2
# shared cores, a minute of build and tracing) would alone take ~4 minutes here, so the large point is
# kernel 3 (~118 M, 60% of it): the fit extrapolates 1.7x in parameters, where a convolution's cost per
# frame is proportional to them. It runs 3 epochs and predicts 4 windows (a convolution's forward cost per
# frame does not depend on the batch), so that this file stays within ~6 minutes on 2 cores.
CALIBRATION = {
    "lstm": [({"n_layers": 1, "units": 64}, 16, 4, 16),
             ({"n_layers": 2, "units": 128}, 16, 4, 16),
             ({"n_layers": 3, "units": 256}, 16, 4, 16)],
    "tcn": [({"n_layers": 1, "nb_filters": 256, "kernel_size": 3}, 8, 4, 8),
            ({"n_layers": 2, "nb_filters": 512, "kernel_size": 3}, 8, 4, 8),
            ({"n_layers": 3, "nb_filters": 1024, "kernel_size": 3}, 8, 3, 4)],
}
INFER_REPEATS = 3  # best of: LSTM predictions take ~0.2 s and vary with the machine's load
# The middle LSTM at the grid's other batch sizes (one full batch per step): an LSTM on CPU pays a fixed
# cost per time step, so its cost per frame falls with the batch. The TCN's batch factor is not
# measured (compute-bound; 32 windows of the middle TCN would take a minute per epoch).
BATCH_CHECK = ("lstm", {"n_layers": 2, "units": 128}, ((16, 16), (32, 32)), 4)  # (batch, windows) pairs
# Formula against Keras beyond the calibration models: the other width and the other normalisations.
PARAM_CHECKS = [("lstm", 1536, {"n_layers": 3, "units": 64}),
                ("tcn", 1536, {"n_layers": 1, "nb_filters": 256, "kernel_size": 3, "norm": "weight"}),
                ("tcn", 1536, {"n_layers": 2, "nb_filters": 256, "kernel_size": 5, "norm": "layer"}),
                ("tcn", 1536, {"n_layers": 1, "nb_filters": 512, "kernel_size": 3, "norm": "none"}),
                ("tcn", 97, {"n_layers": 1, "nb_filters": 16, "kernel_size": 3, "norm": "layer", "dilations": [1, 2, 4]}),
                ("frame_mlp", 2048, {"n_layers": 2, "units": 256})]


def _loadavg() -> str:
    path = Path("/proc/loadavg")
    return " ".join(path.read_text().split()[:3]) if path.exists() else "unknown"


def _embedding(dataset, name: str, tmp_path: Path) -> dict:
    backbone = BACKBONES.build(name, weights="none")
    backbone.build()
    size = backbone.input_size
    backbone.embed_images(np.zeros((EMBED_BATCH, size, size, 3), np.uint8))  # trace outside timing
    hashing_module._hash_memo.clear()  # a fresh cache in a fresh process hashes the video too
    cache = EmbeddingCache(tmp_path / f"cache_{name}")
    started = time.perf_counter()
    result = embed_video(dataset, dataset.videos[0], backbone, cache, batch_size=EMBED_BATCH, progress=False)
    seconds = time.perf_counter() - started
    assert result.computed == EMBED_FRAMES
    return {"frames": EMBED_FRAMES, "seconds": round(seconds, 4), "seconds_per_frame": seconds / EMBED_FRAMES,
            "batch_size": EMBED_BATCH, "weights": "none", "input_size": size,
            "output_dim": BACKBONES.get(name).output_dim}


def _random_video(n_windows: int, dim: int = CALIBRATION_DIM):
    rng = np.random.default_rng(0)
    frames = n_windows * SEQUENCE_LENGTH
    X = [rng.normal(size=(frames, dim)).astype(np.float32)]
    y = [(rng.random(frames) < 0.1).astype(np.int64)]
    return X, y, sample_weights(y)


def _calibrate(head_name: str, arch: dict, n_windows: int, epochs: int, infer_windows: int,
               batch_size: int = HEAD_BATCH) -> dict:
    """One fit without validation (exactly `epochs` epochs), then predictions over the first windows."""
    X, y, w = _random_video(n_windows)
    frames = len(X[0])
    head = HEADS.build(head_name, max_epochs=epochs, sequence_length=SEQUENCE_LENGTH, batch_size=batch_size,
                       dropout=0.5, learning_rate=1e-3, seed=0, **arch)
    head.fit(X, y, w, val=None)
    epoch_seconds = [epoch["seconds"] for epoch in head.history_]
    head.predict_proba(X[0][:SEQUENCE_LENGTH])  # traces the forward pass outside timing
    video = X[0][: infer_windows * SEQUENCE_LENGTH]
    infer_seconds = []
    for _ in range(INFER_REPEATS):
        started = time.perf_counter()
        head.predict_proba(video)
        infer_seconds.append(time.perf_counter() - started)
    return {"params": dict(arch), "n_params": int(head.n_params_), "windows": n_windows, "frames": frames,
            "batch_size": batch_size, "epoch_seconds": [round(s, 4) for s in epoch_seconds],
            "train_seconds_per_frame_epoch": min(epoch_seconds[1:]) / frames,
            "infer_frames": len(video), "infer_seconds": [round(s, 4) for s in infer_seconds],
            "infer_seconds_per_frame": min(infer_seconds) / len(video)}


def _grid_architectures(head_name: str) -> dict:
    """Every distinct architecture of the reference grid, how many grid configurations share it, and its
    parameter count per default backbone (the first layer reads the backbone's width)."""
    grid = load_search_space(head_name).grid()
    keys = list(grid)
    counts = Counter(
        tuple((key, values[keys.index(key)]) for key in ARCHITECTURE_KEYS[head_name] if key in keys)
        for values in itertools.product(*grid.values())
    )
    architectures = [
        {"params": dict(arch), "configs": count,
         "n_params": {b: head_params(head_name, BACKBONES.get(b).output_dim, dict(arch)) for b in STUDY.backbones}}
        for arch, count in sorted(counts.items(), key=lambda item: str(item[0]))
    ]
    return {"n_configs": sum(counts.values()), "batch_sizes": list(grid.get("batch_size", [])),
            "architectures": architectures}


def _param_checks(calibration: dict) -> list[dict]:
    checks = [{"head": head, "dim": CALIBRATION_DIM, "params": point["params"], "keras": point["n_params"],
               "formula": head_params(head, CALIBRATION_DIM, point["params"])}
              for head, points in calibration.items() for point in points]
    for head, dim, arch in PARAM_CHECKS:
        model = HEADS.build(head, **arch).build_model(dim)
        checks.append({"head": head, "dim": dim, "params": arch, "keras": int(model.count_params()),
                       "formula": head_params(head, dim, arch)})
    return checks


def _fits(calibration: dict) -> dict:
    out = {}
    for head, points in calibration.items():
        xs = [p["n_params"] for p in points]
        out[head] = {}
        for kind, key in (("train", "train_seconds_per_frame_epoch"), ("infer", "infer_seconds_per_frame")):
            ys = [p[key] for p in points]
            model = fit_power(xs, ys)
            out[head][kind] = {"c": model.c, "k": model.k,
                               "relative_residuals": [round(r, 4) for r in residuals(model, xs, ys)]}
    return out


def test_cost_model_inputs(benchmark, bench_dataset, tmp_path):
    dataset = load_dataset(bench_dataset(EMBED_FRAMES))
    measured: dict = {}

    def measure():
        measured["loadavg_start"] = _loadavg()
        measured["embedding"] = {name: _embedding(dataset, name, tmp_path) for name in STUDY.backbones}
        measured["calibration"] = {head: [_calibrate(head, *config) for config in configs]
                                   for head, configs in CALIBRATION.items()}
        head, arch, sizes, epochs = BATCH_CHECK
        measured["batch_check_points"] = [_calibrate(head, arch, windows, epochs, windows, batch_size=batch)
                                          for batch, windows in sizes]
        measured["loadavg_end"] = _loadavg()

    benchmark.pedantic(measure, rounds=1, iterations=1)

    calibration = measured["calibration"]
    checks = _param_checks(calibration)
    mismatched = [c for c in checks if c["keras"] != c["formula"]]
    assert not mismatched, f"parameter formula differs from Keras: {mismatched}"
    grids = {head: _grid_architectures(head) for head in STUDY.heads}
    assert grids["lstm"]["n_configs"] == 81 and grids["tcn"]["n_configs"] == 648
    for entry in measured["embedding"].values():
        assert entry["seconds_per_frame"] > 0
    for points in calibration.values():
        assert all(p["train_seconds_per_frame_epoch"] > 0 and p["infer_seconds_per_frame"] > 0 for p in points)

    max_tcn = max(arch["n_params"][CALIBRATION_BACKBONE] for arch in grids["tcn"]["architectures"])
    head, arch, _, _ = BATCH_CHECK
    reference = next(p for p in calibration[head] if p["params"] == arch)
    batch_checks = {head: {"params": arch, "reference_batch": HEAD_BATCH,
                           "reference_seconds_per_frame_epoch": reference["train_seconds_per_frame_epoch"],
                           "points": measured.pop("batch_check_points")}}
    factors = {p["batch_size"]: p["train_seconds_per_frame_epoch"] / reference["train_seconds_per_frame_epoch"]
               for p in batch_checks[head]["points"]}
    info = {"cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "calibration_dim": CALIBRATION_DIM, **measured, "batch_checks": batch_checks,
            "fits": _fits(calibration), "grids": grids, "param_checks": checks,
            "calibration_note": (f"The largest TCN calibrated is {describe(CALIBRATION['tcn'][-1][0])} "
                                 f"({calibration['tcn'][-1]['n_params'] / 1e6:.0f} M parameters, "
                                 f"{CALIBRATION['tcn'][-1][2]} epochs of {CALIBRATION['tcn'][-1][1]} windows, "
                                 f"{CALIBRATION['tcn'][-1][3]} windows predicted); the grid's largest, kernel 5 "
                                 f"({max_tcn / 1e6:.0f} M), is extrapolated: measuring it here would take ~4 minutes. "
                                 "The TCN's batch-size factor is not measured (1.0).")}

    upper = project(STUDY, inputs_from_info(info, fit_power), Epochs.upper(STUDY))
    ratio = upper["total"]["tpe"] / upper["total"]["grid"]
    embed = measured["embedding"]
    fits = info["fits"]
    worst = {head: max(abs(r) for kind in ("train", "infer") for r in fits[head][kind]["relative_residuals"])
             for head in fits}
    benchmark.extra_info.update(
        target="6. Cost model: reference study, TPE budget / reference grid (hours)",
        ratio=round(ratio, 6),
        comparison="<=",
        note=(f"at {STUDY.max_epochs} epochs, no pruning: TPE {upper['total']['tpe']:,.0f} h vs grid "
              f"{upper['total']['grid']:,.0f} h on this machine; embedding "
              + ", ".join(f"{b} {e['seconds_per_frame'] * 1e3:.0f} ms/frame" for b, e in embed.items())
              + "; head fits c x params^k, worst residual "
              + ", ".join(f"{h} {r:.0%}" for h, r in worst.items())
              + "; LSTM batch factors " + ", ".join(f"{b}: {f:.2f}x" for b, f in factors.items())
              + f"; load average {measured['loadavg_start']} -> {measured['loadavg_end']}; see the cost-model section"),
        **info,
        projection_upper={"total": upper["total"], "n_trials": upper["n_trials"]},
    )
