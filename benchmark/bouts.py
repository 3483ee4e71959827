"""Segmental (bout) metrics: does a classifier find the bouts of a behaviour, not only its frames?

Frame F1 can be high while the predicted bouts are of little use: a bout broken by one-frame holes
loses a few frames but becomes five bouts to anyone who counts or times the behaviour. These
metrics score bouts, the maximal runs of positive frames [start, stop), as temporal action
detection does: a predicted bout is a hit when its intersection-over-union (IoU) with a true bout
is >= a threshold, and each bout is matched at most once.

Matching is greedy by IoU, highest first, over all (true, predicted) pairs that reach the
threshold; ties go to the earlier true start, then the earlier predicted start, so the result never
depends on the order of the input. With several videos, bouts never cross a video boundary and
counts and durations are pooled over all videos. Ratios are NaN when there is neither a true nor a
predicted bout (nothing to score); otherwise an empty denominator gives 0.0, as in
`metrics.frame_metrics`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real

import numpy as np

from .data.labels import bout_spans

DEFAULT_IOU_THRESHOLDS = (0.1, 0.25, 0.5)


def segment_iou(a: Sequence[int], b: Sequence[int]) -> float:
    """IoU of two spans [start, stop): overlapping frames / frames in either span."""
    (a0, a1), (b0, b1) = _span(a, "a"), _span(b, "b")
    overlap = max(0, min(a1, b1) - max(a0, b0))
    return overlap / ((a1 - a0) + (b1 - b0) - overlap)


def match_bouts(true_spans, pred_spans, threshold: float) -> list[tuple[int, int]]:
    """One-to-one greedy matching of true to predicted bouts at IoU >= threshold.

    Args:
        true_spans, pred_spans: (n, 2) [start, stop) spans of one video, sorted and
            non-overlapping, as `bout_spans` returns them.
        threshold: the IoU a pair needs to match (inclusive), in (0, 1].

    Returns:
        The matched (true index, predicted index) pairs, sorted by true index.
    """
    threshold = _check_thresholds([threshold])[0][1]
    true_spans = _check_spans(true_spans, "true_spans")
    pred_spans = _check_spans(pred_spans, "pred_spans")
    i, j, _ = _greedy_matches(true_spans, pred_spans, threshold)
    return sorted(zip(i.tolist(), j.tolist(), strict=True))


def bout_metrics(
    y_true,
    y_pred,
    iou_thresholds: Sequence[float] = DEFAULT_IOU_THRESHOLDS,
    fps: float | None = None,
) -> dict[str, float]:
    """Bout precision, recall and F1 at each IoU threshold, plus bout count and duration errors.

    Args:
        y_true: per-frame 0/1 labels of one video (1-D), or a sequence of them (several videos).
        y_pred: the predicted 0/1 labels, in the same form and lengths as y_true.
        iou_thresholds: IoU a (true, predicted) pair needs to match, each in (0, 1].
        fps: frames per second; when given, the duration error is also reported in seconds.

    Returns:
        Per threshold t, with XX = round(100 t) on two digits (0.1 -> iou10): bout_tp_iouXX,
        bout_fp_iouXX, bout_fn_iouXX, bout_precision_iouXX, bout_recall_iouXX, bout_f1_iouXX.
        Then n_true_bouts, n_pred_bouts, bout_count_error (n_pred - n_true), mean_bout_true and
        mean_bout_pred (frames; NaN without bouts), mean_duration_error and, with fps,
        mean_duration_error_s. All values are floats.

        mean_duration_error is the mean absolute difference |predicted length - true length|, in
        frames, over the matched (true, predicted) bout pairs at the lowest IoU threshold; NaN when
        no pair matches. It is absolute so that a bout predicted too long and another too short
        add up instead of cancelling: bouts of 10 and 20 frames predicted as 14 and 16 give 4, not
        0. Unmatched bouts have no length to compare; they count in bout_count_error and the bout
        recall and precision. The signed difference of the means is mean_bout_pred - mean_bout_true.
    """
    thresholds = _check_thresholds(iou_thresholds)
    if fps is not None and not (isinstance(fps, Real) and not isinstance(fps, bool) and fps > 0 and math.isfinite(fps)):
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    lowest = min(t for _, t in thresholds)
    matched: list[np.ndarray] = []
    duration_errors: list[np.ndarray] = []
    true_lengths: list[np.ndarray] = []
    pred_lengths: list[np.ndarray] = []
    for yt, yp in _paired_videos(y_true, y_pred):
        true_spans, pred_spans = bout_spans(yt), bout_spans(yp)
        # Greedy matching takes pairs by IoU descending, so its matches at a higher threshold are
        # exactly its matches at the lowest one that reach it: match once, count per threshold.
        i, j, iou = _greedy_matches(true_spans, pred_spans, lowest)
        matched.append(iou)
        true_lengths.append(true_spans[:, 1] - true_spans[:, 0])
        pred_lengths.append(pred_spans[:, 1] - pred_spans[:, 0])
        duration_errors.append(np.abs(pred_lengths[-1][j] - true_lengths[-1][i]))
    ious, abs_errors = np.concatenate(matched), np.concatenate(duration_errors)
    true_len, pred_len = np.concatenate(true_lengths), np.concatenate(pred_lengths)
    n_true, n_pred = true_len.size, pred_len.size

    out: dict[str, float] = {}
    for suffix, t in thresholds:
        tp = int(np.count_nonzero(ious >= t))
        fp, fn = n_pred - tp, n_true - tp
        if n_true == 0 and n_pred == 0:
            precision = recall = f1 = math.nan
        else:
            precision = tp / (tp + fp) if tp + fp else 0.0
            recall = tp / (tp + fn) if tp + fn else 0.0
            f1 = 2 * tp / (2 * tp + fp + fn)  # > 0: there is at least one bout
        out[f"bout_tp_{suffix}"] = float(tp)
        out[f"bout_fp_{suffix}"] = float(fp)
        out[f"bout_fn_{suffix}"] = float(fn)
        out[f"bout_precision_{suffix}"] = precision
        out[f"bout_recall_{suffix}"] = recall
        out[f"bout_f1_{suffix}"] = f1
    mean_true = float(true_len.mean()) if n_true else math.nan
    mean_pred = float(pred_len.mean()) if n_pred else math.nan
    out["n_true_bouts"] = float(n_true)
    out["n_pred_bouts"] = float(n_pred)
    out["bout_count_error"] = float(n_pred - n_true)
    out["mean_bout_true"] = mean_true
    out["mean_bout_pred"] = mean_pred
    # Absolute, per matched pair: over- and under-estimated durations must not cancel.
    out["mean_duration_error"] = float(abs_errors.mean()) if abs_errors.size else math.nan
    if fps is not None:
        out["mean_duration_error_s"] = out["mean_duration_error"] / fps
    return out


# --------------------------------------------------------------------------------------------
# matching


def _candidate_pairs(true_spans: np.ndarray, pred_spans: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(true index, predicted index, IoU) of every overlapping pair, without an n_true x n_pred matrix."""
    if len(true_spans) == 0 or len(pred_spans) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0)
    # Both lists are sorted and disjoint, so the predictions overlapping true bout i form the
    # contiguous range [lo[i], hi[i]): those ending after it starts and starting before it ends.
    lo = np.searchsorted(pred_spans[:, 1], true_spans[:, 0], side="right")
    hi = np.searchsorted(pred_spans[:, 0], true_spans[:, 1], side="left")
    counts = np.maximum(hi - lo, 0)
    i = np.repeat(np.arange(len(true_spans)), counts)
    within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    j = np.repeat(lo, counts) + within
    t0, t1 = true_spans[i, 0], true_spans[i, 1]
    p0, p1 = pred_spans[j, 0], pred_spans[j, 1]
    overlap = np.minimum(t1, p1) - np.maximum(t0, p0)
    return i, j, overlap / ((t1 - t0) + (p1 - p0) - overlap)


