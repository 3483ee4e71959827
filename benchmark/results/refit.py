"""Best trial -> one model trained on all training videos -> one evaluation on the test videos.

For a pair's search, the best complete trial (highest CV PR-AUC) gives the hyperparameters. Its
out-of-fold predictions, stored by the search, choose the decision threshold and tune the
post-processing, so neither ever sees a test frame. The head is then refit on every training
video for the median of the folds' early-stopped epochs (there is no validation video left to
stop on), scored once on the test videos, and saved as a model bundle in its own MLflow run,
nested under the pair. A refit is reused while the best trial and this code stay the same.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...core.errors import DataError
from ..progress import SearchProgress
from ..runner import dataset_hash

REFIT_VERSION = "1"  # bump when a change here makes earlier refits stale
TAG_REFIT_VERSION = "mbr.refit_version"
TAG_RULE = "mbr.threshold_rule"
TAG_REFIT_SEED = "mbr.refit_seed"
TEST_PREDICTIONS = "test_predictions.npz"
TEST_VIDEOS = "test_videos.json"


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
    from ...tracking.queries import TAG_STATE, TAG_TRIAL, trial_runs

    trials = trial_runs(client, pair_run.info.run_id)
    complete = [t for t in trials if t.data.tags.get(TAG_STATE) == "complete"
                and math.isfinite(t.data.metrics.get("cv/pr_auc_mean", math.nan))]
    if complete:
        return max(complete, key=lambda t: (t.data.metrics["cv/pr_auc_mean"], -int(t.data.tags.get(TAG_TRIAL, 0))))
    errors = [t.data.tags.get("mbr.error") for t in trials if t.data.tags.get("mbr.error")]
    if errors:
        counted = "all" if len(errors) == len(trials) else f"{len(errors)} of"
        raise NoResult(f"{counted} {len(trials)} trial(s) failed: {errors[-1]}")
    states = sorted({t.data.tags.get(TAG_STATE, t.info.status.lower()) for t in trials})
    raise NoResult(f"no complete trial ({len(trials)} trial(s): {', '.join(states) or 'none started'})"
                   if trials else "no trial ran")


def search_cpu_seconds(client: Any, pair_run: Any) -> float:
    """CPU seconds of every trial of the pair's search (wall training seconds where CPU was not logged)."""
    from ...tracking.queries import trial_runs

    total = 0.0
    for trial in trial_runs(client, pair_run.info.run_id):
        metrics = trial.data.metrics
        total += metrics.get("compute/cpu_seconds", metrics.get("compute/train_seconds", 0.0))
    return total


def fold_epochs(trial_run: Any) -> list[int]:
    """The early-stopped (best) epoch of each fold of a trial."""
    metrics = trial_run.data.metrics
    return [int(metrics[key]) for key in sorted(metrics) if key.startswith("fold") and key.endswith("/epochs")]


