"""What a run will cost on this machine, before anything is embedded or trained (`mbr-bench estimate`,
and the first lines of `mbr-bench run`).

The plan fixes the work: which videos each backbone embeds (those not in the cache yet), how many
trials each study runs, each trial's fold fits (epochs x training frames, a validation pass per
epoch), and the leaderboard's refits and test passes. What a frame costs is measured here, briefly,
and kept per machine in a calibration file (`CalibrationStore`; a changed CPU, core count or
version measures again):

* a backbone embeds a few batches of blank crops, and the dataset's first video decodes a few frames
  (pose features: one whole pose file, which takes well under a second);
* a head fits its search space's smallest and largest architecture (the largest at most
  PROBE_PARAM_CAP parameters, both at the smallest batch) for a few epochs on random windows of the
  pair's width, as many frames as a fold has within a few batches; `cost_model` fits seconds per frame
  against the parameter count (one probe: the exponent the benchmark suite measured) and costs every
  architecture of the space from its parameter formula, so a grid of hundreds is costed without
  building one.

The figure is an upper bound of what the plan can take: every fold trains `max_epochs` (the
``mean_curve`` protocol does; ``inner`` may stop sooner), no trial is pruned, each study's search
stops at `--timeout` when one is given.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from optuna.distributions import CategoricalDistribution, IntDistribution

from .. import __version__
from ..core.errors import ConfigError
from ..core.files import write_atomic
from ..core.process import usable_cores
from ..search_spaces.loader import SearchSpace
from .backbones import BACKBONES, CROP_KINDS, build_backbone, part_names
from .backbones.clips import ClipNetworkBackbone
from .cost_model import PowerLaw, fit_power, fmt_hours, fold_fit_seconds, head_params
from .data.crops import iter_crops
from .data.manifest import Dataset, VideoEntry
from .data.video import probe_video
from .features.cache import EmbeddingCache
from .features.embed import cache_key, video_fps
from .features.sequences import sample_weights
from .heads import HEADS
from .heads.finetune import PREDICT_CLIPS
from .tf_runtime import gpus

CALIBRATION_ENV = "MBR_BENCH_CALIBRATION"  # where the calibration file lives (default: the user's cache)
EMBED_PROBE_BATCH, EMBED_PROBE_BATCHES = 32, 2  # timed after one warm-up batch (it builds and traces)
DECODE_PROBE_FRAMES = 64
HEAD_PROBE_EPOCHS = 3  # the first epoch holds tracing: the others give the steady cost
# Batches per probe epoch: a small model's step has a fixed cost that a one-batch epoch would count
# as a cost per frame; a large model's steps are all arithmetic, and one batch measures it.
HEAD_PROBE_BATCHES, LARGE_MODEL_PARAMS = 4, 1_000_000
PROBE_PARAM_CAP = 5_000_000  # larger ones are extrapolated: measuring a 20 M-parameter TCN takes minutes on 2 cores
PROBE_MIN_RATIO = 2.0  # two probes at least this far apart in parameters, else one (SINGLE_POINT_EXPONENT)
EXPONENT_RANGE = (0.0, 2.0)  # cost per frame against parameters: flat (small models) to quadratic
# Training cost per frame ~ params^k over the reference grids, as target 6 of the benchmark suite measured
# it on 2 CPU cores (docs/performance.md): what one probe extrapolates with (a TCN beyond the cap).
SINGLE_POINT_EXPONENT = {"lstm": 1.12, "tcn": 1.21}
# Per fold fit, what a trial does besides training: MLflow params and metrics, PR curve and confusion
# matrix figures, the pruner. Measured on the demo (2 cores): ~0.5 s per fold.
TRACKING_SECONDS_PER_FOLD = 0.5
ONE_DAY = 86_400.0
FINETUNE_PROBE_STEPS = 1  # training steps per probe epoch of a clip network (~20 s for R(2+1)D-18 on 2 cores)
MAX_CONFIGS = 5_000  # configurations costed one by one; a wider space is sampled


# -- the calibration file ---------------------------------------------------------------------------


def default_calibration_path() -> Path:
    if os.environ.get(CALIBRATION_ENV):
        return Path(os.environ[CALIBRATION_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mbr-bench" / "calibration.json"


def machine() -> dict[str, Any]:
    """What the measurements depend on: a calibration taken under another of these is measured again."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        tensorflow = version("tensorflow")
    except PackageNotFoundError:
        tensorflow = None
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text(errors="replace").splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return {"cpu": cpu, "cores": usable_cores(), "mbr_bench": __version__, "tensorflow": tensorflow}


