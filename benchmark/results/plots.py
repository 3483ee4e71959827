"""The leaderboard's figures for one behaviour, from `PairResult` rows.

Each figure function takes the rows of ONE behaviour and returns a `matplotlib.figure.Figure`
built directly (never through pyplot: no global figure registry, no GUI backend). Failed rows and
rows without the data a figure needs are skipped; a figure with nothing to show renders a short
"no results" message instead of raising. Pairs keep one colour across all figures of a behaviour,
given in `sort_rows` order (CV score, never test).
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Callable

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter
from sklearn.metrics import average_precision_score, precision_recall_curve

from .types import PairResult, VideoPrediction, sort_rows

log = logging.getLogger(__name__)

DPI = 100
WIDTH = 10.0  # inches: the default figure width
MAX_WIDTH = 12.0
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")

FIGURE_STEMS = ("pr_curves", "confusion", "cost", "per_video", "ethogram")


# --------------------------------------------------------------------------- helpers


def _text(value: object) -> str:
    """Text for matplotlib: a '$' in a user-controlled name must not start mathtext."""
    return str(value).replace("$", r"\$")


def _legend_label(value: object) -> str:
    """A legend label; matplotlib hides labels that start with '_'."""
    text = _text(value)
    return " " + text if text.startswith("_") else text


def _behaviour_name(rows: list[PairResult]) -> str:
    names = list(dict.fromkeys(row.behaviour for row in rows))
    return ", ".join(names) if names else "(no behaviour)"


def _ok_sorted(rows: list[PairResult]) -> list[PairResult]:
    return [row for row in sort_rows(list(rows)) if row.ok]


def _with_test(rows: list[PairResult]) -> list[PairResult]:
    return [row for row in _ok_sorted(rows) if row.test_videos]


def _colours(rows: list[PairResult]) -> dict[str, tuple]:
    """One colour per pair of the ok rows, in sort order: stable across the figures of a behaviour."""
    pairs = list(dict.fromkeys(row.pair for row in _ok_sorted(rows)))
    cmap = colormaps["tab10" if len(pairs) <= 10 else "tab20"]
    return {pair: cmap(i % cmap.N) for i, pair in enumerate(pairs)}


def _message_figure(title: str, message: str, size: tuple[float, float] = (8.0, 3.0)) -> Figure:
    figure = Figure(figsize=size, dpi=DPI, layout="constrained")
    ax = figure.add_subplot()
    ax.set_axis_off()
    ax.text(0.5, 0.5, _text(message), ha="center", va="center", fontsize="large", color="dimgrey",
            transform=ax.transAxes, wrap=True)
    ax.set_title(_text(title))
    return figure


def _pooled(row: PairResult, attr: str) -> tuple[np.ndarray, np.ndarray]:
    """`y_true` and `attr` (proba, label_raw or label_post) of all test videos of a row, concatenated."""
    videos = row.test_videos
    y = np.concatenate([np.asarray(v.y_true).ravel() for v in videos]).astype(int)
    x = np.concatenate([np.asarray(getattr(v, attr)).ravel() for v in videos])
    if y.shape != x.shape:
        raise ValueError(f"{row.pair}: y_true has {y.size} frames but {attr} has {x.size}")
    return y, x


def _precision_recall(y: np.ndarray, predicted: np.ndarray) -> tuple[float, float]:
    truth = y.astype(bool)
    predicted = predicted.astype(bool)
    tp = int(np.count_nonzero(truth & predicted))
    n_predicted = int(np.count_nonzero(predicted))
    n_true = int(np.count_nonzero(truth))
    precision = tp / n_predicted if n_predicted else math.nan
    recall = tp / n_true if n_true else math.nan
    return precision, recall


def _legend_outside(ax, **kwargs) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", borderaxespad=0.0, **kwargs)


# --------------------------------------------------------------------------- PR curves


def pr_curves_figure(rows: list[PairResult]) -> Figure:
    """Test-set PR curves of all pairs overlaid, each with its operating point at `row.threshold`.

    Each pair pools the y_true/proba of its test videos (the board's per-video PR-AUC has no single
    curve); the legend gives the pooled average precision, the board's "test PR-AUC pooled".
    The dashed line is the positive rate (the AP of a random guess); the filled marker is the
    precision/recall of the pair's raw thresholded labels.
    """
    behaviour = _behaviour_name(rows)
    title = f"{behaviour}: test precision-recall, all test frames pooled"
    usable = _with_test(rows)
    if not usable:
        return _message_figure(title, "no results: no pair has test predictions")
    colours = _colours(rows)
    figure = Figure(figsize=(WIDTH, 6.0), dpi=DPI, layout="constrained")
    ax = figure.add_subplot()
    rates: list[tuple[float, tuple]] = []  # positive rate and colour of each drawn pair
    without_positives = []
    for row in usable:
        y, proba = _pooled(row, "proba")
        if not y.any():
            without_positives.append(row.pair)
            continue
        colour = colours[row.pair]
        precision, recall, _ = precision_recall_curve(y, proba)
        ap = float(average_precision_score(y, proba))
        ax.plot(recall, precision, drawstyle="steps-post", linewidth=1.5, color=colour,
                label=_legend_label(f"{row.pair} (pooled AP {ap:.3f})"))
        rates.append((float(y.mean()), colour))
        y_raw, label_raw = _pooled(row, "label_raw")
        op_precision, op_recall = _precision_recall(y_raw, label_raw)
        if math.isfinite(op_precision) and math.isfinite(op_recall):
            ax.plot([op_recall], [op_precision], marker="o", markersize=8, color=colour,
                    markeredgecolor="black", linestyle="none", zorder=5)
    if rates and max(r for r, _ in rates) - min(r for r, _ in rates) < 1e-6:
        ax.axhline(rates[0][0], linestyle="--", linewidth=1, color="grey", label=f"positive rate {rates[0][0]:.3f}")
    elif rates:  # pairs tested on different frames: one baseline each, in the pair's colour
        for rate, colour in rates:
            ax.axhline(rate, linestyle="--", linewidth=0.8, color=colour, alpha=0.7)
        ax.plot([], [], linestyle="--", linewidth=1, color="grey", label="positive rate (per pair)")
    if rates:
        ax.plot([], [], marker="o", markersize=8, color="white", markeredgecolor="black", linestyle="none",
                label="operating point (threshold)")
    if without_positives:
        ax.text(0.02, 0.02, _text("no positive test frame: " + ", ".join(without_positives)),
                transform=ax.transAxes, fontsize="small", color="dimgrey")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.05)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(_text(title))
    ax.grid(True, alpha=0.3)
    _legend_outside(ax)
    return figure


# --------------------------------------------------------------------------- confusion matrices


def confusion_figure(rows: list[PairResult]) -> Figure:
    """One small 2x2 confusion matrix per pair, from post-processed labels pooled over the test videos.

    Rows are the truth, columns the prediction; each cell shows its count and its share of the true
    row, and is coloured by that share.
    """
    behaviour = _behaviour_name(rows)
    title = f"{behaviour}: test confusion matrices (post-processed labels)"
    usable = _with_test(rows)
    if not usable:
        return _message_figure(title, "no results: no pair has test predictions")
    n = len(usable)
    n_cols = min(4, n)
    n_rows = math.ceil(n / n_cols)
    width = min(MAX_WIDTH, max(6.0, 2.9 * n_cols))
    figure = Figure(figsize=(width, 0.6 + 2.7 * n_rows), dpi=DPI, layout="constrained")
    axes = figure.subplots(n_rows, n_cols, squeeze=False)
    labels = ("absent", "present")
    image = None
    for index, ax in enumerate(axes.flat):
        if index >= n:
            ax.set_axis_off()
            continue
        row = usable[index]
        y, post = _pooled(row, "label_post")
        truth = y.astype(bool)
        predicted = post.astype(bool)
        cm = np.array([
            [np.count_nonzero(~truth & ~predicted), np.count_nonzero(~truth & predicted)],
            [np.count_nonzero(truth & ~predicted), np.count_nonzero(truth & predicted)],
        ], dtype=np.int64)
        totals = cm.sum(axis=1, keepdims=True)
        share = np.divide(cm, totals, out=np.zeros(cm.shape, dtype=float), where=totals > 0)
        image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
        for i in range(2):
            for j in range(2):
                ax.text(j, i, f"{int(cm[i, j]):,}\n{100 * share[i, j]:.1f}%", ha="center", va="center",
                        fontsize="small", color="white" if share[i, j] > 0.5 else "black")
        ax.set_xticks(range(2), labels, fontsize="small")
        ax.set_yticks(range(2), labels, fontsize="small")
        ax.set_xlabel("predicted", fontsize="small")
        ax.set_ylabel("true", fontsize="small")
        threshold = f"{row.threshold:.3f}" if math.isfinite(row.threshold) else "n/a"
        ax.set_title(_text(f"{row.pair}\nthreshold {threshold}"), fontsize="small")
    if image is not None:
        figure.colorbar(image, ax=axes, shrink=0.8, label="share of true row")
    figure.suptitle(_text(title), fontsize="medium")
    return figure


# --------------------------------------------------------------------------- cost vs score


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the (cost, score) points no other point dominates, sorted by cost (then score, best first).

    A point is dominated when another has lower-or-equal cost and higher-or-equal score, and is
    strictly better in one of the two. Points with a non-finite cost or score are never on the front;
    equal points are all kept.
    """
    valid = [i for i, (c, s) in enumerate(points) if math.isfinite(c) and math.isfinite(s)]
    front = []
    for i in valid:
        cost, score = points[i]
        dominated = any(
            points[j][0] <= cost and points[j][1] >= score and (points[j][0] < cost or points[j][1] > score)
            for j in valid
            if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -points[i][1], i))


