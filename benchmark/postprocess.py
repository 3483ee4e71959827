"""Turning per-frame probabilities into clean bouts: the decision threshold and morphological smoothing.

Both are tuned on the out-of-fold predictions of cross-validation, never on the test videos, so
the test score stays an honest estimate of what a user will see.

* The threshold: the one maximising pooled F1 over the folds (`max_f1`), or the highest one whose
  pooled recall reaches a target (`recall:0.9`), for users who would rather review false alarms
  than miss bouts. A frame is positive when its probability is >= the threshold, as in
  `metrics.py`.
* The smoothing: per-frame classifiers flicker, splitting one bout into several and adding
  one-frame blips. Morphological closing (fills gaps shorter than its size), then opening
  (removes runs shorter than its size), then dropping bouts shorter than a minimum length repair
  this. Sizes are in frames, chosen from a grid built in seconds so that data at different frame
  rates get comparable windows, by the mean over folds of (frame F1 + bout F1 at IoU 0.5) / 2:
  frame F1 alone barely notices a split bout, bout F1 alone ignores how much of it is covered.

At the start and end of a video neither step shrinks a bout cut by the edge, and neither invents
one. Opening takes the video to continue as it starts and ends (borders replicate the edge frame):
a window there only sees its inner half, so an edge run of at least (size + 1) / 2 frames is kept.
Closing only fills a gap between two positive runs: a gap touching the start or end of the video is
never filled, since nothing says a bout lies beyond it (the video is taken to have no behaviour
outside itself). Neither step can create a positive frame outside the span of the input's positives:
closing only adds frames between its first and last positive, opening only removes frames.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
from scipy.ndimage import maximum_filter1d, minimum_filter1d

from ..core.errors import ConfigError
from .bouts import binary_frames, bout_metrics
from .data.labels import bout_spans
from .metrics import pr_curve

THRESHOLD_RULES = ("max_f1", "recall:<target>")
# Seconds behind default_grid; 0 s means "off" (a size of 1 frame).
GRID_SECONDS = {"closing": (0.0, 0.2, 0.5, 1.0), "opening": (0.0, 0.2, 0.5), "min_bout": (0.0, 0.2, 0.5, 1.0)}
_SIZES = ("closing", "opening", "min_bout")
# Scores this close are ties, broken in favour of doing less.
_SCORE_TIE = 1e-12


# --------------------------------------------------------------------------------------------
# morphology


def closing(labels, size: int) -> np.ndarray:
    """Dilation then erosion with a flat window of `size` frames: fills gaps shorter than `size`.

    Only a gap between two positive runs is filled. A gap touching the start or end of the video is
    never filled, whatever its length: the video is closed as if it were preceded and followed by
    negative frames, so closing never sets a frame before the first positive or after the last one
    (with replicated borders, `0011111000` closed with size 5 became `1111111000`). Closing never
    removes a positive either, so a run touching an edge is kept whole.

    Args:
        labels: per-frame 0/1 predictions of one video (1-D).
        size: window length in frames, odd and >= 1 (1 leaves the labels unchanged).

    Returns:
        int8 0/1 array of the same length.
    """
    size = _check_window(size, "closing")
    y = binary_frames(labels, "labels").astype(np.int8)
    if size == 1 or not y.any():
        return y
    # `size` negative frames each side: the dilation of a frame of y reads at most size // 2 frames
    # past it and the erosion as many again, so neither filter ever reaches a border of the padded
    # array, and its border mode cannot matter.
    padded = np.pad(y, size)
    closed = minimum_filter1d(maximum_filter1d(padded, size, mode="constant", cval=0), size, mode="nearest")
    return closed[size:-size]


def opening(labels, size: int) -> np.ndarray:
    """Erosion then dilation with a flat window of `size` frames: removes runs shorter than `size`.

    A run touching the start or end of the video is kept when it is at least (size + 1) / 2
    frames long, since the video is taken to continue as it ends. Opening never creates a positive:
    its result is 1 only where the labels are.

    Args:
        labels: per-frame 0/1 predictions of one video (1-D).
        size: window length in frames, odd and >= 1 (1 leaves the labels unchanged).

    Returns:
        int8 0/1 array of the same length.
    """
    return _two_filters(labels, _check_window(size, "opening"), minimum_filter1d, maximum_filter1d)


def _two_filters(labels, size: int, first, second) -> np.ndarray:
    """`second(first(labels))` with a flat window of `size` frames; the ends are taken to continue.

    Used for opening only: with replicated borders a closing would fill gaps touching an edge.
    """
    y = binary_frames(labels, "labels").astype(np.int8)
    if size == 1 or y.size == 0:
        return y
    return second(first(y, size, mode="nearest"), size, mode="nearest")


def remove_short_bouts(labels, min_frames: int) -> np.ndarray:
    """Set to 0 every positive bout shorter than `min_frames` frames (1 keeps every bout); int8."""
    min_frames = _check_min_bout(min_frames)
    y = binary_frames(labels, "labels").astype(np.int8)
    if min_frames == 1:
        return y
    spans = bout_spans(y)
    short = spans[spans[:, 1] - spans[:, 0] < min_frames]
    # +1 at each short bout's start, -1 at its stop: the running sum is 1 exactly inside them.
    marks = np.zeros(y.size + 1, dtype=np.int64)
    marks[short[:, 0]] += 1
    marks[short[:, 1]] -= 1
    y[np.cumsum(marks[:-1]) > 0] = 0
    return y


@dataclass(frozen=True)
class PostProcess:
    """Closing, then opening, then removal of bouts shorter than `min_bout`; sizes in frames, 1 = off."""

    closing: int = 1
    opening: int = 1
    min_bout: int = 1

    def __post_init__(self) -> None:
        # Stored as plain ints so that equal settings compare, hash and serialise the same.
        object.__setattr__(self, "closing", _check_window(self.closing, "closing"))
        object.__setattr__(self, "opening", _check_window(self.opening, "opening"))
        object.__setattr__(self, "min_bout", _check_min_bout(self.min_bout))

    def apply(self, labels) -> np.ndarray:
        """The post-processed int8 0/1 labels of one video (1-D)."""
        y = closing(labels, self.closing)
        y = opening(y, self.opening)
        return remove_short_bouts(y, self.min_bout)

    def at_fps(self, tuned_fps: float | None, fps: float | None) -> PostProcess:
        """The same durations in frames of another rate: sizes are tuned in frames of the training videos.

        Closing and opening stay odd (nearest, as `default_grid` rounds), min_bout the nearest whole
        number; a size of 1 (off) stays off. Unknown rates, or rates within 1 %, change nothing.
        """
        if not tuned_fps or not fps or abs(fps - tuned_fps) <= 0.01 * tuned_fps:
            return self
        scale = fps / tuned_fps

        def odd(size: int) -> int:
            return 1 if size == 1 else 2 * math.floor(size * scale / 2) + 1

        min_bout = 1 if self.min_bout == 1 else max(1, math.floor(self.min_bout * scale + 0.5))
        return PostProcess(odd(self.closing), odd(self.opening), min_bout)

    @property
    def is_identity(self) -> bool:
        return self.closing == 1 and self.opening == 1 and self.min_bout == 1

    @property
    def total_size(self) -> int:
        """closing + opening + min_bout: how much smoothing this does, for breaking ties."""
        return self.closing + self.opening + self.min_bout

    def to_dict(self) -> dict[str, int]:
        return {"closing": self.closing, "opening": self.opening, "min_bout": self.min_bout}

    @classmethod
    def from_dict(cls, d: Mapping[str, int]) -> PostProcess:
        """From `to_dict`'s output; missing sizes are 1 (off), unknown keys raise ConfigError."""
        if not isinstance(d, Mapping):
            raise ConfigError(f"post-processing settings must be a mapping of {', '.join(_SIZES)}, got {d!r}")
        unknown = sorted(str(k) for k in d if k not in _SIZES)
        if unknown:
            raise ConfigError(
                f"unknown post-processing setting(s) {', '.join(unknown)}; use only {', '.join(_SIZES)}"
            )
        return cls(**dict(d))


