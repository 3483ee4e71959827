"""Ensemble rows: the probabilities of several searched pairs averaged (late fusion).

The second reference scores an RGB stream and an optical-flow stream separately and averages them;
the first names ensembles of its models as future work. An ensemble row does that with pairs of
the board: its members are pairs (`mobilenet_v2+lstm`, `flow_hof+lstm`), each as deployed and
tested on its own row, and the row's probability of a frame is the weighted mean of theirs.

Everything the row chooses comes from the members' out-of-fold predictions (their best trials'
held-out training videos), never from a test frame:

* the weights: for two members the best of 0, 0.1, ..., 1 on the pooled out-of-fold videos; equal
  weights for three or more;
* its CV score: each fold video scored with the weights chosen on the OTHER fold videos (as the
  `mean_curve` protocol chooses a fold's epoch), so no video picks the weights it is scored with;
* the threshold and post-processing: the refit's rule (`postprocess`) on the fused out-of-fold
  probabilities.

The fused test probabilities are then scored once, as any row's; the row's cost is the sum of its
members' (search, refit, embedding per frame of each distinct backbone, parameters) and its
inference rate the members' combined. By default the board adds the two-stream row: the best
appearance pair (an image backbone) with the best motion pair (a flow or track backbone).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ...core.errors import ConfigError
from ..backbones import backbone_kind
from ..heads import HEADS
from ..metrics import frame_metrics
from ..postprocess import PostProcess, choose_threshold, tune_postprocess
from .refit import TestVideo, score_test_set, video_pr_auc
from .types import PairResult, VideoPrediction

ENSEMBLE_HEAD = "ensemble"
MEMBER_SEPARATOR = ","
WEIGHT_STEP = 0.1
# The second reference's two streams: RGB (frames, or I3D clips of frames) and motion (optical flow).
APPEARANCE_KINDS = ("image", "clip")
MOTION_KINDS = ("flow", "track")


@dataclass
class MemberPredictions:
    """What an ensemble reads of one member pair."""

    row: PairResult
    out_of_fold: dict[str, tuple[np.ndarray, np.ndarray]]  # fold video -> (labels, probabilities)


def parse_ensembles(text: str | None) -> list[list[str]]:
    """`--ensemble a+lstm,b+lstm [c+tcn,d+tcn ...]` -> member pair names per ensemble."""
    if not text:
        return []
    members = [name.strip() for name in text.split(MEMBER_SEPARATOR) if name.strip()]
    if len(members) < 2 or len(set(members)) != len(members):
        raise ConfigError(f"--ensemble {text}: give two or more different pairs joined by commas, "
                          "e.g. mobilenet_v2+lstm,flow_hof+lstm")
    return [members]


def two_stream_members(rows: Sequence[PairResult]) -> list[str] | None:
    """The best appearance pair and the best motion pair by CV, or None when either is missing."""
    def best(kinds: tuple[str, ...]) -> PairResult | None:
        ranked = [r for r in rows if r.ok and r.refit_run_id and math.isfinite(r.cv_pr_auc_mean)
                  and _kind(r.backbone) in kinds]
        return max(ranked, key=lambda r: r.cv_pr_auc_mean, default=None)

    appearance, motion = best(APPEARANCE_KINDS), best(MOTION_KINDS)
    return [appearance.pair, motion.pair] if appearance and motion else None


def _kind(backbone: str) -> str | None:
    try:
        return backbone_kind(backbone)
    except Exception:  # a backbone of an older version, no longer registered
        return None


def ensemble_name(members: Sequence[str]) -> str:
    return " & ".join(members)


def candidate_weights(n_members: int) -> list[np.ndarray]:
    if n_members == 2:
        return [np.array([w, 1.0 - w]) for w in np.round(np.arange(0.0, 1.0 + 1e-9, WEIGHT_STEP), 10)]
    return [np.full(n_members, 1.0 / n_members)]


def best_weights(members: Sequence[MemberPredictions], videos: Sequence[str]) -> np.ndarray:
    """The candidate weights with the best mean per-video PR-AUC over `videos`; of equal scores the
    most even (then the first member's larger share)."""
    candidates = candidate_weights(len(members))
    if len(candidates) == 1 or not videos:
        return candidates[len(candidates) // 2] if len(candidates) > 1 else candidates[0]

    def score(weights: np.ndarray) -> float:
        values = [_pr_auc(*_fuse(members, video, weights)) for video in videos]
        finite = [v for v in values if math.isfinite(v)]
        return float(np.mean(finite)) if finite else -math.inf

    scored = [(score(w), -float(np.abs(w - 1.0 / len(w)).sum()), float(w[0]), k) for k, w in enumerate(candidates)]
    return candidates[max(scored)[3]]


def _mix(weights: np.ndarray, probabilities: Sequence[np.ndarray]) -> np.ndarray:
    """The members' probabilities of one video, weighted and summed (float32)."""
    return np.asarray(sum(w * p.astype(np.float64) for w, p in zip(weights, probabilities)), np.float32)


def _fuse(members: Sequence[MemberPredictions], video: str, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return members[0].out_of_fold[video][0], _mix(weights, [m.out_of_fold[video][1] for m in members])


def _pr_auc(y: np.ndarray, proba: np.ndarray) -> float:
    return float(frame_metrics(y, proba)["pr_auc"])


def ensemble_row(behaviour: str, members: Sequence[MemberPredictions], training_fps: float, rule: str
                 ) -> PairResult:
    """The board row of `members` fused (see the module docstring); `row.error` says why not when it cannot be."""
    names = [m.row.pair for m in members]
    row = PairResult(behaviour, ensemble_name(names), ENSEMBLE_HEAD)
    row.members = names
    videos = sorted(set.intersection(*(set(m.out_of_fold) for m in members)))
    tests = [{v.video_id: v for v in m.row.test_videos} for m in members]
    test_ids = sorted(set.intersection(*(set(t) for t in tests)))
    if not videos or not test_ids:
        row.error = ("its members share no " + ("out-of-fold video" if not videos else "test video")
                     + "; ensemble pairs searched on the same dataset")
        return row
    # The CV score: each fold video with the weights chosen on the others.
    for video in videos:
        others = [v for v in videos if v != video]
        weights = best_weights(members, others)
        row.cv_video_scores[video] = _pr_auc(*_fuse(members, video, weights))
    finite = [s for s in row.cv_video_scores.values() if math.isfinite(s)]
    row.cv_pr_auc_mean = float(np.mean(finite)) if finite else math.nan
    row.cv_pr_auc_std = float(np.std(finite, ddof=1)) if len(finite) > 1 else math.nan
    row.cv_n_folds = len(videos)
    # The deployed weights, threshold and post-processing: from all out-of-fold videos.
    weights = best_weights(members, videos)
    row.weights = [float(w) for w in weights]
    fused = [_fuse(members, video, weights) for video in videos]
    row.cv_pr_auc_pooled = _pr_auc(np.concatenate([y for y, _ in fused]), np.concatenate([p for _, p in fused]))
    row.threshold = choose_threshold([y for y, _ in fused], [p for _, p in fused], rule)
    row.threshold_rule = rule
    post, _ = tune_postprocess([y for y, _ in fused], [p for _, p in fused], row.threshold, fps=training_fps)
    row.postprocess = {"closing": post.closing, "opening": post.opening, "min_bout": post.min_bout}
    row.test_videos, scored = [], []
    for video_id in test_ids:
        parts = [t[video_id] for t in tests]
        proba = _mix(weights, [p.proba for p in parts])
        raw = (proba >= row.threshold).astype(np.int8)
        fps = parts[0].fps
        labels = PostProcess(**row.postprocess).at_fps(training_fps, fps).apply(raw).astype(np.int8)
        row.test_videos.append(VideoPrediction(video_id, parts[0].y_true, proba, raw, labels, fps))
        scored.append(TestVideo(video_id, parts[0].y_true, proba, raw, labels, fps))
    per_video, pr_auc = video_pr_auc(scored)
    row.test_video_scores = dict(zip(test_ids, per_video, strict=True))
    fps = float(np.median([v.fps for v in scored]))
    ys = [v.y for v in scored]
    row.test_raw = {**score_test_set(ys, [v.raw for v in scored], fps), **pr_auc}
    row.test_post = {**score_test_set(ys, [v.post for v in scored], fps), **pr_auc}
    _sum_costs(row, [m.row for m in members])
    row.refit_run_id = None  # nothing to deploy as one bundle: predict runs the member pairs
    row.final = "ensemble of pairs"
    row.protocol = ", ".join(sorted({m.row.protocol for m in members if m.row.protocol})) or None
    row.n_trials = sum(m.row.n_trials for m in members)
    return row


def _sum_costs(row: PairResult, members: Sequence[PairResult]) -> None:
    """What the ensemble costs: every member's search and refit, each distinct backbone's embedding once."""
    def total(values: list[float]) -> float:
        finite = [v for v in values if math.isfinite(v)]
        return float(sum(finite)) if finite else math.nan

    row.search_cpu_seconds = total([m.search_cpu_seconds for m in members])
    row.refit_cpu_seconds = total([m.refit_cpu_seconds for m in members])
    # Keyed by what was embedded: a finetune pair's crops and the same backbone's embeddings are two passes.
    by_backbone = {(m.backbone, m.head in HEADS.list() and HEADS.get(m.head).reads_crops): m.embedding_seconds_per_frame
                   for m in members}
    row.embedding_seconds_per_frame = total(list(by_backbone.values()))
    row.n_params = sum(m.n_params for m in members)
    rates = [m.inference_fps for m in members]
    row.inference_fps = 1.0 / sum(1.0 / r for r in rates) if all(math.isfinite(r) and r > 0 for r in rates) else math.nan
