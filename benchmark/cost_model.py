"""Cost model: what a study costs, projected from per-frame costs measured on a machine.

Per head, training seconds per frame-epoch and inference seconds per frame are measured on a few
calibration architectures and fitted as `seconds = c * n_params^k` (on a CPU the cost per frame grows
faster than the parameter count); parameter counts come from formulas, so a grid of hundreds of
architectures is costed without building one. A study is: embedding once per (video, backbone),
leave-one-video-out training with a validation pass after every epoch, the leaderboard's refit and
test pass, for a grid or a TPE budget, on one machine or N.

Two callers: `mbr-bench estimate` (benchmark/estimate.py: a short measurement on the user's machine,
for the user's dataset and plan) and the benchmark suite's report (tests/bench/cost_report.py: target
6's measurements, the reference study; target 5, when present, says how many epochs a fold fit really
runs and what a pruned TPE trial costs). Pure Python: the report imports it without TensorFlow.
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


def frame_mlp_params(input_dim: int, n_layers: int, units: int) -> int:
    """Frame MLP head: n_layers Dense(units) applied to every frame, then a Dense(1)."""
    total, width = 0, input_dim
    for _ in range(n_layers):
        total += width * units + units
        width = units
    return total + width + 1


# The keys of a head's parameters that change its parameter count (the rest: training settings).
ARCHITECTURE_KEYS = {"lstm": ("n_layers", "units"), "tcn": ("n_layers", "nb_filters", "kernel_size", "norm",
                                                            "dilations"),
                     "frame_mlp": ("n_layers", "units")}


def head_params(head: str, input_dim: int, params: Mapping[str, Any]) -> int:
    """Parameter count of a head's architecture (the keys its grid varies; the rest at head defaults)."""
    if head == "frame_mlp":
        return frame_mlp_params(input_dim, int(params.get("n_layers", 1)), int(params.get("units", 128)))
    if head == "lstm":
        return lstm_params(input_dim, int(params.get("n_layers", 1)), int(params.get("units", 64)))
    if head == "tcn":
        dilations = params.get("dilations")
        return tcn_params(input_dim, int(params.get("n_layers", 1)), int(params.get("nb_filters", 256)),
                          int(params.get("kernel_size", 3)), str(params.get("norm", "batch")),
                          n_blocks=len(dilations) if dilations else TCN_BLOCKS)
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


def fold_fit_seconds(train_frames: float, val_frames: float, train_spf: float, infer_spf: float,
                     epochs: float) -> float:
    """One fold fit: `epochs` epochs over the training frames, each followed by a validation pass over
    the held-out video (its PR-AUC curve), and the fold's final prediction."""
    return epochs * (train_frames * train_spf + val_frames * infer_spf) + val_frames * infer_spf


def trial_seconds(shape: StudyShape, train_spf: float, infer_spf: float, epochs: float) -> float:
    """One full trial: a fold fit per training video held out, every video of the same length."""
    return shape.n_folds * fold_fit_seconds(shape.train_frames_per_fold, shape.val_frames, train_spf, infer_spf,
                                            epochs)


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


# -- formatting -------------------------------------------------------------------------------------

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
