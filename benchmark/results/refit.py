"""Best trial -> the final model -> one evaluation on the test videos.

For a pair's search, the best complete trial (highest CV PR-AUC) gives the hyperparameters. The
final model is one of (``--final``):

* ``refit`` (default): one head trained on every training video for the protocol's training
  length, the threshold and post-processing taken from the search's out-of-fold predictions.
  Trained with several seeds; the first is deployed and the spread over seeds is reported.
* ``ensemble``: the K fold models of that trial, trained again exactly as the search scored them
  (same parameters, seed, protocol and epochs), their probabilities averaged; the threshold and the
  post-processing are tuned on these models' own out-of-fold predictions. Each fold model saw fewer
  videos, and the average's probabilities are not those the threshold was tuned on one by one:
  measured on the synthetic open field and on real pose, the refit transferred its threshold as well
  or better (test F1 at the CV threshold in 7 of 9 pairs, test PR-AUC in 6 of 9), hence the default.

Neither choice ever sees a test frame. The model is scored once on the test videos and saved as a
model bundle in its own MLflow run, nested under the pair. A refit run is reused while the best
trial, the test videos, the seed, the final-model kind and this code stay the same.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...core.errors import ConfigError, DataError
from ...core.jsonio import to_jsonable
from ...tracking.queries import (
    quote_filter_value,
    search_all,
    trial_params,
    trial_predictions,
    trial_runs,
)
from ...tracking.schema import (
    COMPUTE,
    CV_SUMMARY,
    DECISION,
    DECISION_THRESHOLD,
    FINAL_ENSEMBLE,
    KIND_REFIT,
    MODEL_ARTIFACT,
    PARAM_HEAD,
    PARAM_POSTPROCESS,
    PREDICTIONS_DIR,
    REFIT_INFO,
    TAG_BACKBONE,
    TAG_BATCH_SIZE,
    TAG_BEHAVIOUR,
    TAG_DATASET,
    TAG_DATASET_HASH,
    TAG_FINAL,
    TAG_HEAD,
    TAG_KIND,
    TAG_PARENT,
    TAG_PROTOCOL,
    TAG_REFIT_SEED,
    TAG_REFIT_VERSION,
    TAG_RULE,
    TAG_SOURCE_RUN,
    TAG_STATE,
    TAG_TEST_HASH,
    TAG_TRAIN_HASH,
    TAG_TRIAL,
    TAG_WEIGHTS,
    TEST,
    TEST_POST,
    TEST_PREDICTIONS,
    TEST_SEEDS,
    TEST_VIDEOS,
    TrialRecord,
    prediction_artifact,
    with_prefix,
)
from ..backbones import CROP_KINDS, backbone_weights, build_backbone, part_kinds
from ..bouts import bout_metrics
from ..bundle import ModelBundle
from ..cv import leave_one_video_out
from ..data.manifest import Dataset, VideoEntry, load_dataset
from ..data.video import probe_video
from ..features.animal_size import measure_animal, typical_size
from ..features.cache import EmbeddingCache
from ..features.embed import video_fps
from ..features.sequences import sample_weights
from ..heads import HEADS, with_pipeline_params
from ..metrics import frame_metrics, pooled_pr_auc
from ..options import DEFAULT_FINAL, FINAL_KINDS
from ..pair_inputs import (
    EmbeddedVideos,
    behaviour_labels,
    dataset_hash,
    embed_videos,
    read_video_labels,
)
from ..postprocess import PostProcess, choose_threshold, tune_postprocess
from ..progress import SearchProgress
from ..search import PairData, fit_fold_models

REFIT_VERSION = "2"  # bump when a change here makes earlier refits stale (2: final kinds, per-video test PR-AUC)


class NoResult(Exception):
    """A pair has nothing to refit: its search has no complete trial. The text says why."""


@dataclass
class RefitSettings:
    threshold_rule: str = "max_f1"  # or "recall:0.9"
    seed: int = 0
    dataset: Path | None = None  # default: the dataset the search ran on (pair tag)
    batch_size: int | None = None  # embedding batch size; default: the search's
    progress: bool = True
    final: str = DEFAULT_FINAL  # refit | ensemble: what is deployed and tested
    refit_seeds: int = 3  # final refit: trained with seeds seed, seed+1, ...; the first is deployed


# -- reading the search back ------------------------------------------------------------------


def best_trial(client: Any, pair_run: Any) -> Any:
    """The complete trial run with the highest CV PR-AUC (the earliest on ties); NoResult if none."""
    trials = trial_runs(client, pair_run.info.run_id)
    records = [TrialRecord.from_run(t) for t in trials]
    complete = [(r, t) for r, t in zip(records, trials, strict=True) if r.complete]
    if complete:
        return max(complete, key=lambda pair: (pair[0].cv_pr_auc_mean, -pair[0].trial))[1]
    errors = [r.error for r in records if r.error]
    if errors:
        counted = "all" if len(errors) == len(trials) else f"{len(errors)} of"
        raise NoResult(f"{counted} {len(trials)} trial(s) failed: {errors[-1]}")
    states = sorted({t.data.tags.get(TAG_STATE, t.info.status.lower()) for t in trials})
    raise NoResult(f"no complete trial ({len(trials)} trial(s): {', '.join(states) or 'none started'})"
                   if trials else "no trial ran")


def search_cpu_seconds(client: Any, pair_run: Any) -> float:
    """CPU seconds of every trial of the pair's search (wall training seconds where CPU was not logged)."""
    return sum(TrialRecord.from_run(t).cpu_seconds for t in trial_runs(client, pair_run.info.run_id))