class CalibrationStore:
    """Per-frame costs measured on this machine, by key; written back atomically after new measurements."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_calibration_path()
        self.machine = machine()
        self.entries: dict[str, dict[str, Any]] = {}
        self.measured: list[str] = []  # keys measured by this process (the rest came from the file)
        if self.path.is_file():
            try:
                stored = json.loads(self.path.read_text())
            except (OSError, ValueError):
                stored = {}  # unreadable: measured again and rewritten
            if isinstance(stored, dict) and stored.get("machine") == self.machine:
                self.entries = dict(stored.get("entries") or {})

    def get(self, key: str, measure: Any, what: str = "", say: Any = None) -> dict[str, Any]:
        """The stored measurement, or a new one (saved at once: an interrupted estimate keeps what it measured)."""
        if key not in self.entries:
            if say:
                say(f"measuring {what} on this machine (once; kept in {self.path})")
            self.entries[key] = measure()
            self.measured.append(key)
            self.save()
        return self.entries[key]

    def save(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, json.dumps({"machine": self.machine, "entries": self.entries}, indent=1))
        except OSError as error:
            raise ConfigError(f"{self.path}: cannot write the cost calibration ({error.strerror}); set "
                              f"{CALIBRATION_ENV} to a writable file") from None


# -- measurements -----------------------------------------------------------------------------------


def _decode_seconds_per_frame(dataset: Dataset, entry: VideoEntry, mode: str, size: int) -> float:
    """Decoding and cropping: a few frames of the video, as a crop pass reads them."""
    if entry.video is None:
        return 0.0
    settings = replace(dataset.crop, mode=mode)
    crops = iter_crops(entry.video, settings, size)
    started = time.perf_counter()
    frames = sum(1 for _ in itertools.islice(crops, DECODE_PROBE_FRAMES))
    seconds = time.perf_counter() - started
    crops.close()
    return seconds / max(frames, 1)


def measure_pose(part: str, dataset: Dataset, entry: VideoEntry) -> dict[str, Any]:
    """Seconds per frame and width of pose features: one whole pose file (well under a second)."""
    backbone = build_backbone(part, dataset)
    pose = dataset.read_pose(entry)
    started = time.perf_counter()
    features = backbone.embed_pose(pose, video_fps(entry), entry.geometry)
    return {"seconds_per_frame": (time.perf_counter() - started) / max(len(features), 1), "dim": int(features.shape[1])}


def measure_model(part: str, dataset: Dataset) -> dict[str, Any]:
    """An image or flow backbone's forward pass per frame, on blank crops (the video's decoding apart)."""
    backbone = build_backbone(part, dataset, weights="none")  # the same arithmetic, without a download
    size = backbone.input_size
    # A clip network runs a whole clip per frame (seconds at 224 px on a CPU): one small batch tells.
    batch, batches = (backbone.clips_per_batch, 1) if isinstance(backbone, ClipNetworkBackbone) else \
        (EMBED_PROBE_BATCH, EMBED_PROBE_BATCHES)
    images = np.zeros((batch, size, size, 3), np.uint8)
    backbone.start_video(None)
    backbone.embed_images(images)  # builds and traces
    started = time.perf_counter()
    frames = 0
    for _ in range(batches):
        frames += len(images)
        backbone.embed_images(images)
    return {"seconds_per_frame": (time.perf_counter() - started) / frames,
            "dim": int(backbone.output_dim), "input_size": int(size)}


class _EmbeddingCosts:
    """Seconds per frame and width per backbone part on one dataset: models from the store, the dataset's
    decoding measured afresh (it depends on the videos, and a few frames take a fraction of a second)."""

    def __init__(self, dataset: Dataset, entry: VideoEntry, store: CalibrationStore, say: Any = None) -> None:
        self.dataset, self.entry, self.store, self.say = dataset, entry, store, say
        self._decode: dict[tuple[str, int], float] = {}

    def decode(self, mode: str, size: int) -> float:
        if (mode, size) not in self._decode:
            self._decode[mode, size] = _decode_seconds_per_frame(self.dataset, self.entry, mode, size)
        return self._decode[mode, size]

    def __call__(self, part: str) -> dict[str, Any]:
        kind = BACKBONES.kind_of(part)
        if kind == "pose":
            return self.store.get(_probe_key("pose", part, str(self.dataset.path)),
                                  lambda: measure_pose(part, self.dataset, self.entry), f"{part} features", self.say)
        if kind == "track":  # the tracker's decode pass; the features from its path cost next to nothing
            return {"seconds_per_frame": self.decode("tracker", 64),
                    "dim": int(build_backbone(part, self.dataset).output_dim)}
        model = self.store.get(_probe_key("model", part), lambda: measure_model(part, self.dataset), part, self.say)
        return {"seconds_per_frame": model["seconds_per_frame"] + self.crop_decode(int(model["input_size"])),
                "dim": model["dim"]}

    def crop_decode(self, size: int) -> float:
        """Decoding and cropping the dataset's crops at `size` px (pose-centred crops cost what full ones do)."""
        return self.decode("tracker" if self.dataset.crop.mode == "tracker" else "full", size)


