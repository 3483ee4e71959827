"""The report's cost-model section: the reference study projected from target 6's measurements.

`cost_section(data)` turns a whole pytest-benchmark JSON dict into Markdown. The model itself (study
shape, parameter formulas, fits, projection) is the package's `mbr_bench.benchmark.cost_model`, which
`mbr-bench estimate` uses too; neither imports TensorFlow, so `report.py` runs without it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mbr_bench.benchmark.cost_model import (
    SEARCHES,
    TARGET_COST,
    TARGET_SEARCH,
    WORKERS,
    CostInputs,
    Epochs,
    StudyShape,
    batch_factors,
    cache_saving,
    calibration_points,
    describe,
    dominant,
    find_info,
    fit_linear,
    fit_power,
    fit_relative,
    fmt_hours,
    inputs_from_info,
    pair_name,
    parts,
    power_exponent,
    project,
    residuals,
    wall_clock,
)


def fmt_seconds(seconds: float) -> str:
    return f"{seconds:.3g}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _measured_lines(info: Mapping[str, Any], inputs: CostInputs, shape: StudyShape) -> list[str]:
    lines = ["### Measured inputs", ""]
    rows = []
    for name in shape.backbones:
        entry = info["embedding"][name]
        spf = float(entry["seconds_per_frame"])
        study = shape.n_videos * shape.frames_per_video * spf / 3600
        rows.append([name, f"{spf:.4f}", f"{1 / spf:.1f}", f"{entry.get('output_dim', '?')}",
                     f"{entry.get('frames', '?')} frames 640x480 mp4v through `embed_video`, fresh cache, "
                     f"batch {entry.get('batch_size', '?')}, weights {entry.get('weights', '?')}",
                     fmt_hours(study)])
    lines += _table(["Backbone", "s/frame", "fps", "dim", "Measured on",
                     f"{shape.n_videos} videos x {shape.frames_per_video:,} frames"], rows)
    lines.append("")
    rows = []
    for head, points in info["calibration"].items():
        xs_t, ys_t = calibration_points(info, head, "train_seconds_per_frame_epoch")
        xs_i, ys_i = calibration_points(info, head, "infer_seconds_per_frame")
        res_t, res_i = residuals(inputs.train[head], xs_t, ys_t), residuals(inputs.infer[head], xs_i, ys_i)
        for point, rt, ri in zip(points, res_t, res_i):
            rows.append([head, describe(point["params"]), f"{point['n_params'] / 1e6:.2f} M",
                         str(point.get("frames", "?")),
                         fmt_seconds(point["train_seconds_per_frame_epoch"]), f"{rt:+.1%}",
                         fmt_seconds(point["infer_seconds_per_frame"]), f"{ri:+.1%}"])
    dim = info.get("calibration_dim", 2048)
    lines += _table(["Head", "Calibration architecture", f"Params ({dim}-dim input)", "Frames/epoch",
                     "Train s/frame-epoch", "Fit residual", "Infer s/frame", "Fit residual"], rows)
    lines.append("")
    for head in info["calibration"]:
        t, i = inputs.train[head], inputs.infer[head]
        sizes = ", ".join(
            f"{b} mean {sum(c * n[b] for c, n in inputs.grids[head]) / inputs.grid_size(head) / 1e6:.1f} M"
            for b in shape.backbones)
        lines.append(f"- {head}: train s/frame-epoch = {t.describe()}; infer s/frame = "
                     f"{i.describe()}; grid {inputs.grid_size(head)} configs over "
                     f"{len(inputs.grids[head])} architectures, params {sizes}.")
    for head in info["calibration"]:
        factors = batch_factors(info, head)
        if factors:
            measured = ", ".join(f"batch {size}: {factor:.2f}x" for size, factor in sorted(factors.items()))
            lines.append(f"- {head} batch size, training cost per frame-epoch against the calibration batch "
                         f"({describe(info['batch_checks'][head].get('params', {}))}): {measured}; grid mean "
                         f"{inputs.batch_factor[head]:.2f}x, applied to every {head} configuration.")
    if info.get("calibration_note"):
        lines.append(f"- {info['calibration_note']}")
    return lines + [""]


def _assumption_lines(shape: StudyShape, typical: Epochs, search_info: Mapping[str, Any] | None) -> list[str]:
    lines = [
        "### Assumptions",
        "",
        f"- Study: {shape.n_videos} videos x {shape.frames_per_video:,} frames; {shape.n_train} train videos "
        f"({shape.n_folds} leave-one-video-out folds: {shape.train_frames_per_fold:,} training frames, "
        f"{shape.val_frames:,} validation frames predicted after every epoch for early stopping), "
        f"{shape.n_videos - shape.n_train} test videos; {len(shape.backbones)} backbones x {len(shape.heads)} heads "
        f"x {len(shape.behaviours)} behaviours = {shape.n_studies} studies; at most {shape.max_epochs} epochs, "
        f"patience {shape.patience}.",
        "- Embeddings: once per (video, backbone), cached and shared by every behaviour, head and trial; "
        "the measured 640x480 video stands for the reference videos.",
        f"- Searches: the reference grid (every configuration, all folds) or the default TPE budget of "
        f"{shape.tpe_trials} trials per study, whose trials cost the grid's mean trial (TPE samples the same "
        "architectures).",
        "- Per-frame costs depend on the parameter count (calibrated at sequence length 300, batch 8, TCN norm "
        "batch), times the grid-mean batch-size factor where one was measured (else 1.0); sequence length and "
        "normalisation are not modelled. Inference predicts fixed chunks of windows, whatever the batch size.",
        "- Leaderboard: per study one refit on all train videos for the folds' median best epoch (patience "
        "before the stop; the upper bound: the maximum) and one pass over the test videos, with the grid's "
        "mean architecture; run in one process.",
        "- Workers: each a machine like this one; phases (embedding, searches, leaderboard) do not overlap.",
    ]
    if search_info is None or search_info.get("search_mean_epochs_fraction") is None:
        lines.append(f"- Target 5 (search efficiency) is absent: typical epochs assumed = {shape.max_epochs} "
                     "(the upper bound) and a TPE trial costs 1.0 of a full trial (no pruning), so only the upper "
                     "bound is shown; early stopping and pruning make the real study cheaper.")
    else:
        lines.append(
            f"- Typical, from target 5's search benchmark: fold fits ran "
            f"{float(search_info['search_mean_epochs_fraction']):.0%} of the maximum epochs "
            f"({typical.epochs:.1f} of {shape.max_epochs}); a TPE trial with pruning cost "
            f"{typical.tpe_fraction:.2f} of a full grid trial. The upper bound runs every fold "
            f"{shape.max_epochs} epochs, no pruning.")
    return lines + [""]


def _projection_lines(shape: StudyShape, scenarios: Sequence[tuple[Epochs, dict[str, Any]]], cores: int) -> list[str]:
    header = [f"Part (hours on this machine, {cores} cores)"] + [
        f"{'Grid' if search == 'grid' else f'TPE {shape.tpe_trials}'}, {epochs.label}"
        for search in SEARCHES for epochs, _ in scenarios]
    columns = [(search, projection) for search in SEARCHES for _, projection in scenarios]
    rows = []
    for backbone in shape.backbones:
        rows.append([f"embedding {backbone} ({shape.n_videos} videos, once, cached)"]
                    + [fmt_hours(p["embedding"][backbone]) for _, p in columns])
    for backbone in shape.backbones:
        for head in shape.heads:
            name = pair_name(backbone, head)
            rows.append([f"search {name} ({len(shape.behaviours)} behaviours)"]
                        + [fmt_hours(p["training"][search][name]) for search, p in columns])
    rows.append([f"leaderboard refit + test ({shape.n_studies} studies)"]
                + [fmt_hours(sum(p["refit"].values())) for _, p in columns])
    rows.append(["**total**"] + [f"**{fmt_hours(p['total'][search])}**" for search, p in columns])
    rows.append([f"total core-hours ({cores}x)"] + [f"{cores * p['total'][search]:,.0f}" for search, p in columns])
    rows.append(["trials"] + [f"{p['n_trials'][search]:,}" for search, p in columns])
    return ["### Projection", ""] + _table(header, rows) + [""]


def _wall_lines(shape: StudyShape, scenarios: Sequence[tuple[Epochs, dict[str, Any]]]) -> list[str]:
    rows = []
    for search in SEARCHES:
        for epochs, projection in scenarios:
            label = "Grid" if search == "grid" else f"TPE {shape.tpe_trials}"
            rows.append([f"{label}, {epochs.label}"]
                        + [fmt_hours(wall_clock(shape, projection, search, n)) for n in WORKERS])
    lines = ["### Wall-clock with N workers (each a machine like this one)", ""]
    lines += _table(["Search"] + [f"N = {n}" for n in WORKERS], rows)
    return lines + ["", f"Embedding spreads over at most {shape.n_videos} videos per backbone (one worker per "
                        "video), trials over at most the trials there are, and no search ends before its longest "
                        "trial; the leaderboard runs in one process. With many TPE trials in flight, TPE and the "
                        "pruner decide on fewer finished trials: their effect on cost is not modelled.", ""]


def _sensitivity_line(shape: StudyShape, info: Mapping[str, Any], epochs: Epochs, projection: Mapping[str, Any]) -> str:
    """The same projection with straight lines a + b x params: how much the choice of fit moves the totals."""
    exponents = ", ".join(
        f"{head} {power_exponent(*calibration_points(info, head, 'train_seconds_per_frame_epoch')):.2f}"
        for head in info["calibration"])
    totals = []
    for name, fit in (("on relative errors", fit_relative), ("unweighted", fit_linear)):
        other = project(shape, inputs_from_info(info, fit), epochs)
        totals.append(f"{name} grid {fmt_hours(other['total']['grid'])} "
                      f"({other['total']['grid'] / projection['total']['grid']:.2f}x), TPE "
                      f"{fmt_hours(other['total']['tpe'])} ({other['total']['tpe'] / projection['total']['tpe']:.2f}x)")
    return (f"- Fit sensitivity: training cost grows as params^k over the calibration points with k = {exponents} "
            f"(1 = proportional), hence the power-law fit. Straight lines a + b x params would give, "
            f"{epochs.label}: {'; '.join(totals)}.")


def _summary_lines(shape: StudyShape, scenarios: Sequence[tuple[Epochs, dict[str, Any]]],
                   info: Mapping[str, Any]) -> list[str]:
    typical_epochs, projection = scenarios[-1]
    lines = ["### What dominates, and what the cache saves", ""]
    for search in SEARCHES:
        name, share = dominant(projection, search)
        shares = parts(projection, search)
        label = "the grid" if search == "grid" else f"the TPE budget ({shape.tpe_trials} trials per study)"
        lines.append(f"- With {label}, {typical_epochs.label}: **{name} dominates** with {share:.1%} of "
                     f"{fmt_hours(projection['total'][search])} (embedding {fmt_hours(shares['embedding'])}, "
                     f"training {fmt_hours(shares['training'])}, "
                     f"refit and test {fmt_hours(shares['refit and test'])}).")
    for epochs, p in scenarios:
        lines.append(f"- TPE / grid, whole study, {epochs.label}: {p['total']['tpe'] / p['total']['grid']:.4f} "
                     f"({fmt_hours(p['total']['tpe'])} vs {fmt_hours(p['total']['grid'])}).")
    lines.append(_sensitivity_line(shape, info, typical_epochs, projection))
    trials = ", ".join(f"{name} {fmt_hours(hours)}" for name, hours in projection["mean_trial"].items())
    lines.append(f"- One full trial ({shape.n_folds} folds, {typical_epochs.label}), grid mean per pair: {trials}; "
                 f"the longest grid trial {fmt_hours(projection['longest_trial']['grid'])}.")
    saving = cache_saving(shape, projection)
    share = saving["saved"] / (projection["total"]["tpe"] + saving["saved"])
    lines.append(
        f"- The cache: without it each of the {len(shape.behaviours)} behaviours x {len(shape.heads)} heads "
        f"searches per backbone embeds its videos again, {shape.searches_per_backbone}x: "
        f"{fmt_hours(saving['without_cache'])} of embedding instead of {fmt_hours(saving['with_cache'])}, so the "
        f"cache saves {fmt_hours(saving['saved'])} ({share:.1%} of the uncached TPE-budget study), and another "
        f"{fmt_hours(saving['per_rerun'])} on every rerun or resume.")
    return lines + [""]


def machine_cores(data: Mapping[str, Any], info: Mapping[str, Any]) -> int:
    """Usable cores of the measuring machine: the benchmark's own count, else pytest-benchmark's machine_info."""
    machine = data.get("machine_info", {})
    for value in (info.get("cores"), machine.get("cpu_affinity"), machine.get("cpu_count")):
        if isinstance(value, int) and value > 0:
            return value
    return 2


def cost_section(data: Mapping[str, Any], shape: StudyShape | None = None) -> str:
    """The report's cost-model section from a whole pytest-benchmark JSON dict; "" without target 6."""
    info = find_info(data, TARGET_COST)
    if info is None:
        return ""
    shape = shape or StudyShape()
    search_info = find_info(data, TARGET_SEARCH)
    inputs = inputs_from_info(info, fit_power)
    upper, typical = Epochs.upper(shape), Epochs.typical(shape, search_info)
    # Without target 5 the typical case is the upper bound: one set of columns, the assumption stated.
    same = (typical.epochs, typical.tpe_fraction) == (upper.epochs, upper.tpe_fraction)
    cases = [upper] if same else [upper, typical]
    scenarios = [(epochs, project(shape, inputs, epochs)) for epochs in cases]
    machine = data.get("machine_info", {})
    cores = machine_cores(data, info)
    lines = [
        "## Cost model: the reference study on this machine",
        "",
        "Projected from per-frame costs measured by target 6 on this machine "
        f"({machine.get('cpu_model', 'unknown CPU')}, "
        f"{cores} usable cores, load average {info.get('loadavg_start', machine.get('loadavg', 'unknown'))} at the "
        f"start of the measurement, {info.get('loadavg_end', 'unknown')} at its end). All figures are **hours on "
        f"this machine ({cores} cores)**; core-hours are {cores}x.",
        "",
    ]
    lines += _measured_lines(info, inputs, shape)
    lines += _assumption_lines(shape, typical, search_info)
    lines += _projection_lines(shape, scenarios, cores)
    lines += _wall_lines(shape, scenarios)
    lines += _summary_lines(shape, scenarios, info)
    return "\n".join(lines).rstrip() + "\n"