def find_refit(client: Any, pair_run: Any, source_run_id: str, rule: str, test_hash: str | None = None,
               seed: int | None = None, final: str | None = None) -> Any | None:
    """A finished refit of this pair from `source_run_id` with the same rule and refit code, if any.

    With `test_hash`, only one scored on that same test set (edited test labels mean new scores);
    with `seed`, only one trained with that seed; with `final`, only one of that final-model kind.
    """
    runs = search_all(
        client, [pair_run.info.experiment_id],
        f"tags.`{TAG_KIND}` = '{KIND_REFIT}' and tags.`{TAG_PARENT}` = {quote_filter_value(pair_run.info.run_id)} "
        f"and tags.`{TAG_SOURCE_RUN}` = {quote_filter_value(source_run_id)} and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
    )
    for run in runs:
        if run.data.tags.get(TAG_REFIT_VERSION) == REFIT_VERSION and run.data.tags.get(TAG_RULE) == rule and (
                test_hash is None or run.data.tags.get(TAG_TEST_HASH) == test_hash) and (
                seed is None or run.data.tags.get(TAG_REFIT_SEED) == str(seed)) and (
                final is None or run.data.tags.get(TAG_FINAL) == final):
            return run
    return None


def current_refit(client: Any, pair_run: Any, settings: RefitSettings) -> tuple[Any | None, str | None]:
    """The refit `refit_pair` would reuse now, or (None, why the newest one is stale) without training anything.

    What `leaderboard --no-refit` shows: never a refit of another best trial, test set, seed,
    final-model kind or refit code.
    """
    best, _, test_hash, current = _lookup(client, pair_run, settings)
    if current is not None:
        return current, None
    latest = find_refit(client, pair_run, best.info.run_id, settings.threshold_rule)
    if latest is None:
        older = search_all(client, [pair_run.info.experiment_id],
                           f"tags.`{TAG_KIND}` = '{KIND_REFIT}' and tags.`{TAG_PARENT}` = "
                           f"{quote_filter_value(pair_run.info.run_id)} and attributes.status = 'FINISHED'")
        return None, ("no refit yet" if not older else "its refit is of another best trial, threshold rule or "
                      "refit code")
    tags = latest.data.tags
    why = [what for what, stale in (("the test videos changed", tags.get(TAG_TEST_HASH) != test_hash),
                                    (f"it used seed {tags.get(TAG_REFIT_SEED)}", tags.get(TAG_REFIT_SEED) != str(settings.seed)),
                                    (f"it is a final {tags.get(TAG_FINAL)} model", tags.get(TAG_FINAL) != settings.final))
           if stale]
    return None, "its refit is stale: " + ", ".join(why or ["other settings"])


# -- metrics ----------------------------------------------------------------------------------


