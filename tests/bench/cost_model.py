"""Cost model: the reference study's CPU hours, projected from per-frame costs measured on this machine.

Target 6's benchmark (`test_cost_bench.py`) measures, through the product paths, embedding seconds per
frame per backbone and, per head, training seconds per frame-epoch and inference seconds per frame on a
few calibration architectures; it also counts the parameters of every architecture of the reference
grids. This module (pure Python: `report.py` imports it without TensorFlow) fits
`seconds = c * n_params^k` per head (on a CPU the cost per frame grows faster than the parameter
count), applies it to every grid configuration and projects the study:
embedding once per (video, backbone), leave-one-video-out training with a validation pass after every
epoch, the leaderboard refit and test pass, for the reference grid and for the default TPE budget, on
one machine and on N of them. Target 5's search benchmark, when present, says how many epochs a fold
fit really runs and what a pruned TPE trial costs.

`cost_section(data)` turns a whole pytest-benchmark JSON dict into the report's Markdown section.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

TARGET_COST = "6."
TARGET_SEARCH = "5."
WORKERS = (1, 4, 16)
SEARCHES = ("grid", "tpe")
TCN_BLOCKS = 6  # residual blocks per TCN layer: the head's default dilations 1, 2, 4, 8, 16, 32
# Parameters per residual block that each normalisation adds (count_params counts BatchNorm's moving
# mean and variance too): two normalised convolutions per block.
TCN_NORM_PARAMS_PER_FILTER = {"batch": 8, "layer": 4, "weight": 2, "none": 0}


@dataclass(frozen=True)
class StudyShape:
    """The reference study (thesis): what is embedded, trained and tested, and how often."""

    n_videos: int = 17
    frames_per_video: int = 6600  # 11 minutes at 10 fps
    n_train: int = 12  # leave-one-video-out over these: 12 folds; the other 5 videos are the test set
    behaviours: tuple[str, ...] = ("grooming", "mid_rearing", "wall_rearing")
    backbones: tuple[str, ...] = ("resnet50v2", "inception_resnet_v2")
    heads: tuple[str, ...] = ("lstm", "tcn")
    max_epochs: int = 50
    patience: int = 5
    tpe_trials: int = 20  # runner.DEFAULT_TRIALS, per study

    @property
    def n_folds(self) -> int:
        return self.n_train

    @property
    def train_frames_per_fold(self) -> int:
        return (self.n_train - 1) * self.frames_per_video

    @property
    def val_frames(self) -> int:
        return self.frames_per_video

    @property
    def refit_frames(self) -> int:
        return self.n_train * self.frames_per_video

    @property
    def test_frames(self) -> int:
        return (self.n_videos - self.n_train) * self.frames_per_video

    @property
    def n_studies(self) -> int:
        return len(self.behaviours) * len(self.backbones) * len(self.heads)

    @property
    def searches_per_backbone(self) -> int:
        """Searches that read one backbone's embeddings: each would embed again without the cache."""
        return len(self.behaviours) * len(self.heads)


# -- parameter counts (no Keras needed; test_cost_bench checks them against count_params) -----------