# --------------------------------------------------------------------------------------------
# threshold


def parse_threshold_rule(rule: str) -> tuple[str, float | None]:
    """('max_f1', None) or ('recall', target); ConfigError for anything else.

    Accepted forms: 'max_f1', and 'recall:<target>' with a target in (0, 1], such as 'recall:0.9'.
    """
    if isinstance(rule, str):
        text = rule.strip().lower()
        if text == "max_f1":
            return "max_f1", None
        name, sep, value = text.partition(":")
        if name.strip() == "recall" and sep:
            try:
                target = float(value)
            except ValueError:
                target = math.nan
            if 0.0 < target <= 1.0:  # False for NaN
                return "recall", target
    raise ConfigError(
        f"threshold rule {rule!r} is not understood; use 'max_f1' or 'recall:<target>' "
        "with a target in (0, 1], such as 'recall:0.9'"
    )


def choose_threshold(y_folds: Sequence[np.ndarray], p_folds: Sequence[np.ndarray], rule: str = "max_f1") -> float:
    """The decision threshold, from the out-of-fold predictions of the CV folds, pooled.

    Args:
        y_folds: per fold, the 0/1 labels of its validation frames.
        p_folds: per fold, the out-of-fold probabilities of the same frames.
        rule: 'max_f1' (the threshold with the highest pooled F1; of equal F1, the highest
            threshold) or 'recall:<target>' (the highest threshold whose pooled recall >= target).

    Returns:
        A threshold among the pooled probabilities (sklearn's precision-recall curve thresholds);
        a frame is positive when its probability is >= it.
    """
    kind, target = parse_threshold_rule(rule)
    y, p = _pool(y_folds, p_folds)
    if not y.any():
        raise ValueError("no positive frame in any fold: no threshold can be chosen without a positive example")
    _, _, thresholds = pr_curve(y, p)
    # Exact counts at each threshold (rather than sklearn's float ratios), so ties are exact.
    pos, neg = np.sort(p[y == 1]), np.sort(p[y == 0])
    tp = pos.size - np.searchsorted(pos, thresholds, side="left")
    fp = neg.size - np.searchsorted(neg, thresholds, side="left")
    if kind == "max_f1":
        f1 = 2 * tp / (tp + fp + pos.size)  # 2tp / (2tp + fp + fn) with fn = n_pos - tp
        candidates = np.flatnonzero(f1 == f1.max())
    else:
        # The lowest threshold has recall 1, so a target in (0, 1] is always reached.
        candidates = np.flatnonzero(tp / pos.size >= target)
    return float(thresholds[candidates[-1]])  # thresholds ascend: the last is the highest