def score_test_set(y: list[np.ndarray], labels: list[np.ndarray], fps: float) -> dict[str, float]:
    """Frame metrics of 0/1 `labels`, pooled over test videos, and bout metrics (PR-AUC: `video_pr_auc`)."""
    metrics = frame_metrics(np.concatenate(y), np.concatenate(labels).astype(float), threshold=0.5)
    metrics.pop("pr_auc")  # of hard labels: meaningless beside the probabilities' PR-AUC
    metrics.update(bout_metrics(y, labels, fps=fps or None))
    return {key: float(value) for key, value in metrics.items()}


def video_pr_auc(videos: list[TestVideo]) -> tuple[list[float], dict[str, float]]:
    """Each test video's PR-AUC, and their mean (NaN videos, without a positive frame, left out) and pooled PR-AUC."""
    per_video = [frame_metrics(v.y, v.proba)["pr_auc"] for v in videos]
    finite = [score for score in per_video if math.isfinite(score)]
    return per_video, {"pr_auc_mean": float(np.mean(finite)) if finite else math.nan,
                       "pr_auc_pooled": pooled_pr_auc([v.y for v in videos], [v.proba for v in videos])}


# -- the refit, step by step --------------------------------------------------------------------


@dataclass
class RefitJob:
    """What one refit is about: the pair, its best trial and the data it was searched on."""

    pair_run: Any
    best: Any  # the best trial's MLflow run
    record: TrialRecord
    behaviour: str
    backbone: str
    head: str
    dataset: Dataset
    train: list[VideoEntry]
    test: list[VideoEntry]  # labelled test videos
    test_hash: str
    params: dict[str, Any]  # the best trial's hyperparameters, typed


@dataclass
class DecisionRule:
    """Threshold and post-processing, chosen on out-of-fold predictions only."""

    threshold: float
    rule: str
    postprocess: PostProcess
    scores: dict[str, float]  # what the post-processing tuning measured
    fps: float  # the training videos' frame rate the post-processing sizes are in


@dataclass
class FinalModel:
    """The heads deployed (one, or the K fold models) and what training them cost."""

    heads: list[Any]
    decision: DecisionRule
    epochs: int  # training length of a refit; the longest fold model's for an ensemble
    cpu_seconds: float
    wall_seconds: float
    seed_heads: list[Any]  # final refit: the heads of the other seeds, scored for the spread only


@dataclass
class TestVideo:
    """One test video, scored once."""

    video_id: str
    y: np.ndarray
    proba: np.ndarray
    raw: np.ndarray  # labels at the threshold
    post: np.ndarray  # labels after post-processing
    fps: float


@dataclass
class TestScores:
    videos: list[TestVideo]
    raw: dict[str, float]  # labels at the threshold; PR-AUC per video (mean) and pooled
    post: dict[str, float]  # post-processed labels
    per_video: dict[str, dict[str, float]]
    predict_seconds: float
    seeds: dict[str, float]  # final refit: <metric>_mean and <metric>_sd over the seeds; {} otherwise

    @property
    def n_frames(self) -> int:
        return sum(len(v.y) for v in self.videos)