def lstm_params(input_dim: int, n_layers: int, units: int) -> int:
    """LSTM head: stacked LSTMs of units, units/2, ... (>= 1) and a Dense(1) per frame."""
    total, width = 0, input_dim
    for index in range(n_layers):
        layer_units = max(1, units // 2**index)
        total += 4 * (layer_units * (width + layer_units) + layer_units)
        width = layer_units
    return total + width + 1


def tcn_params(input_dim: int, n_layers: int, nb_filters: int, kernel_size: int, norm: str = "batch",
               n_blocks: int = TCN_BLOCKS) -> int:
    """TCN head: per layer, n_blocks residual blocks of two dilated convolutions (the first block's
    first one reads the layer's input, plus a 1x1 matching convolution when widths differ), then a Dense(1)."""
    filters, norm_params = nb_filters, TCN_NORM_PARAMS_PER_FILTER[norm] * nb_filters
    total, width = 0, input_dim
    for _ in range(n_layers):
        total += kernel_size * width * filters + filters  # first convolution of the first block
        total += (2 * n_blocks - 1) * (kernel_size * filters * filters + filters)  # the other convolutions
        total += n_blocks * norm_params
        if width != filters:
            total += width * filters + filters
        width = filters
    return total + width + 1


def head_params(head: str, input_dim: int, params: Mapping[str, Any]) -> int:
    """Parameter count of a head's architecture (the keys its grid varies; the rest at head defaults)."""
    if head == "lstm":
        return lstm_params(input_dim, int(params.get("n_layers", 1)), int(params.get("units", 64)))
    if head == "tcn":
        return tcn_params(input_dim, int(params.get("n_layers", 1)), int(params.get("nb_filters", 256)),
                          int(params.get("kernel_size", 3)), str(params.get("norm", "batch")))
    raise ValueError(f"no parameter formula for head {head!r}")


# -- the per-head linear cost model ---------------------------------------------------------------


@dataclass(frozen=True)
class Linear:
    """seconds = a + b * n_params; never below zero when extrapolated."""

    a: float
    b: float

    def __call__(self, x: float) -> float:
        return max(self.a + self.b * x, 0.0)

    def describe(self) -> str:
        return f"{self.a:.3g} + {self.b * 1e6:.3g} x params/1e6"


@dataclass(frozen=True)
class PowerLaw:
    """seconds = c * n_params^k: through every calibration point when there are two, close with three."""

    c: float
    k: float

    def __call__(self, x: float) -> float:
        return self.c * x ** self.k

    def describe(self) -> str:
        return f"{self.c * 1e6 ** self.k:.3g} x (params/1e6)^{self.k:.2f}"


def fit_linear(xs: Sequence[float], ys: Sequence[float], weights: Sequence[float] | None = None) -> Linear:
    """Weighted least squares for y = a + b x. One point (or one distinct x) gives b = 0."""
    if not xs or len(xs) != len(ys):
        raise ValueError(f"fit_linear needs as many ys as xs, at least one; got {len(xs)} and {len(ys)}")
    w = list(weights) if weights is not None else [1.0] * len(xs)
    sw = sum(w)
    sx = sum(wi * x for wi, x in zip(w, xs))
    sy = sum(wi * y for wi, y in zip(w, ys))
    sxx = sum(wi * x * x for wi, x in zip(w, xs))
    sxy = sum(wi * x * y for wi, x, y in zip(w, xs, ys))
    det = sw * sxx - sx * sx
    if abs(det) <= 1e-12 * max(sw * sxx, 1e-300):
        return Linear(sy / sw, 0.0)
    b = (sw * sxy - sx * sy) / det
    return Linear((sy - b * sx) / sw, b)


def fit_relative(xs: Sequence[float], ys: Sequence[float]) -> Linear:
    """Least squares on relative errors (weights 1/y^2), so the small configurations count as much as
    the large ones whose seconds are 100x theirs."""
    return fit_linear(xs, ys, [1.0 / max(y, 1e-30) ** 2 for y in ys])


def fit_power(xs: Sequence[float], ys: Sequence[float]) -> PowerLaw:
    """Least squares in log-log space: equal weight to relative errors at every size."""
    line = fit_linear([math.log(x) for x in xs], [math.log(max(y, 1e-30)) for y in ys])
    return PowerLaw(math.exp(line.a), line.b)


def power_exponent(xs: Sequence[float], ys: Sequence[float]) -> float:
    """k in y ~ x^k over the calibration points: 1 where cost is proportional to parameters."""
    return fit_linear([math.log(x) for x in xs], [math.log(y) for y in ys]).b


def residuals(model: Callable[[float], float], xs: Sequence[float], ys: Sequence[float]) -> list[float]:
    """Relative residuals: measured / fitted - 1."""
    return [y / model(x) - 1.0 if model(x) > 0 else math.inf for x, y in zip(xs, ys)]


# -- inputs -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CostInputs:
    """What the projection needs, read from target 6's extra_info."""

    embed_seconds_per_frame: dict[str, float]  # backbone -> s/frame through embed_video
    train: dict[str, Callable[[float], float]]  # head -> seconds per frame-epoch against n_params, at the calibration batch size
    infer: dict[str, Callable[[float], float]]  # head -> seconds per predicted frame against n_params
    grids: dict[str, list[tuple[int, dict[str, int]]]]  # head -> (grid configs, n_params per backbone)
    batch_factor: dict[str, float] = field(default_factory=dict)  # head -> grid-mean training cost multiplier

    def grid_size(self, head: str) -> int:
        return sum(count for count, _ in self.grids[head])

    def train_seconds(self, head: str, n_params: float) -> float:
        """Seconds per frame-epoch, averaged over the grid's batch sizes."""
        return self.train[head](n_params) * self.batch_factor.get(head, 1.0)


def calibration_points(info: Mapping[str, Any], head: str, key: str) -> tuple[list[float], list[float]]:
    points = info["calibration"][head]
    return [float(p["n_params"]) for p in points], [float(p[key]) for p in points]


def batch_factors(info: Mapping[str, Any], head: str) -> dict[int, float]:
    """Training cost per frame-epoch at each measured batch size / at the calibration batch size (1.0 there)."""
    check = (info.get("batch_checks") or {}).get(head)
    if not check:
        return {}
    base = float(check["reference_seconds_per_frame_epoch"])
    return {int(p["batch_size"]): float(p["train_seconds_per_frame_epoch"]) / base for p in check["points"]}


def mean_batch_factor(info: Mapping[str, Any], head: str) -> float:
    """The multiplier for a grid whose configurations spread evenly over its batch sizes (a full product);
    a batch size without a measurement counts as the calibration batch size (1.0)."""
    sizes = info["grids"][head].get("batch_sizes") or []
    factors = batch_factors(info, head)
    if not sizes or not factors:
        return 1.0
    return sum(factors.get(int(size), 1.0) for size in sizes) / len(sizes)


def inputs_from_info(info: Mapping[str, Any], fit: Callable[[Sequence[float], Sequence[float]], Any] = fit_power
                     ) -> CostInputs:
    """Refit the per-head models from the raw calibration points, so the report depends on the JSON alone."""
    train, infer = {}, {}
    for head in info["calibration"]:
        train[head] = fit(*calibration_points(info, head, "train_seconds_per_frame_epoch"))
        infer[head] = fit(*calibration_points(info, head, "infer_seconds_per_frame"))
    grids = {
        head: [(int(arch["configs"]), {b: int(n) for b, n in arch["n_params"].items()})
               for arch in grid["architectures"]]
        for head, grid in info["grids"].items()
    }
    embed = {name: float(entry["seconds_per_frame"]) for name, entry in info["embedding"].items()}
    factors = {head: mean_batch_factor(info, head) for head in info["grids"]}
    return CostInputs(embed, train, infer, grids, factors)


def find_info(data: Mapping[str, Any], prefix: str) -> dict[str, Any] | None:
    """The extra_info of the benchmark whose target starts with `prefix` ("6.", "5."), or None."""
    for bench in data.get("benchmarks", []):
        info = bench.get("extra_info") or {}
        if str(info.get("target", "")).startswith(prefix):
            return info
    return None


@dataclass(frozen=True)
class Epochs:
    """How long fold fits run: `epochs` per fold fit and what a TPE trial costs against a full one."""

    epochs: float
    tpe_fraction: float
    label: str

    @classmethod
    def upper(cls, shape: StudyShape) -> Epochs:
        return cls(float(shape.max_epochs), 1.0, f"{shape.max_epochs} epochs")

    @classmethod
    def typical(cls, shape: StudyShape, search_info: Mapping[str, Any] | None) -> Epochs:
        """From target 5's fractions; without them, the upper bound (stated in the section)."""
        if search_info is None or search_info.get("search_mean_epochs_fraction") is None:
            return cls(float(shape.max_epochs), 1.0, f"typical = {shape.max_epochs} epochs (assumed)")
        epochs = float(search_info["search_mean_epochs_fraction"]) * shape.max_epochs
        fraction = float(search_info.get("search_tpe_trial_cost_fraction") or 1.0)
        return cls(epochs, fraction, f"typical, {epochs:.1f} epochs")

    def refit_epochs(self, shape: StudyShape) -> float:
        """A refit trains for the folds' median best epoch: `patience` before an early stop."""
        if self.epochs >= shape.max_epochs:
            return float(shape.max_epochs)
        return max(1.0, self.epochs - shape.patience)


# -- the projection -----------------------------------------------------------------------------------


def trial_seconds(shape: StudyShape, train_spf: float, infer_spf: float, epochs: float) -> float:
    """One full trial: per fold, `epochs` epochs over the training frames, each followed by a validation
    pass over the held-out video (the early-stopping PR-AUC), and the fold's final prediction."""
    per_epoch = shape.train_frames_per_fold * train_spf + shape.val_frames * infer_spf
    return shape.n_folds * (epochs * per_epoch + shape.val_frames * infer_spf)


def refit_seconds(shape: StudyShape, train_spf: float, infer_spf: float, epochs: float) -> float:
    """The leaderboard's refit on every training video (no validation video) and one pass over the test videos."""
    return epochs * shape.refit_frames * train_spf + shape.test_frames * infer_spf


def pair_name(backbone: str, head: str) -> str:
    return f"{backbone}+{head}"


def project(shape: StudyShape, inputs: CostInputs, epochs: Epochs) -> dict[str, Any]:
    """Hours on the measuring machine for every part of the study, for both searches."""
    hours = 1.0 / 3600.0
    embedding = {b: shape.n_videos * shape.frames_per_video * inputs.embed_seconds_per_frame[b] * hours
                 for b in shape.backbones}
    training: dict[str, dict[str, float]] = {search: {} for search in SEARCHES}
    refit: dict[str, float] = {}
    longest = {search: 0.0 for search in SEARCHES}
    mean_trials: dict[str, float] = {}
    n_behaviours = len(shape.behaviours)
    for backbone in shape.backbones:
        for head in shape.heads:
            infer_model = inputs.infer[head]
            trials = [(count, trial_seconds(shape, inputs.train_seconds(head, n[backbone]), infer_model(n[backbone]),
                                            epochs.epochs))
                      for count, n in inputs.grids[head]]
            n_configs = inputs.grid_size(head)
            mean_trial = sum(count * seconds for count, seconds in trials) / n_configs
            name = pair_name(backbone, head)
            training["grid"][name] = n_behaviours * sum(count * seconds for count, seconds in trials) * hours
            training["tpe"][name] = n_behaviours * shape.tpe_trials * epochs.tpe_fraction * mean_trial * hours
            mean_trials[name] = mean_trial * hours
            longest["grid"] = max(longest["grid"], max(seconds for _, seconds in trials) * hours)
            longest["tpe"] = max(longest["tpe"], epochs.tpe_fraction * mean_trial * hours)
            mean_train = sum(count * inputs.train_seconds(head, n[backbone])
                             for count, n in inputs.grids[head]) / n_configs
            mean_infer = sum(count * infer_model(n[backbone]) for count, n in inputs.grids[head]) / n_configs
            refit[name] = n_behaviours * refit_seconds(shape, mean_train, mean_infer,
                                                       epochs.refit_epochs(shape)) * hours
    n_trials = {
        "grid": len(shape.behaviours) * len(shape.backbones) * sum(inputs.grid_size(h) for h in shape.heads),
        "tpe": shape.n_studies * shape.tpe_trials,
    }
    total = {search: sum(embedding.values()) + sum(training[search].values()) + sum(refit.values())
             for search in SEARCHES}
    return {"epochs": epochs.epochs, "refit_epochs": epochs.refit_epochs(shape), "tpe_fraction": epochs.tpe_fraction,
            "embedding": embedding, "training": training, "refit": refit, "n_trials": n_trials,
            "mean_trial": mean_trials, "longest_trial": longest, "total": total}


def embedding_wall(shape: StudyShape, projection: Mapping[str, Any], workers: int) -> float:
    """Each video is claimed by one worker: per backbone, ceil(videos / workers) rounds of one video."""
    rounds = math.ceil(shape.n_videos / min(workers, shape.n_videos))
    return sum(rounds * hours / shape.n_videos for hours in projection["embedding"].values())


def training_wall(projection: Mapping[str, Any], search: str, workers: int) -> float:
    """Trials spread over the workers (a worker moves to the next study once a budget is claimed), at
    most one worker per trial, and never faster than the longest single trial."""
    total = sum(projection["training"][search].values())
    parallel = min(workers, projection["n_trials"][search])
    return max(total / parallel, projection["longest_trial"][search])


def wall_clock(shape: StudyShape, projection: Mapping[str, Any], search: str, workers: int) -> float:
    """Embedding, then the searches, then the leaderboard (one process: refits run one after another)."""
    return (embedding_wall(shape, projection, workers) + training_wall(projection, search, workers)
            + sum(projection["refit"].values()))


def cache_saving(shape: StudyShape, projection: Mapping[str, Any]) -> dict[str, float]:
    """Without the cache every behaviour x head search embeds its backbone's videos again."""
    once = sum(projection["embedding"].values())
    without = shape.searches_per_backbone * once
    return {"with_cache": once, "without_cache": without, "saved": without - once, "per_rerun": once}


def parts(projection: Mapping[str, Any], search: str) -> dict[str, float]:
    return {"embedding": sum(projection["embedding"].values()),
            "training": sum(projection["training"][search].values()),
            "refit and test": sum(projection["refit"].values())}


def dominant(projection: Mapping[str, Any], search: str) -> tuple[str, float]:
    """The largest part of a search's study and its share of the total."""
    shares = parts(projection, search)
    name = max(shares, key=shares.get)
    total = sum(shares.values())
    return name, shares[name] / total if total > 0 else 0.0


# -- the Markdown section ------------------------------------------------------------------------------


def fmt_hours(hours: float) -> str:
    if hours >= 48:
        return f"{hours:,.0f} h ({hours / 24:,.0f} d)"
    if hours >= 10:
        return f"{hours:.1f} h"
    if hours >= 0.1:
        return f"{hours:.2f} h"
    return f"{hours * 60:.1f} min"


def describe(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in params.items())


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
