"""What the leaderboard knows about one (behaviour, backbone, head) pair, as plain data, and the
statistics the board derives from it.

`leaderboard.py` fills these from MLflow; `plots.py` and `report.py` only read them, so the
figures and tables can be built (and tested) without a tracking store. `fill_statistics` completes
the derived fields of a behaviour's rows (standard error, per-video and pooled test PR-AUC, the
bootstrap interval, the paired difference to the top row); the report calls it before rendering,
so rows built by hand and rows read from older runs show the same columns.

The board's primary accuracy on both sides is the mean over videos of per-video PR-AUC (CV: over
the held-out videos of the folds; test: over the test videos); PR-AUC of all frames pooled is
secondary. Uncertainty: CV as mean ± standard error over folds; test as a seeded percentile
bootstrap interval over test videos (over bouts when there is one test video); and, for each row,
the paired difference to the top row over the folds both share.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats
from sklearn.metrics import average_precision_score

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_LEVEL = 0.95
BOOTSTRAP_SEED = 0
PAIRED_LEVEL = 0.95  # two-sided level of the paired t test against the top row
UNIT_VIDEOS, UNIT_BOUTS = "videos", "bouts"  # what a test interval resampled


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

    `test_raw` and `test_post` hold the test-set metrics of the thresholded predictions before and
    after post-processing, as the refit logged them under ``test/`` and ``test_post/``: accuracy,
    precision, recall, f1 (pooled frames), pr_auc_mean and pr_auc_pooled (threshold-free; older
    runs hold the pooled one as pr_auc), and the bout metrics of `benchmark.bouts` (bout_f1_iou10,
    bout_f1_iou25, bout_f1_iou50, bout_count_error, mean_duration_error, ...). Empty when there is
    no refit.

    The fields from `test_pr_auc_mean` to `top_pair` are what the board shows; `fill_statistics`
    completes them where the runs did not log them.
    """

    behaviour: str
    backbone: str
    head: str
    error: str | None = None  # why the search or the refit has no result; the row still shows
    n_trials: int = 0  # complete trials
    cv_pr_auc_mean: float = math.nan  # mean over folds of the held-out video's PR-AUC: the objective
    cv_pr_auc_std: float = math.nan  # sample standard deviation over folds
    cv_n_folds: int = 0
    cv_pr_auc_se: float = math.nan  # standard error of the mean over folds
    cv_pr_auc_pooled: float = math.nan  # PR-AUC of the out-of-fold frames of all folds pooled
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
    final: str | None = None  # what the refit run deploys: "ensemble" (the fold models) or "refit"
    protocol: str | None = None  # how the search chose each fold's training length (mbr.protocol)
    cv_video_scores: dict[str, float] = field(default_factory=dict)  # validation video -> fold PR-AUC
    test_video_scores: dict[str, float] = field(default_factory=dict)  # test video -> PR-AUC
    test_videos: list[VideoPrediction] = field(default_factory=list)
    # -- shown on the board (completed by `fill_statistics`)
    test_pr_auc_mean: float = math.nan  # mean over test videos of per-video PR-AUC
    test_pr_auc_pooled: float = math.nan  # PR-AUC of all test frames pooled
    test_ci: tuple[float, float] = (math.nan, math.nan)  # bootstrap interval of test_pr_auc_mean
    test_ci_unit: str = ""  # UNIT_VIDEOS or UNIT_BOUTS: what the interval resampled; "" without one
    delta_top_mean: float = math.nan  # mean over shared folds of (this row - top row) fold PR-AUC
    delta_top_se: float = math.nan  # its standard error
    delta_top_n: int = 0  # folds shared with the top row
    indistinguishable: bool = False  # not told apart from the top row by the paired t test
    top_pair: str | None = None  # the pair the paired difference is taken against (itself on the top row)
    best_run_id: str | None = None  # the best trial's MLflow run (its out-of-fold predictions)
    members: list[str] = field(default_factory=list)  # an ensemble row's pairs (results/ensemble.py)
    weights: list[float] = field(default_factory=list)  # and the weight of each

    @property
    def pair(self) -> str:
        return self.backbone if self.members else f"{self.backbone}+{self.head}"

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def is_top(self) -> bool:
        """The row the others are compared with: the best CV score of its behaviour."""
        return self.top_pair is not None and self.top_pair == self.pair

    @property
    def training_cpu_seconds(self) -> float:
        """Search plus refit: what it cost to get this model."""
        parts = [s for s in (self.search_cpu_seconds, self.refit_cpu_seconds) if math.isfinite(s)]
        return float(sum(parts)) if parts else math.nan