def refit_pair(tracker: Any, pair_run: Any, settings: RefitSettings, cache: Any,
               progress: SearchProgress | None = None) -> Any:
    """The refit run of a pair (reused when current, else trained now). NoResult without a result."""
    if settings.final not in FINAL_KINDS:
        raise ConfigError(f"--final must be {' or '.join(FINAL_KINDS)}, got {settings.final!r}")
    if settings.refit_seeds < 1:
        raise ConfigError(f"--refit-seeds {settings.refit_seeds}: must be 1 or more")
    progress = progress or SearchProgress(enabled=False)
    client = tracker.client
    tags = pair_run.data.tags
    best, dataset, test_hash, existing = _lookup(client, pair_run, settings)
    if existing is not None:
        return existing
    job = RefitJob(pair_run, best, TrialRecord.from_run(best), tags[TAG_BEHAVIOUR], tags[TAG_BACKBONE],
                   tags[TAG_HEAD], dataset, dataset.split("train"),
                   [e for e in dataset.split("test") if e.labels is not None], test_hash,
                   trial_params(client, best.info.run_id))
    progress.message(f"{job.behaviour} · {job.backbone}+{job.head}: final {settings.final} model of trial "
                     f"{job.record.trial}")
    if not job.test:
        raise DataError(f"{dataset.path}: no labelled test video; mark at least one labelled video split: test")
    weights = tags.get(TAG_WEIGHTS) or None
    backbone = build_backbone(job.backbone, dataset, weights=weights, crops=HEADS.get(job.head).reads_crops)
    embedded = embed_videos(dataset, backbone, cache, [e.id for e in (*job.train, *job.test)],
                            batch_size=settings.batch_size or int(tags.get(TAG_BATCH_SIZE) or 32),
                            progress=settings.progress)
    y = behaviour_labels(read_video_labels(dataset, embedded.arrays, embedded.n_frames()), job.behaviour)
    if settings.final == FINAL_ENSEMBLE:
        final = _fold_ensemble(job, embedded, y, settings)
    else:
        final = _refit_on_all(client, job, embedded, y, settings)
    bundle = ModelBundle(
        behaviour=job.behaviour, backbone=job.backbone, weights=backbone_weights(backbone),
        backbone_config=backbone.describe(), crop=dataset.crop, heading=dataset.heading,
        individual=dataset.individual, heads=final.heads, threshold=final.decision.threshold,
        threshold_rule=final.decision.rule, postprocess=final.decision.postprocess, info={},
        parts=dataset.parts, motion=dataset.motion,
        backbone_state=backbone.state() if hasattr(backbone, "state") else {}, postprocess_fps=final.decision.fps,
        animal=_training_animal(dataset, job, cache), bodyparts=_training_parts(dataset, job),
    )
    scores = _score_test(job, bundle, embedded, y, final.seed_heads)
    run_id = _log_refit(tracker, job, final, bundle, scores, embedded, settings)
    progress.message(
        f"{job.behaviour} · {job.backbone}+{job.head}: final {settings.final} ({len(final.heads)} head(s)) in "
        f"{final.wall_seconds:.0f}s; test PR-AUC {scores.raw['pr_auc_mean']:.3f} per video "
        f"({scores.raw['pr_auc_pooled']:.3f} pooled), F1 {scores.raw['f1']:.3f} -> {scores.post['f1']:.3f} post-processed"
    )
    return client.get_run(run_id)


def _lookup(client: Any, pair_run: Any, settings: RefitSettings) -> tuple[Any, Dataset, str, Any | None]:
    """(best trial run, the searched dataset, its test hash, the current final-model run or None)."""
    best = best_trial(client, pair_run)
    dataset = _load_search_dataset(pair_run, settings)
    test_hash = dataset_hash(dataset, "test")
    current = find_refit(client, pair_run, best.info.run_id, settings.threshold_rule, test_hash, settings.seed,
                         settings.final)
    return best, dataset, test_hash, current


def _load_search_dataset(pair_run: Any, settings: RefitSettings) -> Dataset:
    recorded = pair_run.data.tags.get(TAG_DATASET)
    path = settings.dataset or (Path(recorded) if recorded else None)
    if path is None:
        raise DataError(f"run {pair_run.info.run_id}: the search did not record its dataset; "
                        "pass --dataset with the dataset.yaml it ran on")
    if not Path(path).exists():
        raise DataError(f"{path}: the dataset this search ran on is gone; pass --dataset with its new location")
    dataset = load_dataset(path)
    searched, now = pair_run.data.tags.get(TAG_TRAIN_HASH), dataset_hash(dataset, "train")
    if searched and now != searched:
        raise DataError(f"{dataset.path}: the training videos changed since the search (hash {now}, searched "
                        f"{searched}); pass --dataset with the searched version, or run the search again")
    return dataset


def training_fps(pair_run: Any, settings: RefitSettings) -> float:
    """The median frame rate of the training videos a pair was searched on (post-processing sizes are in its frames)."""
    return float(np.median([video_fps(e) for e in _load_search_dataset(pair_run, settings).split("train")]))


