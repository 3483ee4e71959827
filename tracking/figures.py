"""Pure functions from labels and probabilities to plot data and matplotlib figures.

Figures are built on `matplotlib.figure.Figure` directly, never through pyplot: no global figure
registry to leak into, no GUI backend to pick, safe in worker processes without a display.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DEFAULT_THRESHOLD = 0.5


def binary_inputs(y_true, proba) -> tuple[np.ndarray, np.ndarray]:
    """`y_true` as 0/1 ints and `proba` as floats, both flat and of one length."""
    y = np.asarray(y_true).ravel().astype(int)
    p = np.asarray(proba, dtype=float).ravel()
    if y.shape != p.shape:
        raise ValueError(f"y_true has {y.size} values but proba has {p.size}; they must be per frame, paired")
    return y, p


def average_precision(y_true, proba) -> float:
    """Average precision (area under the PR curve, step-wise); NaN where `y_true` holds no positive."""
    y, p = binary_inputs(y_true, proba)
    if not y.any():
        return float("nan")
    return float(average_precision_score(y, p))


def pr_curve_points(y_true, proba, max_points: int = 200) -> dict:
    """The PR curve as plain lists, thinned to at most `max_points` points.

    Returns ``precision`` and ``recall`` (one longer than ``thresholds``, as in scikit-learn: the
    last point is recall 0, precision 1), ``thresholds``, ``average_precision``, ``positive_rate``
    and ``n_frames``. Without positives the curve is empty and ``average_precision`` is None.
    """
    y, p = binary_inputs(y_true, proba)
    out = {"n_frames": int(y.size), "positive_rate": float(y.mean()) if y.size else None}
    if not y.any():
        return {**out, "precision": [], "recall": [], "thresholds": [], "average_precision": None}
    precision, recall, thresholds = precision_recall_curve(y, p)
    # Keep the first and last thresholds and evenly spaced ones between; then the closing point.
    n_kept = min(len(thresholds), max_points - 1)
    keep = np.unique(np.round(np.linspace(0, len(thresholds) - 1, n_kept)).astype(int))
    return {
        **out,
        "precision": [float(v) for v in precision[keep]] + [float(precision[-1])],
        "recall": [float(v) for v in recall[keep]] + [float(recall[-1])],
        "thresholds": [float(v) for v in thresholds[keep]],
        "average_precision": float(average_precision_score(y, p)),
    }


def confusion_counts(y_true, proba, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """2 x 2 frame counts ``[[tn, fp], [fn, tp]]``; rows are the truth, positive means ``proba >= threshold``."""
    y, p = binary_inputs(y_true, proba)
    predicted = p >= threshold
    truth = y.astype(bool)
    return np.array(
        [
            [np.sum(~truth & ~predicted), np.sum(~truth & predicted)],
            [np.sum(truth & ~predicted), np.sum(truth & predicted)],
        ],
        dtype=np.int64,
    )


def pr_curve_figure(folds: Sequence[tuple], title: str = "Precision-recall") -> Figure:
    """PR curves of each fold (thin) and of all folds pooled (bold), with the positive-rate baseline (dashed).

    Args:
        folds: ``(y_true, proba, label)`` per fold; the legend shows each label with its AP.
        title: the axes title.
    """
    from matplotlib.figure import Figure  # here: the plot data above needs no matplotlib

    figure = Figure(figsize=(6, 5), dpi=100, layout="constrained")
    ax = figure.add_subplot()
    pooled_y, pooled_p = [], []
    for y_true, proba, label in folds:
        y, p = binary_inputs(y_true, proba)
        pooled_y.append(y)
        pooled_p.append(p)
        if not y.any():
            ax.plot([], [], linewidth=1, label=f"{label}: no positives")
            continue
        precision, recall, _ = precision_recall_curve(y, p)
        ax.plot(
            recall, precision, drawstyle="steps-post", linewidth=1, alpha=0.7,
            label=f"{label}: AP {average_precision_score(y, p):.3f}",
        )
    if pooled_y:
        y = np.concatenate(pooled_y)
        p = np.concatenate(pooled_p)
        if y.any():
            precision, recall, _ = precision_recall_curve(y, p)
            ax.plot(
                recall, precision, drawstyle="steps-post", linewidth=2.5, color="black",
                label=f"pooled: AP {average_precision_score(y, p):.3f}",
            )
            rate = float(y.mean())
            ax.axhline(rate, linestyle="--", linewidth=1, color="grey", label=f"positive rate {rate:.3f}")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.05)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower left", fontsize="small")
    return figure


def confusion_figure(cm: np.ndarray, title: str, labels: Sequence[str] = ("absent", "present")) -> Figure:
    """A confusion matrix: each cell shows its count and its share of the true row; colour is the row share.

    Args:
        cm: square counts, rows = truth, columns = prediction (as `confusion_counts` returns).
        title: the axes title (say which threshold and which frames).
        labels: class names in row order.
    """
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] != len(labels):
        raise ValueError(f"confusion matrix of shape {cm.shape} does not match {len(labels)} labels")
    row_totals = cm.sum(axis=1, keepdims=True)
    # An empty row (no frames of that class) shows 0 %, not NaN.
    share = np.divide(cm, row_totals, out=np.zeros(cm.shape, dtype=float), where=row_totals > 0)
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.8, 4.2), dpi=100, layout="constrained")
    ax = figure.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    for row in range(cm.shape[0]):
        for col in range(cm.shape[1]):
            ax.text(
                col, row, f"{int(cm[row, col]):,}\n{100 * share[row, col]:.1f}%",
                ha="center", va="center", color="white" if share[row, col] > 0.5 else "black",
            )
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    # Over the whole figure, so a long title does not run into the colour bar.
    figure.suptitle(title, fontsize="medium")
    figure.colorbar(image, ax=ax, label="share of true row")
    return figure