def cost_figure(rows: list[PairResult]) -> Figure:
    """CV PR-AUC (mean, std as error bars) against training CPU seconds (log scale), Pareto front marked.

    The front is the pairs no other pair beats on both score and cost; its step line reads as "the
    best CV PR-AUC this much training CPU time buys".
    """
    behaviour = _behaviour_name(rows)
    title = f"{behaviour}: CV PR-AUC vs training cost"
    ok = _ok_sorted(rows)
    usable = [r for r in ok if math.isfinite(r.cv_pr_auc_mean) and math.isfinite(r.training_cpu_seconds)
              and r.training_cpu_seconds > 0]
    if not usable:
        return _message_figure(title, "no results: no pair has both a CV score and a training cost")
    colours = _colours(rows)
    figure = Figure(figsize=(WIDTH, 6.0), dpi=DPI, layout="constrained")
    ax = figure.add_subplot()
    costs = [r.training_cpu_seconds for r in usable]
    scores = [r.cv_pr_auc_mean for r in usable]
    front = pareto_front(list(zip(costs, scores)))
    for row, cost, score in zip(usable, costs, scores):
        std = row.cv_pr_auc_std if math.isfinite(row.cv_pr_auc_std) else 0.0
        ax.errorbar([cost], [score], yerr=[std], fmt="o", color=colours[row.pair], capsize=3, markersize=6,
                    zorder=3)
        ax.annotate(_text(row.pair), (cost, score), xytext=(5, 5), textcoords="offset points",
                    fontsize="small")
    if front:
        front_costs = [costs[i] for i in front]
        front_scores = [scores[i] for i in front]
        ax.plot(front_costs, front_scores, drawstyle="steps-post", color="black", linewidth=1.2, alpha=0.7,
                zorder=2, label="Pareto front")
        ax.plot(front_costs, front_scores, linestyle="none", marker="o", markersize=13, markerfacecolor="none",
                markeredgecolor="black", markeredgewidth=1.5, zorder=4)
    ax.set_xscale("log")
    # Plain seconds ("30", "45") rather than "3x10^1" when the costs span less than a decade.
    plain = FuncFormatter(lambda value, _: f"{value:,.0f}" if value >= 1 else f"{value:g}")
    ax.xaxis.set_major_formatter(plain)
    low, high = ax.get_xlim()
    # Within a decade the minor ticks are the only labels; across decades they would crowd.
    ax.xaxis.set_minor_formatter(plain if low > 0 and high / low < 10 else NullFormatter())
    ax.set_xlabel("training CPU seconds (search + refit, log scale)")
    ax.set_ylabel("CV PR-AUC (mean ± std over folds)")
    ax.set_title(_text(title))
    ax.grid(True, which="both", alpha=0.3)
    ax.margins(x=0.15, y=0.1)
    missing = len(ok) - len(usable)
    if missing:
        ax.text(0.01, 0.01, f"{missing} pair(s) without a CV score or a cost not shown", transform=ax.transAxes,
                fontsize="small", color="dimgrey")
    if front:
        ax.legend(loc="lower right", fontsize="small")
    return figure