def _training_parts(dataset: Dataset, job: RefitJob) -> tuple[str, ...]:
    """The body parts pose features were computed from (one set per dataset: `dataset check` sees to it)."""
    with_pose = [entry for entry in job.train if entry.pose is not None]
    if "pose" not in part_kinds(job.backbone) or not with_pose:
        return ()
    return dataset.read_pose(with_pose[0]).bodyparts


def _training_animal(dataset: Dataset, job: RefitJob, cache: EmbeddingCache) -> dict[str, Any]:
    """The mouse's size in the training videos, for an image or flow backbone's crops (see features.animal_size)."""
    if not set(part_kinds(job.backbone)) & set(CROP_KINDS):
        return {}
    size = typical_size([measure_animal(dataset, entry, cache) for entry in job.train])
    if size is None:
        return {}
    first = next((entry.video for entry in job.train if entry.video is not None), None)
    resolution = None
    if first is not None:
        info = probe_video(first)
        resolution = [info.width, info.height]
    return {**size.to_dict(), "resolution": resolution}


def _decision_rule(y_folds: list[np.ndarray], p_folds: list[np.ndarray], rule: str, train: list[VideoEntry]
                   ) -> DecisionRule:
    """Threshold and post-processing from out-of-fold predictions: never a test frame."""
    threshold = choose_threshold(y_folds, p_folds, rule)
    fps = float(np.median([video_fps(e) for e in train]))
    postprocess, scores = tune_postprocess(y_folds, p_folds, threshold, fps=fps)
    return DecisionRule(threshold, rule, postprocess, scores, fps)


def _head_factory(job: RefitJob, seed: int, embedded: EmbeddedVideos) -> Any:
    params = with_pipeline_params(job.params, embedded.head_params)
    return lambda **overrides: HEADS.build(job.head, **{"seed": seed, **params, **overrides})


def _fold_ensemble(job: RefitJob, embedded: EmbeddedVideos, y: dict[str, np.ndarray],
                   settings: RefitSettings) -> FinalModel:
    """The trial's K fold models trained again as the search scored them; the rule tuned on their predictions."""
    by_val = {fold.val_id: fold for fold in leave_one_video_out(job.dataset)}
    scored_videos = list(job.record.fold_scores)  # the folds the trial scored, in order
    missing = [v for v in scored_videos if v not in by_val]
    if missing or len(job.record.fold_epochs) != len(scored_videos):
        raise DataError(f"run {job.best.info.run_id}: the trial's folds ({', '.join(scored_videos)}) are not the "
                        f"dataset's now; run the search again, or pass --final refit")
    folds = [by_val[v] for v in scored_videos]
    data = PairData({e.id: embedded.arrays[e.id] for e in job.train}, {e.id: y[e.id] for e in job.train})
    protocol = job.record.protocol or "mean_curve"  # older searches: each fold for the epochs it was scored at
    cpu_started, wall_started = time.process_time(), time.perf_counter()
    models = fit_fold_models(_head_factory(job, settings.seed, embedded), data, folds, protocol, job.record.fold_epochs)
    cpu, wall = time.process_time() - cpu_started, time.perf_counter() - wall_started
    decision = _decision_rule([y[f.val_id] for f in folds], [proba for _, proba in models], settings.threshold_rule,
                              job.train)
    return FinalModel([head for head, _ in models], decision, max(job.record.fold_epochs), cpu, wall, [])


def _refit_on_all(client: Any, job: RefitJob, embedded: EmbeddedVideos, y: dict[str, np.ndarray],
                  settings: RefitSettings) -> FinalModel:
    """One head on every training video for the protocol's training length, with several seeds."""
    folds = trial_predictions(client, job.best.info.run_id)
    decision = _decision_rule([f[1] for f in folds], [f[2] for f in folds], settings.threshold_rule, job.train)
    # No video is left to stop on: the protocol's training length, chosen without any scored video.
    epochs = job.record.refit_epochs or max(1, int(round(float(np.median(job.record.fold_epochs or [1])))))
    X_train, y_train = [embedded.arrays[e.id] for e in job.train], [y[e.id] for e in job.train]
    heads, cpu, wall = [], 0.0, 0.0
    for seed in range(settings.seed, settings.seed + max(1, settings.refit_seeds)):
        head = _head_factory(job, seed, embedded)(max_epochs=epochs)
        cpu_started, wall_started = time.process_time(), time.perf_counter()
        head.fit(X_train, y_train, sample_weights(y_train))
        cpu += time.process_time() - cpu_started
        wall += time.perf_counter() - wall_started
        heads.append(head)
    return FinalModel(heads[:1], decision, epochs, cpu, wall, heads[1:])


