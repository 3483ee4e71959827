"""`mbr-bench run`: embed once, then one tracked Optuna study per behaviour x backbone x head.

With no --dataset it builds the synthetic open field in the work directory (once) and runs a small
budget over default pairs, so a new user sees the whole product in minutes on a laptop.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from ..core.errors import ConfigError, DataError, TimeBudgetReached, WeightsError
from ..core.registry import check_names
from ..core.stores import default_storage_url, default_tracking_uri, redact
from ..search_spaces.loader import SearchSpace, default_space_path, load_search_space
from ..tracking.provenance import standard_tags
from ..tracking.runs import Tracker
from ..tracking.schema import (
    COMPUTE,
    CV_PR_AUC_MEAN,
    CV_PR_AUC_SE,
    N_TRIALS_COMPLETE,
    N_TRIALS_FAILED,
    N_TRIALS_PRUNED,
    TAG_BATCH_SIZE,
    TAG_BEST_TRIAL,
    TAG_DATASET,
    TAG_PROTOCOL,
    TAG_STUDY,
    TAG_TRAIN_HASH,
    TAG_WEIGHTS,
    trial_label,
)
from .backbones import backbone_weights, build_backbone, check_backbone_names, check_weights, crop_parts, names_of_kind, part_kinds, part_names
from .cv import leave_one_video_out, select_folds
from .data.check import check_pose_parts
from .data.manifest import Dataset, load_dataset
from .data.synthetic import generate
from .estimate import (
    CalibrationStore,
    Estimate,
    Plan,
    check_budget,
    check_finetune_device,
    estimate_plan,
    summary_line,
)
from .features.cache import EmbeddingCache, default_cache_dir
from .features.embed import require_inputs
from .heads import HEADS
from .options import DEFAULT_PROTOCOL, PROTOCOLS, SAMPLERS
from .pair_inputs import behaviour_labels, dataset_hash, embed_videos, read_video_labels
from .progress import SearchProgress
from .search import (
    PairData,
    TrialFailed,
    make_objective,
    make_pruner,
    make_sampler,
    study_name,
    warm_start_from_parts,
)
from .workers import (
    GRACE_FACTOR,
    HEARTBEAT_SECONDS,
    LoopResult,
    StaleTrialHandler,
    budget_state,
    install_stale_handler,
    open_storage,
    run_trials,
    study_lock,
)

# The built-in default: small enough for minutes on 2 CPU cores.
DEMO_BACKBONES = ("pose", "mobilenet_v2")
DEMO_HEADS = ("lstm", "tcn", "frame_mlp")
DEMO_TRIALS = 2
DEMO_VIDEOS, DEMO_FRAMES = 6, 1500
# On a lab's own data: the reference's backbones, every head, a budget TPE can learn from.
DEFAULT_BACKBONES = ("resnet50v2", "inception_resnet_v2")
DEFAULT_HEADS = ("lstm", "tcn", "frame_mlp")
DEFAULT_TRIALS = 20


@dataclass
class RunOptions:
    study: str
    workdir: Path
    dataset: Path | None = None
    backbones: list[str] | None = None
    heads: list[str] | None = None
    n_trials: int | None = None
    timeout: float | None = None
    sampler: str = "tpe"
    protocol: str = DEFAULT_PROTOCOL  # how each fold's training length is chosen (benchmark/search.py)
    search_space: Path | None = None
    storage: str | None = None
    tracking_uri: str | None = None
    seed: int = 0
    weights: str | None = None
    batch_size: int = 32
    progress: bool = True
    heartbeat: int = HEARTBEAT_SECONDS  # seconds; a worker silent for 4 heartbeats has its trial retried
    allow_empty_folds: bool = False
    cache_dir: Path | None = None  # default: $MBR_BENCH_CACHE_DIR or WORKDIR/cache; may be shared by workers
    yes: bool = False  # start a run estimated at more than a day (benchmark/estimate.py)
    allow_cpu_finetune: bool = False  # train a clip network end to end (head finetune) without a GPU


@dataclass
class PairOutcome:
    behaviour: str
    backbone: str
    head: str
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    best_score: float = float("nan")
    best_std: float = float("nan")
    best_params: dict[str, Any] = field(default_factory=dict)
    positive_rate: float = float("nan")
    error: str | None = None


@dataclass
class RunPlan:
    """A run's options, checked and resolved: what `run` does, decided before any work."""

    dataset: Dataset
    demo: bool
    behaviours: list[str]
    backbones: list[str]
    heads: list[str]
    spaces: dict[str, SearchSpace]
    n_trials: int | None  # None: the whole grid
    storage_url: str
    tracking_uri: str