# --------------------------------------------------------------------------- per video


def _video_positive_rates(rows: list[PairResult]) -> dict[str, float]:
    rates: dict[str, float] = {}
    for row in rows:
        for video in row.test_videos:
            y = np.asarray(video.y_true).ravel()
            if video.video_id not in rates and y.size:
                rates[video.video_id] = float(y.astype(bool).mean())
    return rates


def per_video_figure(rows: list[PairResult]) -> Figure:
    """PR-AUC per video and pair, to spot a video that fails: CV validation videos, then test videos.

    The short grey bar at a test video is its positive rate (what a random guess scores). A video
    without a positive frame has no PR-AUC and shows no marker.
    """
    behaviour = _behaviour_name(rows)
    title = f"{behaviour}: PR-AUC per video"
    usable = [r for r in _ok_sorted(rows) if r.cv_video_scores or r.test_video_scores]
    if not usable:
        return _message_figure(title, "no results: no pair has per-video scores")
    colours = _colours(rows)
    cv_videos = sorted({v for r in usable for v in r.cv_video_scores})
    test_videos = sorted({v for r in usable for v in r.test_video_scores})
    n_videos = len(cv_videos) + len(test_videos)
    x_cv = {v: i for i, v in enumerate(cv_videos)}
    x_test = {v: len(cv_videos) + i for i, v in enumerate(test_videos)}
    width = min(MAX_WIDTH, max(8.0, 5.0 + 0.4 * n_videos))
    figure = Figure(figsize=(width, 5.5), dpi=DPI, layout="constrained")
    ax = figure.add_subplot()
    n = len(usable)
    spread = min(0.6, 0.08 * (n - 1))  # side-by-side within a video's slot
    for k, row in enumerate(usable):
        offset = (k / (n - 1) - 0.5) * spread if n > 1 else 0.0
        xs, ys = [], []
        for mapping, scores in ((x_cv, row.cv_video_scores), (x_test, row.test_video_scores)):
            for video, score in scores.items():
                if score is not None and math.isfinite(score):
                    xs.append(mapping[video] + offset)
                    ys.append(score)
        ax.plot(xs, ys, linestyle="none", marker=_MARKERS[k % len(_MARKERS)], markersize=7, alpha=0.85,
                color=colours[row.pair], label=_legend_label(row.pair))
    rates = _video_positive_rates(usable)
    shown_rate = False
    for video, x in x_test.items():
        if video in rates:
            ax.hlines(rates[video], x - 0.4, x + 0.4, colors="grey", linewidth=2, alpha=0.6,
                      label=None if shown_rate else "positive rate (random guess)")
            shown_rate = True
    if cv_videos and test_videos:
        ax.axvline(len(cv_videos) - 0.5, color="black", linewidth=1)
    transform = ax.get_xaxis_transform()
    if cv_videos:
        ax.text((len(cv_videos) - 1) / 2, 1.01, "CV folds", transform=transform, ha="center", va="bottom",
                fontsize="small", fontweight="bold")
    if test_videos:
        ax.text(len(cv_videos) + (len(test_videos) - 1) / 2, 1.01, "test", transform=transform, ha="center",
                va="bottom", fontsize="small", fontweight="bold")
    labels = [_text(v) for v in cv_videos + test_videos]
    rotate = n_videos > 6 or max((len(v) for v in labels), default=0) > 10
    ax.set_xticks(range(n_videos), labels, rotation=45 if rotate else 0, ha="right" if rotate else "center",
                  fontsize="small")
    ax.set_xlim(-0.6, n_videos - 0.4)
    ax.set_ylim(0.0, 1.05)
    ax.set_ylabel("PR-AUC (average precision)")
    ax.set_xlabel("video")
    ax.set_title(_text(title), pad=18)
    ax.grid(True, axis="y", alpha=0.3)
    _legend_outside(ax)
    return figure


