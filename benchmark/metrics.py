"""Per-frame metrics for one binary behaviour, and their mean +- std over cross-validation folds.

A frame is predicted positive when its probability is >= the threshold, the convention of
`pr_curve`'s thresholds, so a point on the curve and `frame_metrics` at that threshold agree.
Undefined ratios are 0.0 (precision, recall, F1 with nothing to divide by) or NaN (PR-AUC without a
positive frame, ROC-AUC with a single class) and never raise or warn; `summarise` skips NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score


def _check(y_true, proba) -> tuple[np.ndarray, np.ndarray]:
    """Flatten and validate: equal lengths, labels 0/1, probabilities finite in [0, 1]."""
    y = np.asarray(y_true)
    p = np.asarray(proba, dtype=float)
    if y.shape != p.shape:
        raise ValueError(f"y_true has shape {y.shape} but proba has shape {p.shape}; they must match frame for frame")
    y, p = y.ravel(), p.ravel()
    if y.size == 0:
        raise ValueError("no frames: y_true and proba are empty")
    if y.dtype != bool:
        if not np.issubdtype(y.dtype, np.number):
            raise ValueError(f"y_true must hold 0/1 labels, got dtype {y.dtype}")
        bad = ~np.isin(y, (0, 1))
        if bad.any():
            raise ValueError(f"y_true must hold 0/1 labels, got {np.unique(y[bad])[:5].tolist()}")
    if not np.isfinite(p).all():
        raise ValueError(f"proba holds {np.count_nonzero(~np.isfinite(p))} NaN or infinite value(s)")
    if p.min() < 0.0 or p.max() > 1.0:
        raise ValueError(f"proba must be probabilities in [0, 1], got range [{p.min()}, {p.max()}]")
    return y.astype(np.int8), p


def _check_threshold(threshold: float) -> None:
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")


def _counts(y: np.ndarray, p: np.ndarray, threshold: float) -> tuple[int, int, int, int]:
    predicted = p >= threshold
    positive = y.astype(bool)
    tp = int(np.count_nonzero(predicted & positive))
    fp = int(np.count_nonzero(predicted & ~positive))
    fn = int(np.count_nonzero(~predicted & positive))
    tn = int(y.size - tp - fp - fn)
    return tn, fp, fn, tp


def confusion(y_true, proba, threshold: float = 0.5) -> np.ndarray:
    """The 2x2 confusion matrix [[tn, fp], [fn, tp]] (sklearn's layout) at `threshold`."""
    _check_threshold(threshold)
    y, p = _check(y_true, proba)
    tn, fp, fn, tp = _counts(y, p, threshold)
    return np.array([[tn, fp], [fn, tp]], dtype=np.int64)


def frame_metrics(y_true, proba, threshold: float = 0.5) -> dict[str, float]:
    """Accuracy, precision, recall, F1 at `threshold`, threshold-free PR-AUC and ROC-AUC, and counts.

    Args:
        y_true: per-frame 0/1 labels.
        proba: per-frame probabilities of the positive class, same shape.
        threshold: a frame is predicted positive when proba >= threshold.

    Returns:
        accuracy, precision, recall, f1, pr_auc (average precision; NaN without a positive frame),
        roc_auc (NaN with a single class), tp, fp, tn, fn and n_frames (ints), and positive_rate
        (the fraction of truly positive frames: the PR-AUC of a random guess).
    """
    _check_threshold(threshold)
    y, p = _check(y_true, proba)
    tn, fp, fn, tp = _counts(y, p, threshold)
    n = y.size
    n_positive = tp + fn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / n_positive if n_positive else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    # Both curves need positives; ROC also needs negatives. sklearn would warn and return 0 or raise.
    pr_auc = float(average_precision_score(y, p)) if n_positive else math.nan
    roc_auc = float(roc_auc_score(y, p)) if 0 < n_positive < n else math.nan
    return {
        "accuracy": (tp + tn) / n,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "pr_auc": pr_auc,
        "roc_auc": roc_auc,
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "positive_rate": n_positive / n,
        "n_frames": n,
    }


def pr_curve(y_true, proba) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and thresholds of the precision-recall curve (sklearn `precision_recall_curve`).

    Raises ValueError when y_true has no positive frame: recall is undefined there, so callers skip
    the curve for such a video (its `frame_metrics` report pr_auc NaN).
    """
    y, p = _check(y_true, proba)
    if not y.any():
        raise ValueError("pr_curve needs at least one positive frame in y_true: recall is undefined without one")
    precision, recall, thresholds = precision_recall_curve(y, p)
    return precision, recall, thresholds


def summarise(fold_metrics: Sequence[dict[str, float]]) -> dict[str, float]:
    """Mean, sample standard deviation (ddof=1) and standard error of every metric over folds, skipping NaN.

    Returns `<key>_mean`, `<key>_std` and `<key>_se` (std / sqrt(folds with a value)) for each key
    seen in any fold (a fold without the key counts as NaN; a key NaN in every fold gives NaN; std
    and se need two values), plus `n_folds`.
    """
    if not fold_metrics:
        raise ValueError("summarise needs at least one fold's metrics")
    keys: list[str] = []
    for metrics in fold_metrics:
        keys.extend(key for key in metrics if key not in keys)
    summary: dict[str, float] = {}
    for key in keys:
        try:
            values = np.array([float(metrics.get(key, math.nan)) for metrics in fold_metrics])
        except (TypeError, ValueError):
            raise ValueError(f"metric '{key}' has a non-numeric value in some fold") from None
        finite = values[~np.isnan(values)]
        # np.nanmean of an all-NaN slice warns; an undefined metric is expected here, not an accident.
        summary[f"{key}_mean"] = float(finite.mean()) if finite.size else math.nan
        summary[f"{key}_std"] = float(finite.std(ddof=1)) if finite.size > 1 else math.nan
        summary[f"{key}_se"] = summary[f"{key}_std"] / math.sqrt(finite.size) if finite.size > 1 else math.nan
    summary["n_folds"] = len(fold_metrics)
    return summary


def pooled_pr_auc(y_videos: Sequence[np.ndarray], proba_videos: Sequence[np.ndarray]) -> float:
    """PR-AUC of the frames of several videos pooled (NaN without a positive frame).

    Secondary to the mean of per-video PR-AUC: pooling mixes how well each video is ranked with how
    well the probabilities of different videos agree in scale.
    """
    if not y_videos:
        return math.nan
    return frame_metrics(np.concatenate(y_videos), np.concatenate(proba_videos))["pr_auc"]