def plan_run(options: RunOptions, progress: SearchProgress) -> RunPlan:
    """Check every option once, before anything is embedded or trained; ConfigError/DataError on the first bad one."""
    for option, value, ok in (("--n-trials", options.n_trials, options.n_trials is None or options.n_trials >= 1),
                              ("--timeout", options.timeout, options.timeout is None or options.timeout > 0),
                              ("--batch-size", options.batch_size, options.batch_size >= 1),
                              ("--heartbeat", options.heartbeat, options.heartbeat >= 1)):
        if not ok:
            raise ConfigError(f"{option} {value}: must be a positive number; pass {option} 1 or more")
    if options.sampler not in SAMPLERS:
        raise ConfigError(f"--sampler must be {' or '.join(SAMPLERS)}, got {options.sampler!r}")
    if options.protocol not in PROTOCOLS:
        raise ConfigError(f"--protocol must be {' or '.join(PROTOCOLS)}, got {options.protocol!r}")
    try:
        options.workdir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"{options.workdir}: cannot create the work directory ({error.strerror}); "
                          "pass a writable --workdir") from None
    manifest, demo = _prepare_dataset(options, progress)
    dataset = load_dataset(manifest)
    if not dataset.labelled:
        raise DataError(f"{dataset.path}: no video has labels; a search needs labelled train videos "
                        "(add labels: and split: to the manifest)")
    behaviours = list(dataset.behaviours) if options.study == "all" else [options.study]
    check_names("--study", "behaviour", behaviours, list(dataset.behaviours))
    backbones = options.backbones or list(DEMO_BACKBONES if demo else DEFAULT_BACKBONES)
    heads = options.heads or list(DEMO_HEADS if demo else DEFAULT_HEADS)
    check_backbone_names("--backbones", backbones)
    check_weights(options.weights, backbones)
    check_names("--heads", "head", heads, HEADS.list())
    _check_finetune_pairs(backbones, heads)
    for name in backbones:  # e.g. an image backbone on a pose-only dataset: say so before any search
        require_inputs(dataset, name)
    if any("pose" in part_kinds(name) for name in backbones):  # pose features must mean the same columns
        check_pose_parts(dataset)
    space_path = options.search_space
    if space_path is None and demo:
        space_path = default_space_path("demo")
    spaces = {h: load_search_space(h, space_path, allowed=HEADS.get(h).param_names()) for h in heads}
    for space in spaces.values():
        _check_space(space)
    n_trials = options.n_trials if options.n_trials is not None else (
        None if options.sampler == "grid" else DEMO_TRIALS if demo else DEFAULT_TRIALS)
    return RunPlan(dataset, demo, behaviours, backbones, heads, spaces, n_trials,
                   storage_url=options.storage or default_storage_url(options.workdir),
                   tracking_uri=options.tracking_uri or default_tracking_uri(options.workdir))


def estimate_run(options: RunOptions, plan: RunPlan, progress: SearchProgress) -> Estimate:
    """What the plan will cost on this machine (embedding, searches, leaderboard), before any of it runs."""
    cache = EmbeddingCache(options.cache_dir or default_cache_dir(options.workdir))
    return estimate_plan(Plan(plan.dataset, plan.behaviours, plan.backbones, plan.heads, plan.spaces, plan.n_trials,
                              timeout=options.timeout, weights=options.weights, sampler=options.sampler),
                         cache, CalibrationStore(), say=progress.message)