# --------------------------------------------------------------------------------------------
# tuning


def default_grid(fps: float) -> dict[str, list[int]]:
    """Candidate sizes in frames for `tune_postprocess`, from `GRID_SECONDS` at `fps`.

    Closing and opening sizes are the nearest odd number of frames (halfway rounds up), min_bout
    the nearest whole number >= 1; 0 s is 1 frame (off). Each list is sorted, without repeats.
    """
    if isinstance(fps, bool) or not isinstance(fps, Real) or not (fps > 0 and math.isfinite(fps)):
        raise ConfigError(f"fps is {fps!r}; set a positive frame rate for the dataset (fps in dataset.yaml)")
    grid: dict[str, list[int]] = {}
    for name, seconds in GRID_SECONDS.items():
        frames = [s * fps for s in seconds]
        if name == "min_bout":
            sizes = [max(1, math.floor(f + 0.5)) for f in frames]
        else:
            sizes = [2 * math.floor(f / 2) + 1 for f in frames]  # odd 2k+1 nearest to f in [2k, 2k+2)
        grid[name] = sorted(set(sizes))
    return grid


def tune_postprocess(
    y_folds: Sequence[np.ndarray],
    p_folds: Sequence[np.ndarray],
    threshold: float,
    grid: Mapping[str, Sequence[int]] | None = None,
    fps: float = 30.0,
) -> tuple[PostProcess, dict[str, float]]:
    """The post-processing that best repairs the thresholded out-of-fold predictions of the CV folds.

    Every combination of the grid, and the identity, is applied to each fold's predictions
    (proba >= threshold). A fold scores (frame F1 + bout F1 at IoU 0.5) / 2; a fold with neither a
    true nor a predicted bout has no bout F1 and is skipped. A combination scores the mean over
    folds; of equal scores, the one with the smallest closing + opening + min_bout wins.

    Args:
        y_folds: per fold, the 0/1 labels of its validation frames, in video order (one video per
            fold, or the fold's videos concatenated; bouts are matched within the array).
        p_folds: per fold, the out-of-fold probabilities of the same frames.
        threshold: the decision threshold, e.g. from `choose_threshold`.
        grid: candidate sizes per setting ('closing', 'opening', 'min_bout'; a missing one is
            [1]); default `default_grid(fps)`.
        fps: the frame rate, for the default grid.

    Returns:
        The chosen PostProcess and {'score_raw': identity's score, 'score_post': the chosen one's}.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, Real) or not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
    sizes = _check_grid(default_grid(fps) if grid is None else grid)
    y, p = _fold_pairs(y_folds, p_folds)
    if not any(yf.any() for yf in y):
        raise ValueError("no positive frame in any fold: post-processing cannot be tuned without a true bout")
    raw = [(pf >= threshold).astype(np.int8) for pf in p]

    scores: dict[PostProcess, float] = {PostProcess(): _score(y, raw)}
    # Closing and opening results are shared by every later size: compute each once.
    for c in sizes["closing"]:
        closed = [closing(x, c) for x in raw]
        for o in sizes["opening"]:
            opened = [opening(x, o) for x in closed]
            for m in sizes["min_bout"]:
                candidate = PostProcess(c, o, m)
                if candidate not in scores:
                    scores[candidate] = _score(y, [remove_short_bouts(x, m) for x in opened])
    finite = {pp: s for pp, s in scores.items() if not math.isnan(s)}
    best_score = max(finite.values())
    tied = [pp for pp, s in finite.items() if s >= best_score - _SCORE_TIE]
    chosen = min(tied, key=lambda pp: (pp.total_size, pp.closing, pp.opening, pp.min_bout))
    return chosen, {"score_raw": scores[PostProcess()], "score_post": scores[chosen]}


def _score(y_folds: list[np.ndarray], pred_folds: list[np.ndarray]) -> float:
    """Mean over folds of (frame F1 + bout F1 at IoU 0.5) / 2, skipping folds without a bout F1."""
    per_fold = []
    for y, pred in zip(y_folds, pred_folds, strict=True):
        bout_f1 = bout_metrics(y, pred, iou_thresholds=(0.5,))["bout_f1_iou50"]
        if math.isnan(bout_f1):
            continue
        tp = int(np.count_nonzero(y & pred))
        # 2tp / (2tp + fp + fn); 0.0 when nothing is positive either way, as in frame_metrics.
        denominator = int(np.count_nonzero(y)) + int(np.count_nonzero(pred))
        frame_f1 = 2 * tp / denominator if denominator else 0.0
        per_fold.append((frame_f1 + bout_f1) / 2)
    return float(np.mean(per_fold)) if per_fold else math.nan


# --------------------------------------------------------------------------------------------
# validation


def _check_window(size, name: str) -> int:
    if isinstance(size, bool) or not isinstance(size, Integral) or size < 1 or size % 2 == 0:
        raise ConfigError(
            f"{name} size {size!r} is not valid; use an odd number of frames such as 3 or 5 (1 turns {name} off)"
        )
    return int(size)


def _check_min_bout(size) -> int:
    if isinstance(size, bool) or not isinstance(size, Integral) or size < 1:
        raise ConfigError(
            f"min_bout {size!r} is not valid; use a whole number of frames >= 1 (1 keeps every bout)"
        )
    return int(size)


def _check_grid(grid: Mapping[str, Sequence[int]]) -> dict[str, list[int]]:
    if not isinstance(grid, Mapping):
        raise ConfigError(f"the post-processing grid must map {', '.join(_SIZES)} to lists of sizes, got {grid!r}")
    unknown = sorted(str(k) for k in grid if k not in _SIZES)
    if unknown:
        raise ConfigError(f"unknown post-processing grid key(s) {', '.join(unknown)}; use only {', '.join(_SIZES)}")
    sizes: dict[str, list[int]] = {}
    for name in _SIZES:
        values = grid.get(name, [1])
        values = [values] if isinstance(values, Integral) else list(values)
        if not values:
            raise ConfigError(f"the post-processing grid lists no {name} size; list at least one (1 turns it off)")
        check = _check_min_bout if name == "min_bout" else (lambda v, n=name: _check_window(v, n))
        sizes[name] = sorted({check(v) for v in values})
    return sizes


def _fold_pairs(y_folds, p_folds) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per fold, the labels as bool and the probabilities as float, validated."""
    if isinstance(y_folds, np.ndarray) or isinstance(p_folds, np.ndarray):
        # One array would be read as many one-frame folds; say what is expected instead.
        if np.ndim(y_folds) == 1 or np.ndim(p_folds) == 1:
            raise ValueError("y_folds and p_folds must be sequences of per-fold arrays; wrap one fold in a list")
    if len(y_folds) != len(p_folds):
        raise ValueError(f"y_folds has {len(y_folds)} folds but p_folds has {len(p_folds)}; pair them fold by fold")
    if len(y_folds) == 0:
        raise ValueError("no folds: y_folds and p_folds are empty")
    ys, ps = [], []
    for k, (yf, pf) in enumerate(zip(y_folds, p_folds, strict=True)):
        yf = binary_frames(np.ravel(yf), f"y_folds[{k}]")
        pf = np.ravel(np.asarray(pf, dtype=float))
        if yf.size != pf.size:
            raise ValueError(
                f"fold {k} has {yf.size} labels but {pf.size} probabilities; they must match frame by frame"
            )
        if not np.isfinite(pf).all() or (pf.size and (pf.min() < 0.0 or pf.max() > 1.0)):
            raise ValueError(f"p_folds[{k}] must hold finite probabilities in [0, 1]")
        ys.append(yf)
        ps.append(pf)
    return ys, ps


def _pool(y_folds, p_folds) -> tuple[np.ndarray, np.ndarray]:
    ys, ps = _fold_pairs(y_folds, p_folds)
    return np.concatenate(ys).astype(np.int8), np.concatenate(ps)