def measure_head(head_name: str, params: Mapping[str, Any], dim: int, fold_frames: tuple[int, int] = (0, 0)
                 ) -> dict[str, Any]:
    """One short fit of an architecture on random windows of width `dim`, as a fold fit runs it: as many
    training and validation frames as a fold has, within HEAD_PROBE_BATCHES batches (a step's fixed cost
    would otherwise count as a cost per frame)."""
    probe = HEADS.build(head_name, **{**params, "max_epochs": HEAD_PROBE_EPOCHS, "seed": 0})
    rng = np.random.default_rng(0)
    seq = probe.sequence_length
    batches = 1 if formula_params(head_name, dim, params) >= LARGE_MODEL_PARAMS else HEAD_PROBE_BATCHES
    windows = min(max(fold_frames[0] // seq, probe.batch_size), batches * probe.batch_size)
    train_frames, val_frames = windows * seq, min(max(fold_frames[1], seq), batches * seq)
    X = [rng.normal(size=(train_frames, dim)).astype(np.float32)]
    y = [(rng.random(train_frames) < 0.2).astype(np.int8)]
    val = (rng.normal(size=(val_frames, dim)).astype(np.float32), (rng.random(val_frames) < 0.2).astype(np.int8))
    started = time.perf_counter()
    probe.fit(X, y, sample_weights(y), val=val, stop_early=False)
    total = time.perf_counter() - started
    began = time.perf_counter()
    probe.predict_proba(val[0])
    infer = (time.perf_counter() - began) / val_frames
    epochs = [float(epoch["seconds"]) for epoch in probe.history_]
    steady = min(epochs[1:]) if len(epochs) > 1 else epochs[0]
    return {"n_params": int(probe.n_params_),
            "train_seconds_per_frame_epoch": max(steady - infer * val_frames, 0.1 * steady) / train_frames,
            "infer_seconds_per_frame": infer,
            "fit_overhead_seconds": max(total - steady * len(epochs), 0.0)}


def measure_finetune(network: str, input_size: int, clip_length: int, batch_size: int) -> dict[str, Any]:
    """A finetune head's training and scoring cost per clip: FINETUNE_PROBE_STEPS steps of `batch_size` clips
    for 2 epochs (the first holds building and tracing), then one scoring pass (random weights: the same
    arithmetic as a checkpoint's)."""
    width = input_size * input_size * 3
    clips = FINETUNE_PROBE_STEPS * batch_size
    probe = HEADS.build("finetune", network=network, network_weights="none", input_size=input_size,
                        clip_length=clip_length, batch_size=batch_size, clips_per_epoch=clips, max_epochs=2, seed=0)
    frames = np.zeros((4, width), np.uint8)  # clips reach past its ends (edge frames repeat): any length works
    labels = np.zeros(len(frames), np.int8)
    labels[0] = 1
    started = time.perf_counter()
    probe.fit([frames], [labels], [np.ones(len(frames))], stop_early=False)
    total = time.perf_counter() - started
    scored = np.zeros((PREDICT_CLIPS, width), np.uint8)
    probe.predict_proba(scored)  # traces the scoring pass
    began = time.perf_counter()
    probe.predict_proba(scored)
    infer = (time.perf_counter() - began) / len(scored)
    steady = float(probe.history_[-1]["seconds"])
    return {"n_params": int(probe.n_params_), "train_seconds_per_clip": steady / clips,
            "infer_seconds_per_frame": infer, "fit_overhead_seconds": max(total - 2 * steady, 0.0)}


def _finetune_pair(plan: Plan, backbone: str, head_name: str, store: CalibrationStore, configs: list[dict[str, Any]],
                   folds: list[tuple[int, int]], test_frames: int, say: Any) -> PairCost:
    """A finetune pair's search and leaderboard: per fold, each epoch trains clips_per_epoch clips and scores
    every frame of the validation video by its own clip."""
    size = int(build_backbone(backbone, plan.dataset, weights="none").input_size)
    trial_seconds, leaderboard_seconds, params = [], [], []
    for config in configs:
        head = HEADS.build(head_name, **config)
        point = store.get(_probe_key("finetune", backbone, size, head.clip_length, head.batch_size),
                          lambda: measure_finetune(backbone, size, head.clip_length, head.batch_size),
                          f"fine-tuning {backbone} ({size} px, {head.clip_length}-frame clips)", say)
        train, infer = float(point["train_seconds_per_clip"]), float(point["infer_seconds_per_frame"])
        overhead = float(point["fit_overhead_seconds"]) + TRACKING_SECONDS_PER_FOLD
        epoch = head.clips_per_epoch * train
        trial_seconds.append(sum(head.max_epochs * (epoch + val * infer) + overhead for _, val in folds))
        leaderboard_seconds.append(plan.refit_seeds * (head.max_epochs * epoch + overhead + test_frames * infer))
        params.append(float(point["n_params"]))
    return _pair_cost(plan, backbone, head_name, len(configs), trial_seconds, leaderboard_seconds, params)


def _pair_cost(plan: Plan, backbone: str, head_name: str, n_configs: int, trial_seconds: list[float],
               leaderboard_seconds: list[float], params: list[float]) -> PairCost:
    """Trials x trial cost (the whole grid, or --n-trials at the configurations' mean), capped at --timeout."""
    trials = n_configs if plan.n_trials is None else plan.n_trials
    search = sum(trial_seconds) if plan.n_trials is None else trials * float(np.mean(trial_seconds))
    capped = plan.timeout is not None and search > plan.timeout
    search = min(search, plan.timeout) if plan.timeout is not None else search
    n_behaviours = len(plan.behaviours)
    return PairCost(backbone, head_name, trials, float(np.mean(params)), n_behaviours * search,
                    n_behaviours * float(np.mean(leaderboard_seconds)), capped)


# -- the plan's shape -------------------------------------------------------------------------------


def video_frames(dataset: Dataset) -> dict[str, int]:
    """Frames per video, from the video header (or the pose file of a pose-only entry)."""
    frames = {}
    for entry in dataset.videos:
        if entry.video is not None and entry.video.exists():
            frames[entry.id] = probe_video(entry.video).n_frames
        else:
            frames[entry.id] = dataset.read_pose(entry).n_frames
    return frames


def space_configs(space: SearchSpace, grid: bool = True) -> list[dict[str, Any]]:
    """The configurations a search runs (fixed values merged): the space's grid for a grid search; for
    TPE, every choice and both ends of every integer range, a float range at its middle (learning rate
    and dropout cost the same wherever they are)."""
    if grid:
        values = space.grid()
    else:
        values = {}
        for name, dist in space.distributions.items():
            if isinstance(dist, CategoricalDistribution):
                values[name] = list(dist.choices)
            elif isinstance(dist, IntDistribution):
                values[name] = sorted({dist.low, dist.high})
            else:
                values[name] = [math.sqrt(dist.low * dist.high) if dist.log else (dist.low + dist.high) / 2]
    combos = itertools.product(*values.values())
    if math.prod(len(v) for v in values.values()) > MAX_CONFIGS:  # a wide space: a seeded sample of it
        rng = np.random.default_rng(0)
        combos = (tuple(v[rng.integers(len(v))] for v in values.values()) for _ in range(MAX_CONFIGS))
    return [space.with_fixed(dict(zip(values, combo))) for combo in combos]


def formula_params(head_name: str, dim: int, config: Mapping[str, Any]) -> float:
    """The formula's count, or 0 for a head without one."""
    try:
        return head_params(head_name, dim, config)
    except ValueError:
        return 0


def _param_count(head_name: str, dim: int, config: Mapping[str, Any], memo: dict) -> int:
    """The cost model's formula where it has one; else the Keras model's own count (built once)."""
    counted = formula_params(head_name, dim, config)
    if counted:
        return int(counted)
    key = (head_name, dim, json.dumps(dict(config), sort_keys=True, default=str))
    if key not in memo:
        memo[key] = int(HEADS.build(head_name, **config).build_model(dim).count_params())
    return memo[key]


@dataclass
class HeadCost:
    """A head's measured costs against its parameter count, at one input width."""

    train: Any  # n_params -> seconds per frame-epoch
    infer: Any  # n_params -> seconds per predicted frame
    overhead: float  # seconds per fit: building, compiling, tracing


def head_cost(points: Sequence[Mapping[str, Any]], head_name: str = "") -> HeadCost:
    """Power laws through the measured points; with one point, the exponent the benchmark suite measured
    for the head (SINGLE_POINT_EXPONENT), else 1. The exponent stays within EXPONENT_RANGE: two noisy
    points must not extrapolate to absurd figures."""
    xs = [float(p["n_params"]) for p in points]

    def law(key: str) -> PowerLaw:
        ys = [float(p[key]) for p in points]
        k = min(max(fit_power(xs, ys).k, EXPONENT_RANGE[0]), EXPONENT_RANGE[1]) if len(set(xs)) > 1 else \
            SINGLE_POINT_EXPONENT.get(head_name, 1.0)
        return PowerLaw(float(np.exp(np.mean(np.log(ys)) - k * np.mean(np.log(xs)))), k)

    return HeadCost(law("train_seconds_per_frame_epoch"), law("infer_seconds_per_frame"),
                    max(float(p["fit_overhead_seconds"]) for p in points))


@dataclass
class PairCost:
    backbone: str
    head: str
    trials: int  # per behaviour
    n_params: float  # mean over the space's configurations
    search: float  # seconds, every behaviour
    leaderboard: float
    capped: bool = False  # the search stops at --timeout


@dataclass
class Estimate:
    dataset: Dataset
    behaviours: list[str]
    frames: dict[str, int]
    n_folds: int
    embedding: dict[str, float]  # seconds per backbone part, videos not cached yet
    cached: dict[str, int]  # backbone part -> videos already in the cache
    pairs: list[PairCost]
    machine: dict[str, Any]
    calibration: Path
    measured_seconds: float = 0.0  # spent calibrating now (0: all from the file)
    refit_seeds: int = 3

    @property
    def search(self) -> float:
        return sum(p.search for p in self.pairs)

    @property
    def leaderboard(self) -> float:
        return sum(p.leaderboard for p in self.pairs)

    @property
    def total(self) -> float:
        return sum(self.embedding.values()) + self.search + self.leaderboard


@dataclass
class Plan:
    """What `estimate_plan` needs of a run (the runner's RunPlan holds it)."""

    dataset: Dataset
    behaviours: list[str]
    backbones: list[str]
    heads: list[str]
    spaces: dict[str, SearchSpace]
    n_trials: int | None  # None: the whole grid
    timeout: float | None = None
    refit_seeds: int = 3
    weights: str | None = None
    sampler: str = "tpe"


def _probe_configs(head_name: str, configs: list[dict[str, Any]], dim: int, memo: dict) -> list[dict[str, Any]]:
    """The smallest and the largest architecture under the cap (one when they are close in size), both at
    the space's smallest batch and sequence length: the points differ in parameters only, and an LSTM's
    cost per frame is highest at the smallest batch (an upper bound for the others)."""
    for key in ("batch_size", "sequence_length"):
        values = [c[key] for c in configs if key in c]
        if values:
            configs = [c for c in configs if c.get(key, min(values)) == min(values)]
    ranked = sorted(configs, key=lambda c: _param_count(head_name, dim, c, memo))
    small = ranked[0]
    under = [c for c in ranked if _param_count(head_name, dim, c, memo) <= PROBE_PARAM_CAP] or [small]
    large = under[-1]
    ratio = _param_count(head_name, dim, large, memo) / max(_param_count(head_name, dim, small, memo), 1)
    return [small, large] if ratio >= PROBE_MIN_RATIO else [small]


def _probe_key(kind: str, *parts: Any) -> str:
    return kind + "|" + json.dumps(parts, sort_keys=True, default=str)


def estimate_plan(plan: Plan, cache: EmbeddingCache | None, store: CalibrationStore,
                  frames: Mapping[str, int] | None = None, say: Any = None) -> Estimate:
    """Seconds on this machine for each part of the plan; measures what the store lacks (and saves it)."""
    dataset = plan.dataset
    frames = dict(frames) if frames is not None else video_frames(dataset)
    train = [e for e in dataset.split("train") if e.labels is not None]
    test = [e for e in dataset.split("test") if e.labels is not None]
    probe_entry = (train or list(dataset.videos))[0]
    started = time.perf_counter()
    all_parts = list(dict.fromkeys(part for name in plan.backbones for part in part_names(name)))
    # Embeddings are computed for the heads that read them (finetune reads a clip network's crops instead).
    parts = all_parts if any(not HEADS.get(h).reads_crops for h in plan.heads) else []
    costs = _EmbeddingCosts(dataset, probe_entry, store, say)
    embed_cost = {part: costs(part) for part in parts}
    embedding, cached = {}, {}
    for part in parts:
        todo = list(dataset.videos)
        if cache is not None:
            backbone = build_backbone(part, dataset, weights=plan.weights if BACKBONES.kind_of(part) in CROP_KINDS
                                      else None)
            done = [e for e in todo if cache.record(cache_key(dataset, e, backbone, dataset.crop)) is not None]
            cached[part] = len(done)
            todo = [e for e in todo if e not in done]
        embedding[part] = sum(frames[e.id] for e in todo) * float(embed_cost[part]["seconds_per_frame"])
    if any(HEADS.get(h).reads_crops for h in plan.heads):  # a clip network's crops: decoding only
        for part in (p for p in all_parts if BACKBONES.kind_of(p) == "clip"):
            crops = build_backbone(part, dataset, weights="none", crops=True)
            todo = [e for e in dataset.videos
                    if cache is None or cache.record(cache_key(dataset, e, crops, dataset.crop)) is None]
            cached[crops.name] = len(dataset.videos) - len(todo)
            embedding[crops.name] = sum(frames[e.id] for e in todo) * costs.crop_decode(crops.input_size)

    n_folds = len(train)
    fold_frames = [(sum(frames[e.id] for e in train) - frames[v.id], frames[v.id]) for v in train]
    refit_frames, test_frames = sum(frames[e.id] for e in train), sum(frames[e.id] for e in test)
    typical_fold = (int(np.mean([f for f, _ in fold_frames])), int(np.mean([v for _, v in fold_frames]))) \
        if fold_frames else (0, 0)
    memo: dict = {}
    pairs = []
    for backbone in plan.backbones:
        for head_name in plan.heads:
            space = plan.spaces[head_name]
            configs = space_configs(space, grid=plan.sampler == "grid")
            if HEADS.get(head_name).reads_crops:
                # An epoch is clips_per_epoch clips however long the videos: the refit's cost needs no frame count.
                pairs.append(_finetune_pair(plan, backbone, head_name, store, configs, fold_frames, test_frames, say))
                continue
            dim = sum(int(embed_cost[part]["dim"]) for part in part_names(backbone))
            points = [store.get(_probe_key("head", head_name, dim, config),
                                lambda config=config: measure_head(head_name, config, dim, typical_fold),
                                f"{head_name} at {_count(_param_count(head_name, dim, config, memo))} parameters "
                                f"on {dim} inputs", say)
                      for config in _probe_configs(head_name, configs, dim, memo)]
            cost = head_cost(points, head_name)
            trial_seconds, leaderboard_seconds, params = [], [], []
            for config in configs:
                head = HEADS.build(head_name, **config)
                n = _param_count(head_name, dim, config, memo)
                t, v = cost.train(n), cost.infer(n)
                folds = sum(fold_fit_seconds(tf, vf, t, v, head.max_epochs) for tf, vf in fold_frames)
                trial_seconds.append(folds + n_folds * (cost.overhead + TRACKING_SECONDS_PER_FOLD))
                refit = head.max_epochs * refit_frames * t + cost.overhead + test_frames * v
                leaderboard_seconds.append(plan.refit_seeds * refit)
                params.append(n)
            pairs.append(_pair_cost(plan, backbone, head_name, len(configs), trial_seconds, leaderboard_seconds,
                                    params))
    measured = time.perf_counter() - started if store.measured else 0.0
    return Estimate(dataset, list(plan.behaviours), frames, n_folds, embedding, cached, pairs, store.machine,
                    store.path, measured, plan.refit_seeds)


# -- what the user reads ----------------------------------------------------------------------------


def fmt_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return fmt_hours(seconds / 3600.0)


def summary_line(estimate: Estimate) -> str:
    """One line for `run`: the total and its parts."""
    return (f"estimated {fmt_duration(estimate.total)} on this machine: embedding "
            f"{fmt_duration(sum(estimate.embedding.values()))}, search {fmt_duration(estimate.search)}, "
            f"leaderboard {fmt_duration(estimate.leaderboard)} (an upper bound; `mbr-bench estimate` for the details)")


def check_budget(estimate: Estimate, yes: bool, timeout: float | None) -> None:
    """A run beyond a day starts only when asked for: --yes, or a --timeout that bounds each study."""
    if estimate.total > ONE_DAY and not yes and timeout is None:
        raise ConfigError(
            f"{estimate.dataset.path}: this run is estimated at {fmt_duration(estimate.total)} on this machine "
            f"(more than a day); pass --yes to start it, --timeout SECONDS to bound each study, or a smaller "
            "--n-trials / fewer --backbones and --heads (see `mbr-bench estimate`)")


def check_finetune_device(estimate: Estimate, allow_cpu: bool) -> None:
    """Fine-tuning a clip network on a CPU starts only when asked for (--allow-cpu-finetune), knowing its cost."""
    pairs = [p for p in estimate.pairs if HEADS.get(p.head).reads_crops]
    if not pairs or allow_cpu or gpus():
        return
    seconds = sum(p.search + p.leaderboard for p in pairs)
    names = ", ".join(f"{p.backbone}+{p.head}" for p in pairs)
    raise ConfigError(
        f"{estimate.dataset.path}: {names} trains a clip network end to end, and this machine has no GPU: estimated "
        f"{fmt_duration(seconds)} here (search and leaderboard); pass --allow-cpu-finetune to run it anyway, run it "
        "on a GPU (docker/Dockerfile.gpu), or embed with the frozen network instead (e.g. --heads lstm)")


def report_lines(estimate: Estimate) -> list[str]:
    """The estimate as `mbr-bench estimate` prints it: per backbone, per pair, the total."""
    from .table import format_table

    frames = estimate.frames
    test = [e for e in estimate.dataset.split("test") if e.labels is not None]
    lines = [f"{estimate.dataset.name}: {len(frames)} videos, {sum(frames.values()):,} frames; {estimate.n_folds} "
             f"train videos ({estimate.n_folds} folds), {len(test)} test; behaviours {', '.join(estimate.behaviours)}",
             ""]
    n_videos = len(estimate.dataset.videos)
    lines += format_table(["backbone", "videos cached", "embedding"], [
        [part, f"{estimate.cached.get(part, 0)}/{n_videos}", fmt_duration(seconds)]
        for part, seconds in estimate.embedding.items()]).splitlines()
    lines.append("")
    lines += format_table(["pair", "trials", "mean params", "search", "leaderboard (refit + test)"], [
        [f"{p.backbone}+{p.head}", p.trials, _count(p.n_params),
         fmt_duration(p.search) + (" (--timeout)" if p.capped else ""), fmt_duration(p.leaderboard)]
        for p in estimate.pairs]).splitlines()
    cores = estimate.machine.get("cores") or 1
    core_hours = f" ({cores} cores: {cores * estimate.total / 3600:,.0f} core-hours)" if estimate.total >= 3600 else ""
    lines += ["", f"total {fmt_duration(estimate.total)} on this machine{core_hours}: embedding "
              f"{fmt_duration(sum(estimate.embedding.values()))}, search {fmt_duration(estimate.search)}, leaderboard "
              f"{fmt_duration(estimate.leaderboard)}; the most the plan asks: every fold trains max_epochs, no "
              "trial is pruned",
              f"({len(estimate.behaviours)} behaviour(s); trials and search time per pair cover them all; the "
              f"leaderboard refits each pair's best trial with {estimate.refit_seeds} seed(s) and tests it)"]
    return lines


def describe_machine(estimate: Estimate) -> str:
    how = (f"measured now in {estimate.measured_seconds:.0f} s" if estimate.measured_seconds
           else "measured earlier")
    return (f"this machine: {estimate.machine['cpu']}, {estimate.machine['cores']} cores; per-frame costs "
            f"{how}, kept in {estimate.calibration}")


def _count(n: float) -> str:
    return f"{n / 1e6:.1f} M" if n >= 1e6 else f"{n / 1e3:.1f} k" if n >= 1e3 else f"{n:.0f}"
