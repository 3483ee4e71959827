"""Leaderboard figures from hand-built rows: the right content, and no exception on empty or failed input."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from matplotlib.figure import Figure

from mbr_bench.benchmark.results.plots import (
    behaviour_figures,
    confusion_figure,
    cost_figure,
    ethogram_figure,
    figure_png,
    pareto_front,
    per_video_figure,
    pr_curves_figure,
)
from mbr_bench.benchmark.results.types import PairResult, VideoPrediction, fill_statistics

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def warnings_are_errors():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def make_video(rng: np.random.Generator, video_id: str, n: int, skill: float, threshold: float,
               fps: float = 30.0) -> VideoPrediction:
    y = np.zeros(n, dtype=int)
    for start in rng.integers(0, n - 30, size=5):
        y[start:start + rng.integers(10, 30)] = 1
    proba = np.clip(skill * y + (1 - skill) * rng.random(n) + rng.normal(0, 0.05, n), 0.0, 1.0)
    raw = (proba >= threshold).astype(int)
    post = raw.copy()
    post[1:-1] |= raw[:-2] & raw[2:]  # a one-frame closing
    return VideoPrediction(video_id, y, proba, raw, post, fps)


def make_row(rng, pair: str, cv: float, skill: float, cost: float, test_ids=("t1", "t2"),
             behaviour: str = "grooming", error: str | None = None) -> PairResult:
    backbone, head = pair.split("+")
    if error is not None:
        return PairResult(behaviour, backbone, head, error=error)
    threshold = 0.5
    videos = [make_video(rng, v, 300, skill, threshold) for v in test_ids]
    return PairResult(
        behaviour, backbone, head, n_trials=10, cv_pr_auc_mean=cv, cv_pr_auc_std=0.02, cv_n_folds=3,
        best_trial=4, threshold=threshold, threshold_rule="max_f1",
        postprocess={"closing": 3, "opening": 1, "min_bout": 5},
        test_raw={"pr_auc": skill}, test_post={"pr_auc": skill},
        search_cpu_seconds=cost, refit_cpu_seconds=cost / 10,
        cv_video_scores={"v1": cv - 0.05, "v2": cv, "v3": cv + 0.03},
        test_video_scores={v: skill for v in test_ids},
        test_videos=videos,
    )


@pytest.fixture
def rows() -> list[PairResult]:
    rng = np.random.default_rng(0)
    return [
        make_row(rng, "pose+lstm", cv=0.70, skill=0.9, cost=50.0),  # best on test, second on CV
        make_row(rng, "resnet+tcn", cv=0.85, skill=0.6, cost=800.0),  # best on CV
        make_row(rng, "mobilenet+mlp", cv=0.60, skill=0.5, cost=2000.0),  # dominated: on no front
        make_row(rng, "vit+gru", cv=math.nan, skill=0.5, cost=1.0, error="out of memory <script>&"),
    ]


def titles(figure: Figure) -> str:
    texts = [ax.get_title() for ax in figure.axes]
    if figure._suptitle is not None:
        texts.append(figure._suptitle.get_text())
    return " ".join(texts)


def test_pareto_front_by_hand():
    points = [
        (10.0, 0.5),  # 0: dominated by 1
        (5.0, 0.6),  # 1: front
        (20.0, 0.9),  # 2: front
        (30.0, 0.85),  # 3: dominated by 2
        (5.0, 0.6),  # 4: equal to 1, kept
        (1.0, 0.2),  # 5: front (cheapest)
        (math.nan, 0.99),  # 6: no cost, never on the front
        (5.0, 0.4),  # 7: same cost as 1, lower score: dominated
        (40.0, 0.9),  # 8: same score as 2, dearer: dominated
    ]
    assert pareto_front(points) == [5, 1, 4, 2]
    assert pareto_front([]) == []
    assert pareto_front([(3.0, 0.1)]) == [0]


def test_pr_curves_in_cv_order_with_operating_points(rows):
    figure = pr_curves_figure(rows)
    ax = figure.axes[0]
    assert "grooming" in ax.get_title() and "pooled" in ax.get_title()
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    curves = [label for label in labels if "(pooled AP " in label]
    # CV order, never test order; the failed pair is absent.
    assert [c.split(" (pooled AP")[0] for c in curves] == ["resnet+tcn", "pose+lstm", "mobilenet+mlp"]
    # The legend's AP is the board's pooled test PR-AUC (not the per-video mean).
    fill_statistics(rows)
    ok = [rows[1], rows[0], rows[2]]
    assert [float(c.split("AP ")[1][:-1]) for c in curves] == pytest.approx(
        [row.test_pr_auc_pooled for row in ok], abs=5e-4)
    assert any(label.startswith("positive rate") for label in labels)
    # One operating point per pair: a single-point line at the raw labels' precision/recall.
    best = rows[1]
    y = np.concatenate([v.y_true for v in best.test_videos])
    raw = np.concatenate([v.label_raw for v in best.test_videos]).astype(bool)
    expected = (np.sum(raw & (y == 1)) / y.sum(), np.sum(raw & (y == 1)) / raw.sum())
    points = [(line.get_xdata()[0], line.get_ydata()[0]) for line in ax.get_lines() if len(line.get_xdata()) == 1]
    assert any(np.allclose(p, expected) for p in points)
    assert figure_png(figure).startswith(PNG_SIGNATURE)


def test_confusion_one_panel_per_pair(rows):
    figure = confusion_figure(rows)
    panels = [ax for ax in figure.axes if ax.images]
    assert len(panels) == 3
    assert "resnet+tcn" in panels[0].get_title() and "threshold 0.500" in panels[0].get_title()
    # Counts of the first panel are the post-processed labels pooled over its test videos.
    best = rows[1]
    y = np.concatenate([v.y_true for v in best.test_videos]).astype(bool)
    post = np.concatenate([v.label_post for v in best.test_videos]).astype(bool)
    tp = int(np.sum(y & post))
    cell_texts = [t.get_text() for t in panels[0].texts]
    assert any(t.startswith(f"{tp:,}\n") for t in cell_texts)
    assert "grooming" in titles(figure)
    figure_png(figure)


def test_cost_figure_marks_the_front(rows):
    figure = cost_figure(rows)
    ax = figure.axes[0]
    assert ax.get_xscale() == "log"
    front = [line for line in ax.get_lines() if line.get_label() == "Pareto front"]
    assert len(front) == 1
    # pose+lstm (cheap) then resnet+tcn (better); mobilenet+mlp is dominated by both.
    assert list(front[0].get_xdata()) == [55.0, 880.0]
    assert list(front[0].get_ydata()) == [0.70, 0.85]
    annotations = {t.get_text() for t in ax.texts}
    assert {"pose+lstm", "resnet+tcn", "mobilenet+mlp"} <= annotations
    figure_png(figure)


def test_per_video_cv_then_test(rows):
    figure = per_video_figure(rows)
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["v1", "v2", "v3", "t1", "t2"]
    texts = {t.get_text() for t in ax.texts}
    assert {"CV folds", "test"} <= texts
    figure_png(figure)


def test_per_video_test_points_average_to_the_board_number(rows):
    fill_statistics(rows)
    ax = per_video_figure(rows).axes[0]
    line = next(line for line in ax.get_lines() if line.get_label() == "resnet+tcn")
    xs, ys = np.asarray(line.get_xdata()), np.asarray(line.get_ydata())
    test_points = ys[xs > 2.5]  # slots 3 and 4: t1, t2
    assert len(test_points) == 2 and test_points.mean() == pytest.approx(rows[1].test_pr_auc_mean)


def test_ethogram_defaults_to_best_cv_row_first_video(rows):
    rows[1].test_videos = [rows[1].test_videos[1], rows[1].test_videos[0]]  # best row lists t2 first
    figure = ethogram_figure(rows)
    ax = figure.axes[0]
    assert "t2" in ax.get_title() and "grooming" in ax.get_title()
    assert [t.get_text() for t in ax.get_yticklabels()] == ["annotation", "resnet+tcn", "pose+lstm", "mobilenet+mlp"]
    assert ax.get_xlabel() == "time (s)"
    assert ax.get_xlim()[1] == pytest.approx(300 / 30.0)
    figure_png(figure)
    other = ethogram_figure(rows, video_id="t1")
    assert "t1" in other.axes[0].get_title()
    missing = ethogram_figure(rows, video_id="nope")
    assert "no results" in " ".join(t.get_text() for t in missing.axes[0].texts)
    figure_png(other)
    figure_png(missing)


def test_ethogram_in_frames_without_fps(rows):
    for row in rows:
        for video in row.test_videos:
            video.fps = 0.0
    ax = ethogram_figure(rows).axes[0]
    assert ax.get_xlabel() == "frame"
    assert ax.get_xlim()[1] == pytest.approx(300)


FIGURES = [pr_curves_figure, confusion_figure, cost_figure, per_video_figure, ethogram_figure]


@pytest.mark.parametrize("build", FIGURES, ids=lambda f: f.__name__)
def test_figures_never_raise_without_results(build):
    rng = np.random.default_rng(1)
    all_failed = [make_row(rng, "a+b", 0.5, 0.5, 10.0, error="boom"), make_row(rng, "c+d", 0.5, 0.5, 10.0, error="x")]
    no_test = [make_row(rng, "a+b", 0.5, 0.5, 10.0, test_ids=())]
    for rows in ([], all_failed, no_test):
        figure = build(rows)
        assert isinstance(figure, Figure)
        assert figure_png(figure).startswith(PNG_SIGNATURE)


def test_no_positive_test_frame_and_odd_names():
    rng = np.random.default_rng(2)
    row = make_row(rng, "a$b+_c", 0.5, 0.5, 10.0, behaviour="sniff $x")
    for video in row.test_videos:
        video.y_true[:] = 0
    row.test_video_scores = {v.video_id: math.nan for v in row.test_videos}
    for build in FIGURES:
        assert figure_png(build([row])).startswith(PNG_SIGNATURE)


def test_behaviour_figures_stems_and_pngs(rows):
    pngs = behaviour_figures(rows)
    assert list(pngs) == ["pr_curves", "confusion", "cost", "per_video", "ethogram"]
    assert all(isinstance(b, bytes) and b.startswith(PNG_SIGNATURE) for b in pngs.values())


def test_behaviour_figures_survive_inconsistent_data(rows, caplog):
    rows[0].test_videos[0].label_post = rows[0].test_videos[0].label_post[:10]  # wrong length
    pngs = behaviour_figures(rows)
    assert all(b.startswith(PNG_SIGNATURE) for b in pngs.values())
    assert "confusion" in caplog.text