# --------------------------------------------------------------------------- ethogram


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, length) of each run of true values."""
    m = np.asarray(mask).ravel().astype(bool).astype(np.int8)
    if not m.size:
        return []
    edges = np.diff(np.concatenate(([0], m, [0])))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    return [(int(s), int(e - s)) for s, e in zip(starts, ends)]


def _find_video(row: PairResult, video_id: str) -> VideoPrediction | None:
    return next((v for v in row.test_videos if v.video_id == video_id), None)


def ethogram_figure(rows: list[PairResult], video_id: str | None = None) -> Figure:
    """Annotation and each pair's post-processed prediction over time, for one test video.

    Args:
        rows: the rows of one behaviour.
        video_id: the test video; by default the first test video of the best row (the first ok
            row with test predictions, in `sort_rows` order).
    """
    behaviour = _behaviour_name(rows)
    usable = _with_test(rows)
    if video_id is None and usable:
        video_id = usable[0].test_videos[0].video_id
    title = f"{behaviour}: ethogram of test video {video_id}" if video_id is not None else f"{behaviour}: ethogram"
    lanes_rows = [(row, _find_video(row, video_id)) for row in usable] if video_id is not None else []
    lanes_rows = [(row, video) for row, video in lanes_rows if video is not None]
    if not lanes_rows:
        message = ("no results: no pair has test predictions" if video_id is None
                   else f"no results: no pair has predictions for test video {video_id}")
        return _message_figure(title, message)
    colours = _colours(rows)
    reference = lanes_rows[0][1]
    fps = reference.fps if reference.fps and math.isfinite(reference.fps) and reference.fps > 0 else 0.0
    scale = 1.0 / fps if fps else 1.0
    lanes = [("annotation", np.asarray(reference.y_true), "black")]
    lanes += [(row.pair, np.asarray(video.label_post), colours[row.pair]) for row, video in lanes_rows]
    n_lanes = len(lanes)
    height = min(12.0, max(2.6, 1.3 + 0.42 * n_lanes))
    figure = Figure(figsize=(MAX_WIDTH, height), dpi=DPI, layout="constrained")
    ax = figure.add_subplot()
    longest = 0
    for lane, (_, values, colour) in enumerate(lanes):
        n_frames = int(values.size)
        longest = max(longest, n_frames)
        ax.broken_barh([(0.0, n_frames * scale)], (lane - 0.4, 0.8), facecolors="#f0f0f0", edgecolor="none")
        runs = [(start * scale, length * scale) for start, length in _runs(values)]
        if runs:
            ax.broken_barh(runs, (lane - 0.4, 0.8), facecolors=colour, edgecolor="none")
    ax.axhline(0.5, color="grey", linewidth=0.8)
    ax.set_yticks(range(n_lanes), [_text(name) for name, _, _ in lanes], fontsize="small")
    ax.set_ylim(n_lanes - 0.5, -0.5)  # annotation on top
    ax.set_xlim(0.0, max(longest, 1) * scale)
    ax.set_xlabel("time (s)" if fps else "frame")
    ax.set_title(_text(title + " (post-processed predictions)"), fontsize="medium")
    ax.grid(True, axis="x", alpha=0.3)
    ax.tick_params(axis="y", length=0)
    return figure


# --------------------------------------------------------------------------- output


def figure_png(fig: Figure) -> bytes:
    """The figure as PNG bytes; the figure is cleared afterwards to free its artists."""
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=fig.dpi)
    finally:
        fig.clear()
    return buffer.getvalue()


def behaviour_figures(rows: list[PairResult]) -> dict[str, bytes]:
    """All figures of one behaviour as PNG bytes, keyed by the file stems the report uses.

    The order is fixed: pr_curves, confusion, cost, per_video, ethogram. A figure that cannot be
    drawn (inconsistent data) becomes a figure stating the error, so one bad row never loses the
    whole report; the error is logged.
    """
    builders: dict[str, Callable[[list[PairResult]], Figure]] = {
        "pr_curves": pr_curves_figure,
        "confusion": confusion_figure,
        "cost": cost_figure,
        "per_video": per_video_figure,
        "ethogram": ethogram_figure,
    }
    out: dict[str, bytes] = {}
    for stem, build in builders.items():
        try:
            figure = build(rows)
        except Exception as exc:  # noqa: BLE001 - shown in the figure and logged with its traceback
            log.exception("figure %s of %s failed", stem, _behaviour_name(rows))
            figure = _message_figure(f"{_behaviour_name(rows)}: {stem}",
                                     f"figure failed: {type(exc).__name__}: {exc}"[:300])
        out[stem] = figure_png(figure)
    return out