def _score_test(job: RefitJob, bundle: ModelBundle, embedded: EmbeddedVideos, y: dict[str, np.ndarray],
                seed_heads: list[Any]) -> TestScores:
    """Score the final model once on the labelled test videos: per video and pooled, raw and post-processed."""
    videos, predict_seconds = [], 0.0
    for entry in job.test:
        started = time.perf_counter()
        proba = bundle.predict_proba(embedded.arrays[entry.id])
        predict_seconds += time.perf_counter() - started
        raw, post = bundle.decide(proba, video_fps(entry))
        videos.append(TestVideo(entry.id, y[entry.id], proba, raw, post, video_fps(entry)))
    per_video_pr_auc, pr_auc = video_pr_auc(videos)
    raw_metrics, post_metrics = _label_metrics(videos, pr_auc)
    per_video = {}
    for v, score in zip(videos, per_video_pr_auc, strict=True):
        raw_v, post_v = score_test_set([v.y], [v.raw], v.fps), score_test_set([v.y], [v.post], v.fps)
        per_video[v.video_id] = {"pr_auc": score, "f1_raw": raw_v["f1"], "f1_post": post_v["f1"],
                                 "bout_f1_iou50_post": post_v["bout_f1_iou50"], "frames": int(len(v.y)),
                                 "fps": v.fps}
    seeds = {}
    if seed_heads:  # final refit: the same test scoring for every seed, to report the spread
        per_seed = [raw_metrics]
        for head in seed_heads:
            seed_videos = []
            for v in videos:
                proba = head.predict_proba(embedded.arrays[v.video_id])
                raw, post = bundle.decide(proba, v.fps)
                seed_videos.append(TestVideo(v.video_id, v.y, proba, raw, post, v.fps))
            per_seed.append(_label_metrics(seed_videos, video_pr_auc(seed_videos)[1])[0])
        for key in ("pr_auc_mean", "pr_auc_pooled", "f1", "precision", "recall"):
            values = np.array([m[key] for m in per_seed], float)
            seeds[f"{key}_mean"], seeds[f"{key}_sd"] = float(np.nanmean(values)), float(np.nanstd(values, ddof=1))
    return TestScores(videos, raw_metrics, post_metrics, per_video, predict_seconds, seeds)


def _label_metrics(videos: list[TestVideo], pr_auc: dict[str, float]) -> tuple[dict[str, float], dict[str, float]]:
    """(raw, post-processed) label metrics pooled over test videos, each with the videos' PR-AUC."""
    fps = float(np.median([v.fps for v in videos]))
    ys = [v.y for v in videos]
    return ({**score_test_set(ys, [v.raw for v in videos], fps), **pr_auc},
            {**score_test_set(ys, [v.post for v in videos], fps), **pr_auc})


