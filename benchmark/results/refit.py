"""Best trial -> one model trained on all training videos -> one evaluation on the test videos.

For a pair's search, the best complete trial (highest CV PR-AUC) gives the hyperparameters. Its
out-of-fold predictions, stored by the search, choose the decision threshold and tune the
post-processing, so neither ever sees a test frame. The head is then refit on every training
video for the median of the folds' early-stopped epochs (there is no validation video left to
stop on), scored once on the test videos, and saved as a model bundle in its own MLflow run,
nested under the pair. A refit is reused while the best trial and this code stay the same.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...core.errors import DataError
from ...core.jsonio import to_jsonable
from ...tracking.queries import quote_filter_value, search_all, trial_params, trial_predictions, trial_runs
from ...tracking.schema import (
    COMPUTE,
    CV_SUMMARY,
    DECISION,
    DECISION_THRESHOLD,
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
    TAG_HEAD,
    TAG_KIND,
    TAG_PARENT,
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
    TEST_VIDEOS,
    TrialRecord,
    prediction_artifact,
    with_prefix,
)
from ..backbones import build_backbone
from ..bouts import bout_metrics
from ..bundle import ModelBundle
from ..data.manifest import Dataset, VideoEntry, load_dataset
from ..features.embed import video_fps
from ..features.sequences import sample_weights
from ..heads import HEADS
from ..metrics import frame_metrics
from ..pair_inputs import EmbeddedVideos, behaviour_labels, dataset_hash, embed_videos, read_video_labels
from ..postprocess import PostProcess, choose_threshold, tune_postprocess
from ..progress import SearchProgress

REFIT_VERSION = "1"  # bump when a change here makes earlier refits stale


class NoResult(Exception):
    """A pair has nothing to refit: its search has no complete trial. The text says why."""


@dataclass
class RefitSettings:
    threshold_rule: str = "max_f1"  # or "recall:0.9"
    seed: int = 0
    dataset: Path | None = None  # default: the dataset the search ran on (pair tag)
    batch_size: int | None = None  # embedding batch size; default: the search's
    progress: bool = True


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
               seed: int | None = None) -> Any | None:
    """A finished refit of this pair from `source_run_id` with the same rule and refit code, if any.

    With `test_hash`, only one scored on that same test set (edited test labels mean new scores);
    with `seed`, only one trained with that seed.
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
                seed is None or run.data.tags.get(TAG_REFIT_SEED) == str(seed)):
            return run
    return None


# -- metrics ----------------------------------------------------------------------------------


def score_test_set(y: list[np.ndarray], proba: list[np.ndarray], labels: list[np.ndarray], threshold: float,
                   fps: float) -> dict[str, float]:
    """Pooled frame metrics of `labels` (PR-AUC from `proba`) and bout metrics, over test videos."""
    y_all = np.concatenate(y)
    metrics = frame_metrics(y_all, np.concatenate(labels).astype(float), threshold=0.5)
    metrics["pr_auc"] = frame_metrics(y_all, np.concatenate(proba), threshold=threshold)["pr_auc"]
    metrics.update(bout_metrics(y, labels, fps=fps or None))
    return {key: float(value) for key, value in metrics.items()}


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


@dataclass
class DecisionRule:
    """Threshold and post-processing, chosen on the best trial's out-of-fold predictions only."""

    threshold: float
    rule: str
    postprocess: PostProcess
    scores: dict[str, float]  # what the post-processing tuning measured
    fps: float  # the training videos' frame rate the post-processing sizes are in


@dataclass
class FittedHead:
    head: Any
    params: dict[str, Any]
    epochs: int
    cpu_seconds: float
    wall_seconds: float


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
    raw: dict[str, float]  # pooled over test videos, labels at the threshold
    post: dict[str, float]  # pooled, post-processed labels
    per_video: dict[str, dict[str, float]]
    predict_seconds: float

    @property
    def n_frames(self) -> int:
        return sum(len(v.y) for v in self.videos)