def _check_stores_agree(storage: Any, tracker: Tracker, plan: RunPlan) -> None:
    """The Optuna study and the MLflow records of each pair must both exist or both be absent: with one
    deleted (or another --storage / --tracking-uri) a run would report a used budget with nothing to show."""
    studies = {s.study_name: s.n_trials for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    for behaviour in plan.behaviours:
        recorded = tracker.recorded_pairs(behaviour)
        for backbone in plan.backbones:
            for head in plan.heads:
                name = study_name(behaviour, backbone, head)
                if studies.get(name, 0) and (backbone, head) not in recorded:
                    raise ConfigError(
                        f"{redact(plan.tracking_uri)}: no record of study {name}, which holds {studies[name]} trial(s) "
                        f"in {redact(plan.storage_url)}: the stores disagree (mlflow.db deleted, or another "
                        "--tracking-uri?); pass the --tracking-uri that recorded it, or start afresh in a new "
                        "--workdir (or delete both stores)")
                if name not in studies and (backbone, head) in recorded:
                    raise ConfigError(
                        f"{redact(plan.storage_url)}: no study {name}, though {redact(plan.tracking_uri)} records "
                        "its search: the stores disagree (optuna.db deleted, or another --storage?); pass the "
                        "--storage that ran it, or start afresh in a new --workdir (or delete both stores)")


def _check_finetune_pairs(backbones: list[str], heads: list[str]) -> None:
    """A head that trains a clip network pairs with clip backbones only: say so before anything runs."""
    trainers = [head for head in heads if HEADS.get(head).reads_crops]
    others = [name for name in backbones if name not in names_of_kind("clip")]
    if trainers and others:
        raise ConfigError(f"--heads {trainers[0]} trains a clip network end to end, so it pairs with clip backbones "
                          f"only ({' '.join(names_of_kind('clip'))}), not {', '.join(others)}; run it apart, e.g. --backbones r2plus1d_18 "
                          f"--heads {trainers[0]}")


def _check_space(space: SearchSpace) -> None:
    """Every value a trial may draw must suit the head: `n_layers: 0` is refused now, not after embedding."""
    for params in space.extremes():
        try:
            HEADS.build(space.head, **params).check_params()
        except ConfigError as error:
            raise ConfigError(f"{space.source}: {error}") from None


def _prepare_dataset(options: RunOptions, progress: SearchProgress) -> tuple[Path, bool]:
    """The manifest to use, and whether it is the built-in demo."""
    if options.dataset is not None:
        return options.dataset, False
    manifest = options.workdir / "synthetic" / "dataset.yaml"
    if not manifest.is_file():
        progress.message(f"no --dataset: writing the built-in synthetic open field to {manifest.parent}")
        generate(manifest.parent, n_videos=DEMO_VIDEOS, n_frames=DEMO_FRAMES, seed=0)
    return manifest, True


def run(options: RunOptions) -> list[PairOutcome]:
    """Run every requested study; returns one outcome per behaviour x pair."""
    progress = SearchProgress(enabled=options.progress)
    plan = plan_run(options, progress)
    dataset = plan.dataset
    folds = leave_one_video_out(dataset)
    storage = open_storage(plan.storage_url, options.heartbeat)
    tracker = Tracker(plan.tracking_uri)
    _check_stores_agree(storage, tracker, plan)
    # Once every option is known to work (a mistyped --storage fails before this), and before any study
    # or run is created: what the plan will cost here, and a stop beyond a day unless asked for.
    estimate = estimate_run(options, plan, progress)
    progress.message(summary_line(estimate))
    check_budget(estimate, options.yes, options.timeout)
    check_finetune_device(estimate, options.allow_cpu_finetune)
    for behaviour in plan.behaviours:
        for stale in tracker.close_stale_runs(behaviour):
            progress.message(f"marked run {stale} KILLED (left RUNNING by an earlier, interrupted run)")
    install_stale_handler(storage, StaleTrialHandler(close_run=tracker.kill_run))
    cache = EmbeddingCache(options.cache_dir or default_cache_dir(options.workdir))
    data_hash, train_hash = dataset_hash(dataset), dataset_hash(dataset, "train")
    train_ids = [v.id for v in dataset.split("train")]
    progress.message(
        f"dataset {dataset.name}: {len(train_ids)} train videos ({len(folds)} folds), "
        f"{len(dataset.split('test'))} test videos held out; behaviours {', '.join(plan.behaviours)}; "
        f"pairs {len(plan.backbones)} backbones x {len(plan.heads)} heads; "
        f"{'grid' if plan.n_trials is None else plan.n_trials} trial(s) each"
    )

    outcomes: list[PairOutcome] = []
    pending: list[tuple[int, _PairJob]] = []
    # A crop pass records the tracker's path when a track backbone will want it: one decode for both.
    # Likewise the image and flow backbones of the run share one crop pass per video.
    also_track = any("track" in part_kinds(name) for name in plan.backbones)
    # (A finetune head reads crops, not embeddings: without other heads no embedding rides along.)
    embeds = any(not HEADS.get(head).reads_crops for head in plan.heads)
    companions = crop_parts(plan.backbones, dataset, options.weights) if embeds else []
    for backbone_name, crops, head_names in _inputs(plan):
        try:
            backbone = build_backbone(backbone_name, dataset, weights=options.weights, crops=crops)
            progress.message(f"{'cropping' if crops else 'embedding'} training videos for {backbone.name} "
                             "(cached after the first run)")
            embedded = embed_videos(dataset, backbone, cache, train_ids, batch_size=options.batch_size,
                                    progress=options.progress and sys.stderr.isatty(), also_track=also_track,
                                    companions=() if crops else companions)
        except WeightsError as error:
            if not plan.demo or options.backbones:
                raise
            # The built-in demo goes on without a CNN whose weights cannot be had offline.
            progress.message(f"skipping {backbone_name}: {error}")
            continue
        labels = read_video_labels(dataset, train_ids, embedded.n_frames())
        # What a refit needs to rebuild this pair's inputs without the command line.
        # The weights this backbone was built with (each part's, when fused), not the whole --weights value.
        recipe = {TAG_DATASET: str(dataset.path), TAG_TRAIN_HASH: train_hash, TAG_WEIGHTS: backbone_weights(backbone),
                  TAG_BATCH_SIZE: str(options.batch_size)}
        for behaviour in plan.behaviours:
            y = behaviour_labels(labels, behaviour)
            # No positive frame to validate on: neither PR-AUC nor early stopping exist for that fold.
            scored_folds, warnings = select_folds(folds, y, behaviour, dataset, options.allow_empty_folds)
            for warning in warnings:
                progress.warn(warning)
            for head_name in head_names:
                space = plan.spaces[head_name]
                pair = _PairJob(behaviour, backbone_name, head_name,
                                space.for_fused() if len(part_names(backbone_name)) > 1 else space,
                                PairData(embedded.arrays, y, embedded.seconds_per_frame, embedded.cache_keys,
                                         embedded.head_params),
                                scored_folds,
                                {**standard_tags(data_hash, embedded.cache_keys, options.seed), **recipe})
                outcome, others = _run_pair(pair, storage, plan.storage_url, tracker, plan.n_trials, options,
                                            progress)
                outcomes.append(outcome)
                if others:
                    pending.append((len(outcomes) - 1, pair))
    # Budgets are used up, but other workers still run trials: stay to retry any whose worker dies.
    for index, pair in pending:
        outcomes[index], _ = _run_pair(pair, storage, plan.storage_url, tracker, plan.n_trials, options, progress,
                                       wait_for_others=True)
    return outcomes


def _inputs(plan: RunPlan) -> list[tuple[str, bool, list[str]]]:
    """(backbone, crops, heads) per input the plan's pairs train on: a backbone's embeddings for most
    heads, a clip network's crops for a head that trains the network itself (finetune)."""
    inputs = []
    for backbone_name in plan.backbones:
        for crops in (False, True):
            heads = [head for head in plan.heads if HEADS.get(head).reads_crops == crops]
            if heads:
                inputs.append((backbone_name, crops, heads))
    return inputs


@dataclass
class _PairJob:
    """One behaviour x backbone x head search, with its inputs."""

    behaviour: str
    backbone: str
    head: str
    space: Any
    data: Any  # search.PairData
    folds: list
    tags: dict[str, str]


def _check_protocol(tracker: Tracker, job: _PairJob, study: str, protocol: str) -> None:
    """A study's trials are comparable only under one protocol: refuse to resume it under another."""
    existing = tracker.find_pair_run(job.behaviour, job.backbone, job.head)
    if existing is None:
        return
    searched = existing.data.tags.get(TAG_PROTOCOL)
    if searched != protocol:
        how = (f"--protocol {searched}" if searched else
               "an earlier mbr-bench whose folds early-stopped on the video they were scored on")
        raise ConfigError(f"study {study} was searched with {how}; its scores cannot be mixed with --protocol "
                          f"{protocol}: resume it with that protocol, or start a fresh study in another --workdir "
                          "(or --storage and --tracking-uri)")


def _budget(n_trials: int | None, space: Any, sampler: str) -> int | None:
    if n_trials is None and sampler == "grid":
        return space.grid_size()
    return n_trials


def _run_pair(
    job: _PairJob, storage: Any, storage_url: str, tracker: Any, n_trials: int | None, options: RunOptions,
    progress: SearchProgress, wait_for_others: bool = False,
) -> tuple[PairOutcome, int]:
    """Search one pair until the study's budget is used; returns the outcome and how many trials of
    other workers were still running."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = study_name(job.behaviour, job.backbone, job.head)
    progress.set_context(f"{job.behaviour} · {job.backbone}+{job.head} · ")
    outcome = PairOutcome(job.behaviour, job.backbone, job.head)
    outcome.positive_rate = float(np.mean(np.concatenate(list(job.data.labels.values()))))
    lock = study_lock(storage, name)
    budget = _budget(n_trials, job.space, options.sampler)
    lock.acquire()  # one worker at a time creates the study and its MLflow parent run
    try:
        study = optuna.create_study(
            study_name=name, storage=storage, load_if_exists=True, direction="maximize",
            sampler=make_sampler(options.sampler, job.space, options.seed), pruner=make_pruner(),
        )
        _check_protocol(tracker, job, name, options.protocol)
        if options.sampler != "grid":
            parts = warm_start_from_parts(study, storage, job.behaviour, part_names(job.backbone), job.head, job.space,
                                          budget)
            if parts:
                progress.message(f"study {name}: starts from the best trial of {' and '.join(parts)} "
                                 "(balance turned toward each)")
        pair = tracker.pair_run(job.behaviour, job.backbone, job.head,
                                tags={**job.tags, TAG_STUDY: name, TAG_PROTOCOL: options.protocol})
    finally:
        lock.release()
    state = budget_state(study)
    if not wait_for_others:
        progress.message(f"study {name}: {state.finished} finished, {state.running} running trial(s) of "
                         f"{'the grid' if budget is None else budget} in {storage_url.split('?')[0]}")

    def waiting(state: Any) -> None:
        progress.message(f"study {name}: budget used; waiting for {state.running} trial(s) of other workers "
                         f"(one whose worker dies is retried here after {GRACE_FACTOR * options.heartbeat}s)")

    with pair:
        pair.log_params({"sampler": options.sampler, "search_space": str(job.space.source),
                         "n_folds": len(job.folds)})
        deadline = None if options.timeout is None else time.monotonic() + options.timeout
        objective = make_objective(job.behaviour, job.head, job.space, job.data, job.folds, pair, options.seed,
                                   progress, options.protocol, deadline)
        handler = storage.get_heartbeat_stale_trial_callback()

        def reseed(n_trials: int) -> None:
            # The sampler's random draws are seeded by the trial's place in the study: reproducible for
            # one process, and a resumed or parallel worker does not repeat the points others drew.
            study.sampler = make_sampler(options.sampler, job.space, options.seed + n_trials)

        try:
            loop = run_trials(study, objective, budget, lock, handler, deadline=deadline, catch=(TrialFailed,),
                              wait_for_others=wait_for_others, poll_seconds=options.heartbeat, on_wait=waiting,
                              reseed=reseed)
        except TimeBudgetReached as stopped:
            progress.message(f"study {name}: --timeout {options.timeout:g} s reached; {stopped} and handed back "
                             "(not counted: the next run retries it)")
            loop = LoopResult()
        states = [t.state for t in study.get_trials(deepcopy=False)]
        outcome.complete = states.count(optuna.trial.TrialState.COMPLETE)
        outcome.pruned = states.count(optuna.trial.TrialState.PRUNED)
        outcome.failed = states.count(optuna.trial.TrialState.FAIL)
        if loop.started == 0 and loop.budget_reached and not wait_for_others and not loop.others_running:
            progress.message(f"study {name}: its budget of {budget} trial(s) is used; raise --n-trials to search more")
        if outcome.complete:
            best = study.best_trial
            outcome.best_score = float(best.value)
            outcome.best_params = dict(best.params)
            pair.log_metrics(pair_summary(outcome, best, study.get_trials(deepcopy=False), job.data))
            # A repeat has no MLflow run of its own: name the trial that trained.
            pair.set_tags({TAG_BEST_TRIAL: str(trial_label(best.user_attrs.get("repeat_of", best.number)))})
            outcome.best_std = float(best.user_attrs.get("pr_auc_std", float("nan")))
    progress.set_context("")
    return outcome, loop.others_running


def pair_summary(outcome: PairOutcome, best: Any, trials: list[Any], data: PairData) -> dict[str, float]:
    """A pair run's own columns in the MLflow runs table: its best trial's CV, the trials, the search's cost."""
    return {
        CV_PR_AUC_MEAN: outcome.best_score,
        CV_PR_AUC_SE: float(best.user_attrs.get("pr_auc_se", float("nan"))),
        N_TRIALS_COMPLETE: outcome.complete,
        N_TRIALS_PRUNED: outcome.pruned,
        N_TRIALS_FAILED: outcome.failed,
        COMPUTE + "search_cpu_seconds": float(sum(t.user_attrs.get("cpu_seconds", 0.0) for t in trials)),
        COMPUTE + "embedding_seconds_per_frame": data.embedding_seconds_per_frame,
        COMPUTE + "n_params": float(best.user_attrs.get("n_params", float("nan"))),
    }