def _log_refit(tracker: Any, job: RefitJob, final: FinalModel, bundle: ModelBundle, scores: TestScores,
               embedded: EmbeddedVideos, settings: RefitSettings) -> str:
    """The refit run, nested under its pair: parameters, test and cost metrics, the model, the predictions."""
    client, pair_run = tracker.client, job.pair_run
    cv = job.best.data.metrics
    decision = final.decision
    compute = {
        "search_cpu_seconds": search_cpu_seconds(client, pair_run),
        "refit_cpu_seconds": final.cpu_seconds,
        "refit_train_seconds": final.wall_seconds,
        "inference_frames_per_second": scores.n_frames / max(scores.predict_seconds, 1e-9),
        "embedding_seconds_per_frame": embedded.seconds_per_frame,
        "n_params": float(sum(head.n_params_ for head in final.heads)),
    }
    bundle.info = {
        "final": settings.final, "source_trial_run": job.best.info.run_id, "pair_run": pair_run.info.run_id,
        "trial": job.record.trial, "params": job.params, "epochs": final.epochs, "protocol": job.record.protocol,
        "dataset": str(job.dataset.path), "dataset_hash": pair_run.data.tags.get(TAG_DATASET_HASH),
        "train_videos": [e.id for e in job.train], "test_videos": [e.id for e in job.test], "fps": decision.fps,
        "cv_pr_auc_mean": job.record.cv_pr_auc_mean, "cv_pr_auc_se": job.record.cv_pr_auc_se,
        "test": {"raw": scores.raw, "post": scores.post}, "decision_scores": decision.scores,
    }
    run_tags = {
        TAG_BACKBONE: job.backbone, TAG_HEAD: job.head, TAG_SOURCE_RUN: job.best.info.run_id,
        TAG_TRIAL: job.best.data.tags.get(TAG_TRIAL, ""), TAG_REFIT_VERSION: REFIT_VERSION,
        TAG_RULE: decision.rule, TAG_REFIT_SEED: str(settings.seed), TAG_TEST_HASH: job.test_hash,
        TAG_TRAIN_HASH: pair_run.data.tags.get(TAG_TRAIN_HASH, ""), TAG_FINAL: settings.final,
        TAG_PROTOCOL: job.record.protocol or "",
    }
    with tracker.result_run(job.behaviour, KIND_REFIT, f"{job.backbone}+{job.head} {settings.final}", run_tags,
                            parent_run_id=pair_run.info.run_id) as run:
        run.log_params({"epochs": final.epochs, "threshold": f"{decision.threshold:.6g}",
                        "threshold_rule": decision.rule, "final": settings.final, "n_heads": len(final.heads),
                        **with_prefix(PARAM_POSTPROCESS, decision.postprocess.to_dict()),
                        **with_prefix(PARAM_HEAD, job.params)})
        run.log_metrics({
            **with_prefix(TEST, scores.raw),
            **with_prefix(TEST_POST, scores.post),
            **with_prefix(TEST_SEEDS, scores.seeds),
            **with_prefix(COMPUTE, compute),
            **{key: cv[key] for key in CV_SUMMARY if key in cv},
            DECISION_THRESHOLD: decision.threshold,
            **with_prefix(DECISION, decision.scores),
        })
        with tempfile.TemporaryDirectory(prefix="mbr-refit-") as folder:
            bundle.save(Path(folder) / MODEL_ARTIFACT)
            run.log_artifact(Path(folder) / MODEL_ARTIFACT)
            arrays: dict[str, np.ndarray] = {}
            for k, v in enumerate(scores.videos):
                arrays.update({f"video_{k}": np.array(v.video_id), f"y_{k}": v.y, f"proba_{k}": v.proba,
                               f"raw_{k}": v.raw, f"post_{k}": v.post, f"fps_{k}": np.array(v.fps)})
            np.savez_compressed(Path(folder) / TEST_PREDICTIONS, **arrays)
            run.log_artifact(Path(folder) / TEST_PREDICTIONS, PREDICTIONS_DIR)
        run.log_dict(scores.per_video, prediction_artifact(TEST_VIDEOS))
        run.log_dict(to_jsonable(bundle.info), REFIT_INFO)
    # The pair run's row of the MLflow runs table shows its latest test figures beside its CV.
    for key in ("pr_auc_mean", "pr_auc_pooled"):
        if math.isfinite(scores.raw.get(key, math.nan)):
            client.log_metric(pair_run.info.run_id, TEST + key, float(scores.raw[key]))
    return run.run_id


def load_test_predictions(client: Any, refit_run_id: str) -> list[TestVideo]:
    """One `TestVideo` per test video of a refit run, as the refit scored it."""
    with tempfile.TemporaryDirectory(prefix="mbr-test-") as folder:
        path = client.download_artifacts(refit_run_id, prediction_artifact(TEST_PREDICTIONS), folder)
        with np.load(path) as data:
            count = sum(1 for key in data.files if key.startswith("video_"))
            return [TestVideo(str(data[f"video_{k}"]), data[f"y_{k}"], data[f"proba_{k}"], data[f"raw_{k}"],
                              data[f"post_{k}"], float(data[f"fps_{k}"])) for k in range(count)]