def refit_pair(tracker: Any, pair_run: Any, settings: RefitSettings, cache: Any,
               progress: SearchProgress | None = None) -> Any:
    """The refit run of a pair (reused when current, else trained now). NoResult without a result."""
    progress = progress or SearchProgress(enabled=False)
    client = tracker.client
    tags = pair_run.data.tags
    best = best_trial(client, pair_run)
    dataset = _load_search_dataset(pair_run, settings)
    test_hash = dataset_hash(dataset, "test")
    existing = find_refit(client, pair_run, best.info.run_id, settings.threshold_rule, test_hash, settings.seed)
    if existing is not None:
        return existing
    job = RefitJob(pair_run, best, TrialRecord.from_run(best), tags[TAG_BEHAVIOUR], tags[TAG_BACKBONE],
                   tags[TAG_HEAD], dataset, dataset.split("train"),
                   [e for e in dataset.split("test") if e.labels is not None], test_hash)
    progress.message(f"{job.behaviour} · {job.backbone}+{job.head}: refit of trial {job.record.trial} "
                     "on all training videos")
    if not job.test:
        raise DataError(f"{dataset.path}: no labelled test video; mark at least one labelled video split: test")
    decision = _decision_rule(client, job, settings.threshold_rule)
    weights = tags.get(TAG_WEIGHTS) or None
    backbone = build_backbone(job.backbone, dataset, weights=weights)
    embedded = embed_videos(dataset, backbone, cache, [e.id for e in (*job.train, *job.test)],
                            batch_size=settings.batch_size or int(tags.get(TAG_BATCH_SIZE) or 32),
                            progress=settings.progress)
    y = behaviour_labels(read_video_labels(dataset, embedded.arrays, embedded.n_frames()), job.behaviour)
    fitted = _fit_head(client, job, embedded, y, settings.seed)
    bundle = ModelBundle(
        behaviour=job.behaviour, backbone=job.backbone, weights=weights or backbone_default_weights(backbone),
        backbone_config=backbone.describe(), crop=dataset.crop, heading=dataset.heading,
        individual=dataset.individual, head=fitted.head, threshold=decision.threshold,
        threshold_rule=decision.rule, postprocess=decision.postprocess, info={},
    )
    scores = _score_test(job, bundle, embedded, y)
    run_id = _log_refit(tracker, job, decision, fitted, bundle, scores, embedded, settings.seed)
    progress.message(
        f"{job.behaviour} · {job.backbone}+{job.head}: refit {fitted.epochs} epoch(s) in {fitted.wall_seconds:.0f}s; "
        f"test PR-AUC {scores.raw['pr_auc']:.3f}, F1 {scores.raw['f1']:.3f} -> {scores.post['f1']:.3f} post-processed"
    )
    return client.get_run(run_id)


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


def _decision_rule(client: Any, job: RefitJob, rule: str) -> DecisionRule:
    """Decision rule from the search's out-of-fold predictions only: never a test frame."""
    folds = trial_predictions(client, job.best.info.run_id)
    y_folds, p_folds = [f[1] for f in folds], [f[2] for f in folds]
    threshold = choose_threshold(y_folds, p_folds, rule)
    fps = float(np.median([video_fps(e) for e in job.train]))
    postprocess, scores = tune_postprocess(y_folds, p_folds, threshold, fps=fps)
    return DecisionRule(threshold, rule, postprocess, scores, fps)


def _fit_head(client: Any, job: RefitJob, embedded: EmbeddedVideos, y: dict[str, np.ndarray],
              seed: int) -> FittedHead:
    """The best trial's head trained on every training video for the median of its folds' epochs."""
    params = trial_params(client, job.best.info.run_id)
    # No validation video is left to stop on: the folds' early-stopped epochs say how long to train.
    epochs = max(1, int(round(float(np.median(job.record.fold_epochs or [1])))))
    head = HEADS.build(job.head, **{"seed": seed, **params, "max_epochs": epochs})
    X_train, y_train = [embedded.arrays[e.id] for e in job.train], [y[e.id] for e in job.train]
    cpu_started, wall_started = time.process_time(), time.perf_counter()
    head.fit(X_train, y_train, sample_weights(y_train))
    return FittedHead(head, params, epochs, time.process_time() - cpu_started, time.perf_counter() - wall_started)