def _greedy_matches(
    true_spans: np.ndarray, pred_spans: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(true index, predicted index, IoU) of the greedy one-to-one matches at IoU >= threshold."""
    i, j, iou = _candidate_pairs(true_spans, pred_spans)
    keep = iou >= threshold
    i, j, iou = i[keep], j[keep], iou[keep]
    # A pair whose true and predicted bouts are in no other candidate pair matches whatever the
    # order; only the contested rest needs the sequential greedy pass. Spans are sorted, so the
    # index breaks IoU ties as the start would.
    alone = (np.bincount(i)[i] == 1) & (np.bincount(j)[j] == 1)
    matched = alone.copy()
    contested = np.flatnonzero(~alone)
    if contested.size:
        order = contested[np.lexsort((j[contested], i[contested], -iou[contested]))]
        used_true: set[int] = set()
        used_pred: set[int] = set()
        for k, a, b in zip(order.tolist(), i[order].tolist(), j[order].tolist(), strict=True):
            if a not in used_true and b not in used_pred:
                used_true.add(a)
                used_pred.add(b)
                matched[k] = True
    return i[matched], j[matched], iou[matched]


# --------------------------------------------------------------------------------------------
# validation


def _check_thresholds(iou_thresholds) -> list[tuple[str, float]]:
    """(key suffix, threshold) per IoU threshold; ValueError unless each is in (0, 1] with its own key."""
    values = np.atleast_1d(np.asarray(iou_thresholds, dtype=float)) if _numeric(iou_thresholds) else None
    if values is None or values.ndim != 1 or values.size == 0:
        raise ValueError(f"iou_thresholds must be one or more numbers in (0, 1], got {iou_thresholds!r}")
    out: list[tuple[str, float]] = []
    for t in values.tolist():
        if not 0.0 < t <= 1.0:
            raise ValueError(f"IoU thresholds must be in (0, 1], got {t}")
        suffix = f"iou{round(t * 100):02d}"
        if any(s == suffix for s, _ in out):
            raise ValueError(f"IoU thresholds {iou_thresholds!r} give the key suffix '{suffix}' twice")
        out.append((suffix, t))
    return out


def _numeric(values) -> bool:
    try:
        np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        return False
    return True


def _span(span, name: str) -> tuple[int, int]:
    values = np.asarray(span)
    if values.shape != (2,) or not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"{name} must be a span (start, stop) of two whole frame numbers, got {span!r}")
    start, stop = int(values[0]), int(values[1])
    if stop <= start:
        raise ValueError(f"{name} is the span ({start}, {stop}); a bout needs stop > start")
    return start, stop


def _check_spans(spans, name: str) -> np.ndarray:
    values = np.asarray(spans)
    if values.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    if values.ndim != 2 or values.shape[1] != 2 or not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"{name} must be an (n, 2) array of whole-frame [start, stop) spans, got shape {values.shape}")
    values = values.astype(np.int64)
    if (values[:, 1] <= values[:, 0]).any():
        raise ValueError(f"{name} holds a span with stop <= start; a bout needs stop > start")
    if (values[1:, 0] < values[:-1, 1]).any():
        raise ValueError(f"{name} must be sorted and non-overlapping, as bout_spans returns them")
    return values


def binary_frames(y, name: str) -> np.ndarray:
    """A 1-D 0/1 (or bool) array as bool; ValueError naming `name` otherwise."""
    values = np.asarray(y)
    if values.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of per-frame 0/1 labels, got shape {values.shape}")
    if values.dtype == bool:
        return values
    if not np.issubdtype(values.dtype, np.number):
        raise ValueError(f"{name} must hold 0/1 labels, got dtype {values.dtype}")
    bad = ~np.isin(values, (0, 1))
    if bad.any():
        raise ValueError(f"{name} must hold 0/1 labels, got {np.unique(values[bad])[:5].tolist()}")
    return values.astype(bool)


def _is_single_video(y) -> bool:
    """A 1-D array, or a sequence of scalars, is one video; a sequence of 1-D arrays is several."""
    if isinstance(y, np.ndarray) or hasattr(y, "__array__"):
        return True  # arrays and pandas Series; a shape other than 1-D is rejected by binary_frames
    if isinstance(y, Sequence) and not isinstance(y, str):
        return len(y) > 0 and all(np.ndim(v) == 0 for v in y)
    raise ValueError(f"labels must be a 1-D array or a sequence of 1-D arrays, got {type(y).__name__}")


def _paired_videos(y_true, y_pred) -> list[tuple[np.ndarray, np.ndarray]]:
    single_true, single_pred = _is_single_video(y_true), _is_single_video(y_pred)
    if single_true != single_pred:
        raise ValueError(
            "y_true and y_pred must both be one video (a 1-D array) or both a sequence of videos, got one of each"
        )
    if single_true:
        y_true, y_pred = [y_true], [y_pred]
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} videos but y_pred has {len(y_pred)}; pair them video by video")
    if not y_true:
        raise ValueError("no videos: y_true and y_pred are empty")
    pairs = []
    for k, (yt, yp) in enumerate(zip(y_true, y_pred, strict=True)):
        where = "" if single_true else f" (video {k})"
        yt, yp = binary_frames(yt, f"y_true{where}"), binary_frames(yp, f"y_pred{where}")
        if yt.size != yp.size:
            raise ValueError(
                f"y_true has {yt.size} frames but y_pred has {yp.size}{where}; they must match frame for frame"
            )
        pairs.append((yt, yp))
    return pairs