def sort_rows(rows: list[PairResult]) -> list[PairResult]:
    """By CV PR-AUC (per-video mean), best first (never by test score); pairs without a result last, by name."""
    def key(row: PairResult) -> tuple:
        score = row.cv_pr_auc_mean
        has_score = row.ok and math.isfinite(score)
        return (row.behaviour, not has_score, -score if has_score else 0.0, row.pair)

    return sorted(rows, key=key)


# --------------------------------------------------------------------------- statistics


def _finite(values) -> np.ndarray:
    array = np.asarray(list(values), dtype=float).ravel()
    return array[np.isfinite(array)]


def standard_error(values) -> float:
    """Sample standard deviation (ddof=1) over sqrt(n) of the finite values; NaN with fewer than 2."""
    x = _finite(values)
    return float(x.std(ddof=1) / math.sqrt(x.size)) if x.size >= 2 else math.nan


def pr_auc(y_true, proba) -> float:
    """Average precision of one set of frames (as `benchmark.metrics.frame_metrics`); NaN without a positive."""
    y = np.asarray(y_true).ravel().astype(bool)
    if not y.any():
        return math.nan
    return float(average_precision_score(y.astype(np.int8), np.asarray(proba, dtype=float).ravel()))


def _percentile_interval(values: np.ndarray, level: float) -> tuple[float, float]:
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(values, [alpha, 1.0 - alpha])
    return float(low), float(high)