def find_refit(client: Any, pair_run: Any, source_run_id: str, rule: str, test_hash: str | None = None,
               seed: int | None = None) -> Any | None:
    """A finished refit of this pair from `source_run_id` with the same rule and refit code, if any.

    With `test_hash`, only one scored on that same test set (edited test labels mean new scores);
    with `seed`, only one trained with that seed.
    """
    from ...tracking.queries import TAG_TEST_HASH

    from ...tracking.queries import TAG_KIND, TAG_PARENT, TAG_SOURCE_RUN, quote_filter_value, search_all

    runs = search_all(
        client, [pair_run.info.experiment_id],
        f"tags.`{TAG_KIND}` = 'refit' and tags.`{TAG_PARENT}` = {quote_filter_value(pair_run.info.run_id)} "
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
    from ..bouts import bout_metrics
    from ..metrics import frame_metrics

    y_all = np.concatenate(y)
    metrics = frame_metrics(y_all, np.concatenate(labels).astype(float), threshold=0.5)
    metrics["pr_auc"] = frame_metrics(y_all, np.concatenate(proba), threshold=threshold)["pr_auc"]
    metrics.update(bout_metrics(y, labels, fps=fps or None))
    return {key: float(value) for key, value in metrics.items()}


# -- the refit --------------------------------------------------------------------------------


def refit_pair(tracker: Any, pair_run: Any, settings: RefitSettings, cache: Any,
               progress: SearchProgress | None = None) -> Any:
    """The refit run of a pair (reused when current, else trained now). NoResult without a result."""
    from ...tracking.queries import TAG_BACKBONE, TAG_BEHAVIOUR, TAG_HEAD

    progress = progress or SearchProgress(enabled=False)
    client = tracker.client
    tags = pair_run.data.tags
    behaviour, backbone_name, head_name = tags[TAG_BEHAVIOUR], tags[TAG_BACKBONE], tags[TAG_HEAD]
    best = best_trial(client, pair_run)
    dataset = _load_search_dataset(pair_run, settings)
    test_hash = dataset_hash(dataset, "test")
    existing = find_refit(client, pair_run, best.info.run_id, settings.threshold_rule, test_hash, settings.seed)
    if existing is not None:
        return existing
    progress.message(f"{behaviour} · {backbone_name}+{head_name}: refit of trial "
                     f"{best.data.tags.get('mbr.trial')} on all training videos")
    run_id = _refit(tracker, pair_run, best, dataset, test_hash, settings, cache, progress)
    return client.get_run(run_id)


def _load_search_dataset(pair_run: Any, settings: RefitSettings) -> Any:
    from ..data.manifest import load_dataset
    from ...tracking.queries import TAG_DATASET, TAG_TRAIN_HASH

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


def _refit(tracker: Any, pair_run: Any, best: Any, dataset: Any, test_hash: str, settings: RefitSettings,
           cache: Any, progress: SearchProgress) -> str:
    from ..backbones import build_backbone
    from ..bundle import MODEL_ARTIFACT, ModelBundle
    from ..data.labels import read_labels
    from ..features.embed import embed_dataset, video_fps
    from ..features.sequences import sample_weights
    from ..heads import HEADS
    from ..postprocess import choose_threshold, tune_postprocess
    from ...tracking.queries import (
        TAG_BACKBONE,
        TAG_BATCH_SIZE,
        TAG_BEHAVIOUR,
        TAG_HEAD,
        TAG_SOURCE_RUN,
        TAG_TEST_HASH,
        TAG_TRAIN_HASH,
        TAG_TRIAL,
        TAG_WEIGHTS,
        trial_params,
        trial_predictions,
    )

    client = tracker.client
    tags = pair_run.data.tags
    behaviour, backbone_name, head_name = tags[TAG_BEHAVIOUR], tags[TAG_BACKBONE], tags[TAG_HEAD]
    train, test = dataset.split("train"), [e for e in dataset.split("test") if e.labels is not None]
    if not test:
        raise DataError(f"{dataset.path}: no labelled test video; mark at least one labelled video split: test")

    # Decision rule from the search's out-of-fold predictions only: never a test frame.
    params = trial_params(client, best.info.run_id)
    folds = trial_predictions(client, best.info.run_id)
    y_folds, p_folds = [f[1] for f in folds], [f[2] for f in folds]
    threshold = choose_threshold(y_folds, p_folds, settings.threshold_rule)
    fps = float(np.median([video_fps(e) for e in train]))
    postprocess, decision_scores = tune_postprocess(y_folds, p_folds, threshold, fps=fps)
    epochs = max(1, int(round(float(np.median(fold_epochs(best) or [1])))))

    weights = tags.get(TAG_WEIGHTS) or None
    batch_size = settings.batch_size or int(tags.get(TAG_BATCH_SIZE) or 32)
    backbone = build_backbone(backbone_name, dataset, weights=weights)
    results = embed_dataset(dataset, backbone, cache, batch_size=batch_size,
                            video_ids=[e.id for e in (*train, *test)], progress=settings.progress)
    embeddings = {r.video_id: np.load(r.path, mmap_mode="r") for r in results}
    embed_seconds = float(np.mean([r.compute_seconds_per_frame for r in results]))
    y = {e.id: read_labels(e.labels, dataset.behaviours, n_frames=len(embeddings[e.id]), fps=e.fps)[behaviour]
         .to_numpy().astype(np.int8) for e in (*train, *test)}

    head = HEADS.build(head_name, **{"seed": settings.seed, **params, "max_epochs": epochs})
    X_train, y_train = [embeddings[e.id] for e in train], [y[e.id] for e in train]
    cpu_started, wall_started = time.process_time(), time.perf_counter()
    head.fit(X_train, y_train, sample_weights(y_train))
    refit_cpu, refit_wall = time.process_time() - cpu_started, time.perf_counter() - wall_started

    bundle = ModelBundle(
        behaviour=behaviour, backbone=backbone_name, weights=weights or backbone_default_weights(backbone),
        backbone_config=backbone.describe(), crop=dataset.crop, heading=dataset.heading,
        individual=dataset.individual, head=head, threshold=threshold, threshold_rule=settings.threshold_rule,
        postprocess=postprocess, info={},
    )
    videos, predict_seconds = [], 0.0
    for entry in test:
        started = time.perf_counter()
        proba = head.predict_proba(embeddings[entry.id])
        predict_seconds += time.perf_counter() - started
        raw, post = bundle.decide(proba)
        videos.append((entry.id, y[entry.id], proba, raw, post, video_fps(entry)))
    test_fps = float(np.median([v[5] for v in videos]))
    raw_metrics = score_test_set([v[1] for v in videos], [v[2] for v in videos], [v[3] for v in videos],
                               threshold, test_fps)
    post_metrics = score_test_set([v[1] for v in videos], [v[2] for v in videos], [v[4] for v in videos],
                                threshold, test_fps)
    per_video = {}
    for vid, yv, p, r, q, f in videos:
        raw_v, post_v = score_test_set([yv], [p], [r], threshold, f), score_test_set([yv], [p], [q], threshold, f)
        per_video[vid] = {"pr_auc": raw_v["pr_auc"], "f1_raw": raw_v["f1"], "f1_post": post_v["f1"],
                          "bout_f1_iou50_post": post_v["bout_f1_iou50"], "frames": int(len(yv)), "fps": f}
    n_test_frames = sum(len(v[1]) for v in videos)
    cv = best.data.metrics
    compute = {
        "search_cpu_seconds": search_cpu_seconds(client, pair_run),
        "refit_cpu_seconds": refit_cpu,
        "refit_train_seconds": refit_wall,
        "inference_frames_per_second": n_test_frames / max(predict_seconds, 1e-9),
        "embedding_seconds_per_frame": embed_seconds,
        "n_params": float(head.n_params_),
    }
    bundle.info = {
        "source_trial_run": best.info.run_id, "pair_run": pair_run.info.run_id,
        "trial": int(best.data.tags.get(TAG_TRIAL, -1)), "params": params, "epochs": epochs,
        "dataset": str(dataset.path), "dataset_hash": tags.get("mbr.dataset_hash"),
        "train_videos": [e.id for e in train], "test_videos": [e.id for e in test], "fps": fps,
        "cv_pr_auc_mean": cv.get("cv/pr_auc_mean"), "cv_pr_auc_std": cv.get("cv/pr_auc_std"),
        "test": {"raw": raw_metrics, "post": post_metrics}, "decision_scores": decision_scores,
    }

    run_tags = {
        TAG_BACKBONE: backbone_name, TAG_HEAD: head_name, TAG_SOURCE_RUN: best.info.run_id,
        TAG_TRIAL: best.data.tags.get(TAG_TRIAL, ""), TAG_REFIT_VERSION: REFIT_VERSION,
        TAG_RULE: settings.threshold_rule, TAG_REFIT_SEED: str(settings.seed), TAG_TEST_HASH: test_hash,
        TAG_TRAIN_HASH: tags.get(TAG_TRAIN_HASH, ""),
    }
    with tracker.result_run(behaviour, "refit", f"{backbone_name}+{head_name} refit", run_tags,
                            parent_run_id=pair_run.info.run_id) as run:
        run.log_params({"epochs": epochs, "threshold": f"{threshold:.6g}", "threshold_rule": settings.threshold_rule,
                        **{f"postprocess.{k}": v for k, v in postprocess.to_dict().items()},
                        **{f"head.{k}": v for k, v in params.items()}})
        run.log_metrics({
            **{f"test/{k}": v for k, v in raw_metrics.items()},
            **{f"test_post/{k}": v for k, v in post_metrics.items()},
            **{f"compute/{k}": v for k, v in compute.items()},
            **{f"cv/{k}": cv[f"cv/{k}"] for k in ("pr_auc_mean", "pr_auc_std", "n_folds") if f"cv/{k}" in cv},
            "decision/threshold": threshold,
            **{f"decision/{k}": v for k, v in decision_scores.items()},
        })
        with tempfile.TemporaryDirectory(prefix="mbr-refit-") as folder:
            bundle.save(Path(folder) / MODEL_ARTIFACT)
            run.log_artifact(Path(folder) / MODEL_ARTIFACT)
            arrays: dict[str, np.ndarray] = {}
            for k, (vid, yv, p, r, q, f) in enumerate(videos):
                arrays.update({f"video_{k}": np.array(vid), f"y_{k}": yv, f"proba_{k}": p, f"raw_{k}": r,
                               f"post_{k}": q, f"fps_{k}": np.array(f)})
            np.savez_compressed(Path(folder) / TEST_PREDICTIONS, **arrays)
            run.log_artifact(Path(folder) / TEST_PREDICTIONS, "predictions")
        run.log_dict(per_video, f"predictions/{TEST_VIDEOS}")
        run.log_dict(json.loads(json.dumps(bundle.info, default=float)), "refit.json")
    progress.message(
        f"{behaviour} · {backbone_name}+{head_name}: refit {epochs} epoch(s) in {refit_wall:.0f}s; test PR-AUC "
        f"{raw_metrics['pr_auc']:.3f}, F1 {raw_metrics['f1']:.3f} -> {post_metrics['f1']:.3f} post-processed"
    )
    return run.run_id


def backbone_default_weights(backbone: Any) -> str:
    """The weights argument that rebuilds `backbone` when the search used the default."""
    return str(getattr(backbone, "weights", "none"))


def load_test_predictions(client: Any, refit_run_id: str) -> list[tuple]:
    """(video id, y, proba, raw labels, post-processed labels, fps) per test video of a refit run."""
    with tempfile.TemporaryDirectory(prefix="mbr-test-") as folder:
        path = client.download_artifacts(refit_run_id, f"predictions/{TEST_PREDICTIONS}", folder)
        with np.load(path) as data:
            count = sum(1 for key in data.files if key.startswith("video_"))
            return [(str(data[f"video_{k}"]), data[f"y_{k}"], data[f"proba_{k}"], data[f"raw_{k}"],
                     data[f"post_{k}"], float(data[f"fps_{k}"])) for k in range(count)]