def _score_test(job: RefitJob, bundle: ModelBundle, embedded: EmbeddedVideos,
                y: dict[str, np.ndarray]) -> TestScores:
    """Score the refit model once on the labelled test videos: pooled and per video, raw and post-processed."""
    videos, predict_seconds = [], 0.0
    for entry in job.test:
        started = time.perf_counter()
        proba = bundle.head.predict_proba(embedded.arrays[entry.id])
        predict_seconds += time.perf_counter() - started
        raw, post = bundle.decide(proba)
        videos.append(TestVideo(entry.id, y[entry.id], proba, raw, post, video_fps(entry)))
    threshold = bundle.threshold
    fps = float(np.median([v.fps for v in videos]))
    ys, probas = [v.y for v in videos], [v.proba for v in videos]
    raw_metrics = score_test_set(ys, probas, [v.raw for v in videos], threshold, fps)
    post_metrics = score_test_set(ys, probas, [v.post for v in videos], threshold, fps)
    per_video = {}
    for v in videos:
        raw_v = score_test_set([v.y], [v.proba], [v.raw], threshold, v.fps)
        post_v = score_test_set([v.y], [v.proba], [v.post], threshold, v.fps)
        per_video[v.video_id] = {"pr_auc": raw_v["pr_auc"], "f1_raw": raw_v["f1"], "f1_post": post_v["f1"],
                                 "bout_f1_iou50_post": post_v["bout_f1_iou50"], "frames": int(len(v.y)),
                                 "fps": v.fps}
    return TestScores(videos, raw_metrics, post_metrics, per_video, predict_seconds)


def _log_refit(tracker: Any, job: RefitJob, decision: DecisionRule, fitted: FittedHead, bundle: ModelBundle,
               scores: TestScores, embedded: EmbeddedVideos, seed: int) -> str:
    """The refit run, nested under its pair: parameters, test and cost metrics, the model, the predictions."""
    client, pair_run = tracker.client, job.pair_run
    cv = job.best.data.metrics
    compute = {
        "search_cpu_seconds": search_cpu_seconds(client, pair_run),
        "refit_cpu_seconds": fitted.cpu_seconds,
        "refit_train_seconds": fitted.wall_seconds,
        "inference_frames_per_second": scores.n_frames / max(scores.predict_seconds, 1e-9),
        "embedding_seconds_per_frame": embedded.seconds_per_frame,
        "n_params": float(fitted.head.n_params_),
    }
    bundle.info = {
        "source_trial_run": job.best.info.run_id, "pair_run": pair_run.info.run_id,
        "trial": job.record.trial, "params": fitted.params, "epochs": fitted.epochs,
        "dataset": str(job.dataset.path), "dataset_hash": pair_run.data.tags.get(TAG_DATASET_HASH),
        "train_videos": [e.id for e in job.train], "test_videos": [e.id for e in job.test], "fps": decision.fps,
        "cv_pr_auc_mean": job.record.cv_pr_auc_mean, "cv_pr_auc_std": job.record.cv_pr_auc_std,
        "test": {"raw": scores.raw, "post": scores.post}, "decision_scores": decision.scores,
    }
    run_tags = {
        TAG_BACKBONE: job.backbone, TAG_HEAD: job.head, TAG_SOURCE_RUN: job.best.info.run_id,
        TAG_TRIAL: job.best.data.tags.get(TAG_TRIAL, ""), TAG_REFIT_VERSION: REFIT_VERSION,
        TAG_RULE: decision.rule, TAG_REFIT_SEED: str(seed), TAG_TEST_HASH: job.test_hash,
        TAG_TRAIN_HASH: pair_run.data.tags.get(TAG_TRAIN_HASH, ""),
    }
    with tracker.result_run(job.behaviour, KIND_REFIT, f"{job.backbone}+{job.head} refit", run_tags,
                            parent_run_id=pair_run.info.run_id) as run:
        run.log_params({"epochs": fitted.epochs, "threshold": f"{decision.threshold:.6g}",
                        "threshold_rule": decision.rule,
                        **with_prefix(PARAM_POSTPROCESS, decision.postprocess.to_dict()),
                        **with_prefix(PARAM_HEAD, fitted.params)})
        run.log_metrics({
            **with_prefix(TEST, scores.raw),
            **with_prefix(TEST_POST, scores.post),
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
    return run.run_id


def backbone_default_weights(backbone: Any) -> str:
    """The weights argument that rebuilds `backbone` when the search used the default."""
    return str(getattr(backbone, "weights", "none"))


def load_test_predictions(client: Any, refit_run_id: str) -> list[TestVideo]:
    """One `TestVideo` per test video of a refit run, as the refit scored it."""
    with tempfile.TemporaryDirectory(prefix="mbr-test-") as folder:
        path = client.download_artifacts(refit_run_id, prediction_artifact(TEST_PREDICTIONS), folder)
        with np.load(path) as data:
            count = sum(1 for key in data.files if key.startswith("video_"))
            return [TestVideo(str(data[f"video_{k}"]), data[f"y_{k}"], data[f"proba_{k}"], data[f"raw_{k}"],
                              data[f"post_{k}"], float(data[f"fps_{k}"])) for k in range(count)]
