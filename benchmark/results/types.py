"""What the leaderboard knows about one (behaviour, backbone, head) pair, as plain data.

`leaderboard.py` fills these from MLflow; `plots.py` and `report.py` only read them, so the
figures and tables can be built (and tested) without a tracking store.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class VideoPrediction:
    """One test video as the refit model saw it."""

    video_id: str
    y_true: np.ndarray  # (frames,) 0/1 annotation
    proba: np.ndarray  # (frames,) P(behaviour)
    label_raw: np.ndarray  # (frames,) 0/1: proba >= threshold
    label_post: np.ndarray  # (frames,) 0/1: label_raw after post-processing
    fps: float = 0.0


@dataclass
class PairResult:
    """One leaderboard row, plus the per-video data its plots need.

    `test_raw` and `test_post` hold the pooled test-set metrics of the thresholded predictions
    before and after post-processing: accuracy, precision, recall, f1, pr_auc (threshold-free,
    the same in both), and the bout metrics of `benchmark.bouts` (bout_f1_iou10, bout_f1_iou25,
    bout_f1_iou50, bout_count_error, mean_duration_error, ...). Empty when there is no refit.
    """

    behaviour: str
    backbone: str
    head: str
    error: str | None = None  # why the search or the refit has no result; the row still shows
    n_trials: int = 0  # complete trials
    cv_pr_auc_mean: float = math.nan
    cv_pr_auc_std: float = math.nan
    cv_n_folds: int = 0
    best_trial: int | None = None
    params: dict = field(default_factory=dict)
    threshold: float = math.nan
    threshold_rule: str = ""
    postprocess: dict = field(default_factory=dict)  # closing, opening, min_bout (frames)
    test_raw: dict[str, float] = field(default_factory=dict)
    test_post: dict[str, float] = field(default_factory=dict)
    search_cpu_seconds: float = math.nan  # all trials of the search
    refit_cpu_seconds: float = math.nan
    inference_fps: float = math.nan  # head only, frames per second on the test videos
    embedding_seconds_per_frame: float = math.nan  # backbone, from the cache record
    n_params: int = 0  # head parameters
    refit_run_id: str | None = None
    cv_video_scores: dict[str, float] = field(default_factory=dict)  # validation video -> fold PR-AUC
    test_video_scores: dict[str, float] = field(default_factory=dict)  # test video -> PR-AUC
    test_videos: list[VideoPrediction] = field(default_factory=list)

    @property
    def pair(self) -> str:
        return f"{self.backbone}+{self.head}"

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def training_cpu_seconds(self) -> float:
        """Search plus refit: what it cost to get this model."""
        parts = [s for s in (self.search_cpu_seconds, self.refit_cpu_seconds) if math.isfinite(s)]
        return float(sum(parts)) if parts else math.nan


def sort_rows(rows: list[PairResult]) -> list[PairResult]:
    """By CV PR-AUC, best first (never by test score); pairs without a result last, by name."""
    def key(row: PairResult) -> tuple:
        score = row.cv_pr_auc_mean
        has_score = row.ok and math.isfinite(score)
        return (row.behaviour, not has_score, -score if has_score else 0.0, row.pair)

    return sorted(rows, key=key)