def bootstrap_mean_interval(values, n_resamples: int = BOOTSTRAP_RESAMPLES, level: float = BOOTSTRAP_LEVEL,
                            seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (one per unit, e.g. per test video).

    Resamples the finite values with replacement `n_resamples` times (seeded: the same values give
    the same interval) and returns the (1 - level)/2 and (1 + level)/2 quantiles of the resampled
    means; (NaN, NaN) with fewer than 2 finite values.
    """
    x = _finite(values)
    if x.size < 2:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(int(n_resamples), x.size))].mean(axis=1)
    return _percentile_interval(means, level)


def bout_segments(y_true) -> list[tuple[int, int]]:
    """(start, stop) frames of the segments of one video cut at the midpoints between consecutive
    positive bouts: each segment holds exactly one bout, and together they cover the video."""
    y = np.asarray(y_true).ravel().astype(bool).astype(np.int8)
    if not y.size or not y.any():
        return []
    edges = np.diff(np.concatenate(([0], y, [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)  # ends exclusive
    cuts = [(int(end) + int(start)) // 2 for end, start in zip(ends[:-1], starts[1:])]
    bounds = [0, *cuts, int(y.size)]
    return list(itertools.pairwise(bounds))


def _weighted_average_precision(y_sorted: np.ndarray, weights: np.ndarray, last: np.ndarray) -> np.ndarray:
    """Average precision of frames sorted by descending score, each frame counted `weights` times.

    `weights` is (resamples, frames); `last` the index of the last frame of each run of equal
    scores (sklearn's thresholds). Equal to `average_precision_score` on the frames repeated.
    """
    tps = np.cumsum(weights * y_sorted, axis=1)[:, last]
    fps = np.cumsum(weights * (1.0 - y_sorted), axis=1)[:, last]
    predicted = tps + fps
    precision = np.divide(tps, predicted, out=np.zeros_like(tps), where=predicted > 0)
    total = tps[:, -1:]
    recall_steps = np.diff(tps, axis=1, prepend=0.0) / np.where(total > 0, total, 1.0)
    ap = np.sum(recall_steps * precision, axis=1)
    return np.where(total[:, 0] > 0, ap, np.nan)


def bout_bootstrap_interval(y_true, proba, n_resamples: int = BOOTSTRAP_RESAMPLES, level: float = BOOTSTRAP_LEVEL,
                            seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Percentile bootstrap interval of one video's PR-AUC over its bouts.

    The video is cut into `bout_segments` (one positive bout each); each resample draws as many
    segments as there are, with replacement, concatenates them and takes the PR-AUC (computed as
    frame weights, which is the same number). (NaN, NaN) with fewer than 2 bouts.
    """
    y = np.asarray(y_true).ravel().astype(bool)
    p = np.asarray(proba, dtype=float).ravel()
    if y.shape != p.shape:
        raise ValueError(f"y_true has {y.size} frames but proba has {p.size}")
    segments = bout_segments(y)
    k = len(segments)
    if k < 2:
        return (math.nan, math.nan)
    segment_of_frame = np.repeat(np.arange(k), [stop - start for start, stop in segments])
    order = np.argsort(p, kind="mergesort")[::-1]  # sklearn's order: descending, stable
    p_sorted, y_sorted, segment_sorted = p[order], y[order].astype(float), segment_of_frame[order]
    last = np.r_[np.flatnonzero(np.diff(p_sorted)), p_sorted.size - 1]
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(k, np.full(k, 1.0 / k), size=int(n_resamples)).astype(float)
    chunk = max(1, int(4_000_000 // max(p.size, 1)))  # bound the (resamples, frames) working arrays
    scores = np.concatenate([
        _weighted_average_precision(y_sorted, counts[i:i + chunk][:, segment_sorted], last)
        for i in range(0, counts.shape[0], chunk)
    ])
    return _percentile_interval(scores[np.isfinite(scores)], level)


@dataclass(frozen=True)
class BootstrapInterval:
    low: float
    high: float
    unit: str  # UNIT_VIDEOS, UNIT_BOUTS, or "" without an interval
    n_units: int


def bootstrap_test_interval(video_scores: Mapping[str, float], videos: Sequence[VideoPrediction] = (),
                  n_resamples: int = BOOTSTRAP_RESAMPLES, level: float = BOOTSTRAP_LEVEL,
                  seed: int = BOOTSTRAP_SEED) -> BootstrapInterval:
    """The bootstrap interval of the test per-video PR-AUC: over test videos, or over the bouts of
    the only test video (`videos` gives its frames). No interval (NaN) with fewer than 2 units."""
    n_videos = max(len(video_scores), len(videos))
    if n_videos >= 2:
        scores = _finite(list(video_scores.values()))
        low, high = bootstrap_mean_interval(scores, n_resamples, level, seed)
        return BootstrapInterval(low, high, UNIT_VIDEOS if math.isfinite(low) else "", int(scores.size))
    if len(videos) == 1:
        video = videos[0]
        n_bouts = len(bout_segments(video.y_true))
        low, high = bout_bootstrap_interval(video.y_true, video.proba, n_resamples, level, seed)
        return BootstrapInterval(low, high, UNIT_BOUTS if math.isfinite(low) else "", n_bouts)
    return BootstrapInterval(math.nan, math.nan, "", n_videos)


@dataclass(frozen=True)
class PairedDifference:
    mean: float  # mean over shared folds of d_k = row_k - top_k
    se: float  # sample sd of d over sqrt(n); NaN with n < 2
    n: int  # folds shared (same held-out video, finite score on both sides)
    indistinguishable: bool  # |mean| <= t_{(1+level)/2, n-1} * se, or n < 2


def paired_difference(scores: Mapping[str, float], top_scores: Mapping[str, float],
                      level: float = PAIRED_LEVEL) -> PairedDifference:
    """Paired difference of one row's fold PR-AUC to the top row's, over the held-out videos both have."""
    shared = [video for video in scores if video in top_scores]
    d = np.array([float(scores[v]) - float(top_scores[v]) for v in shared], dtype=float)
    d = d[np.isfinite(d)]
    n = int(d.size)
    mean = float(d.mean()) if n else math.nan
    if n < 2:
        return PairedDifference(mean, math.nan, n, True)
    se = float(d.std(ddof=1) / math.sqrt(n))
    critical = float(stats.t.ppf((1.0 + level) / 2.0, n - 1))
    return PairedDifference(mean, se, n, bool(abs(mean) <= critical * se))


def _test_video_scores(row: PairResult) -> dict[str, float]:
    """Per-video test PR-AUC: as the refit logged it, else computed from the predictions."""
    if row.test_video_scores:
        return dict(row.test_video_scores)
    return {video.video_id: pr_auc(video.y_true, video.proba) for video in row.test_videos}


def _pooled_test_pr_auc(row: PairResult) -> float:
    if row.test_videos:
        y = np.concatenate([np.asarray(v.y_true).ravel() for v in row.test_videos])
        proba = np.concatenate([np.asarray(v.proba).ravel() for v in row.test_videos])
        return pr_auc(y, proba)
    return float(row.test_raw.get("pr_auc", math.nan))  # older refits: "pr_auc" was the pooled one


def _fill_row(row: PairResult) -> None:
    if not math.isfinite(row.cv_pr_auc_se):
        row.cv_pr_auc_se = standard_error(row.cv_video_scores.values())
    if not (row.test_videos or row.test_video_scores or row.test_raw):
        return
    scores = None
    if not math.isfinite(row.test_pr_auc_mean):
        logged = float(row.test_raw.get("pr_auc_mean", math.nan))
        if math.isfinite(logged):
            row.test_pr_auc_mean = logged
        else:
            scores = _test_video_scores(row)
            finite = _finite(list(scores.values()))
            row.test_pr_auc_mean = float(finite.mean()) if finite.size else math.nan
    if not math.isfinite(row.test_pr_auc_pooled):
        logged = float(row.test_raw.get("pr_auc_pooled", math.nan))
        row.test_pr_auc_pooled = logged if math.isfinite(logged) else _pooled_test_pr_auc(row)
    if not row.test_ci_unit:
        interval = bootstrap_test_interval(scores if scores is not None else _test_video_scores(row), row.test_videos)
        row.test_ci, row.test_ci_unit = (interval.low, interval.high), interval.unit


def fill_statistics(rows: list[PairResult]) -> list[PairResult]:
    """Complete the board's derived fields of `rows` in place and return them.

    Per row: the CV standard error from the fold scores where none was logged; the test per-video
    mean and pooled PR-AUC where the refit did not log them (from the per-video scores and the
    predictions); the bootstrap interval of the test per-video mean. Per behaviour: the top row (best
    CV per-video mean, `sort_rows` order) and every other row's paired difference to it. Running it
    again changes nothing; the paired differences are always taken within the rows given.
    """
    for row in rows:
        if row.ok:
            _fill_row(row)
    by_behaviour: dict[str, list[PairResult]] = {}
    for row in sort_rows(list(rows)):
        by_behaviour.setdefault(row.behaviour, []).append(row)
    for behaviour_rows in by_behaviour.values():
        ranked = [r for r in behaviour_rows if r.ok and math.isfinite(r.cv_pr_auc_mean)]
        top = ranked[0] if ranked else None
        for row in behaviour_rows:
            row.delta_top_mean, row.delta_top_se, row.delta_top_n = math.nan, math.nan, 0
            row.indistinguishable = False
            compared = top is not None and any(row is r for r in ranked)
            row.top_pair = top.pair if compared else None
            if not compared or row is top:
                continue
            difference = paired_difference(row.cv_video_scores, top.cv_video_scores)
            row.delta_top_mean, row.delta_top_se = difference.mean, difference.se
            row.delta_top_n, row.indistinguishable = difference.n, difference.indistinguishable
    return rows
