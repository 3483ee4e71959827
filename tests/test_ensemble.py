"""Ensemble rows (late fusion of pairs): choices from out-of-fold predictions only, costs summed."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mbr_bench.benchmark.results.ensemble import (
    MemberPredictions,
    best_weights,
    ensemble_row,
    parse_ensembles,
    two_stream_members,
)
from mbr_bench.benchmark.results.types import PairResult, VideoPrediction
from mbr_bench.core.errors import ConfigError

VIDEOS, TESTS, FRAMES = ["v1", "v2", "v3", "v4"], ["t1", "t2"], 400


def _labels(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y = np.zeros(FRAMES, np.int8)
    for start in rng.choice(FRAMES - 30, 6, replace=False):
        y[start : start + 20] = 1
    return y


def _member(backbone: str, sees: float, seed: int, half: int | None = None, test_noise: float = 0.0,
            cost: float = 0.01) -> MemberPredictions:
    """A member whose probability follows the labels with weight `sees` (on every other bout if `half`)."""
    rng = np.random.default_rng(seed)

    def proba(y: np.ndarray, noise: float = 0.0) -> np.ndarray:
        signal = y.astype(float)
        if half is not None:  # sees only the frames of one half of the video
            signal[(np.arange(len(y)) < FRAMES // 2) != bool(half)] = 0.0
        return np.clip(sees * signal + (1 - sees) * rng.random(len(y)) + noise * rng.random(len(y)), 0, 1).astype(np.float32)

    row = PairResult("walk", backbone, "lstm", n_trials=3, cv_pr_auc_mean=0.5, refit_run_id=f"refit-{backbone}",
                     search_cpu_seconds=100.0, refit_cpu_seconds=10.0, embedding_seconds_per_frame=cost,
                     n_params=1000, inference_fps=2000.0, protocol="mean_curve")
    for k, video in enumerate(TESTS):
        y = _labels(100 + k)
        p = proba(y, test_noise)
        row.test_videos.append(VideoPrediction(video, y, p, (p >= 0.5).astype(np.int8), (p >= 0.5).astype(np.int8), 10.0))
    oof = {}
    for k, video in enumerate(VIDEOS):
        y = _labels(k)
        oof[video] = (y, proba(y))
    return MemberPredictions(row, oof)


def test_weights_favour_the_member_that_sees_the_behaviour():
    good, noise = _member("flow_hof", 0.3, 1), _member("mobilenet_v2", 0.0, 2)
    assert best_weights([good, noise], VIDEOS)[0] >= 0.9
    assert best_weights([noise, good], VIDEOS)[1] >= 0.9
    assert np.allclose(best_weights([good, noise, noise], VIDEOS), 1 / 3)  # three or more: equal


def test_complementary_members_fuse_above_each_and_costs_add_up():
    first, second = _member("mobilenet_v2", 0.6, 1, half=0), _member("flow_hof", 0.6, 2, half=1, cost=0.002)
    row = ensemble_row("walk", [first, second], training_fps=10.0, rule="max_f1")
    assert row.ok and row.pair == "mobilenet_v2+lstm & flow_hof+lstm" and row.members == [first.row.pair, second.row.pair]
    assert math.isclose(sum(row.weights), 1.0) and 0.2 <= row.weights[0] <= 0.8
    singles = [ensemble_row("walk", [m, _member("x", 0.0, 9)], 10.0, "max_f1") for m in (first, second)]
    assert row.cv_pr_auc_mean > max(s.cv_pr_auc_mean for s in singles) + 0.05
    assert set(row.cv_video_scores) == set(VIDEOS) and row.cv_n_folds == 4
    assert set(row.test_video_scores) == set(TESTS) and math.isfinite(row.test_raw["pr_auc_mean"])
    assert row.search_cpu_seconds == 200.0 and row.refit_cpu_seconds == 20.0 and row.n_params == 2000
    assert row.embedding_seconds_per_frame == pytest.approx(0.012)
    assert row.inference_fps == pytest.approx(1000.0)
    assert row.refit_run_id is None and 0.0 < row.threshold < 1.0


def test_no_choice_sees_a_test_frame():
    members = [_member("mobilenet_v2", 0.6, 1, half=0), _member("flow_hof", 0.6, 2, half=1)]
    row = ensemble_row("walk", members, 10.0, "max_f1")
    for member in members:  # scramble every test prediction
        for video in member.row.test_videos:
            video.proba = np.random.default_rng(5).random(FRAMES).astype(np.float32)
    again = ensemble_row("walk", members, 10.0, "max_f1")
    assert again.weights == row.weights and again.threshold == row.threshold and again.postprocess == row.postprocess
    assert again.cv_pr_auc_mean == row.cv_pr_auc_mean
    assert again.test_raw["pr_auc_mean"] != row.test_raw["pr_auc_mean"]


def test_two_stream_members_and_the_option():
    rows = [PairResult("walk", "mobilenet_v2", "lstm", cv_pr_auc_mean=0.6, refit_run_id="a"),
            PairResult("walk", "resnet50v2", "lstm", cv_pr_auc_mean=0.7, refit_run_id="b"),
            PairResult("walk", "flow_hof", "tcn", cv_pr_auc_mean=0.8, refit_run_id="c"),
            PairResult("walk", "pose", "tcn", cv_pr_auc_mean=0.9, refit_run_id="d")]
    assert two_stream_members(rows) == ["resnet50v2+lstm", "flow_hof+tcn"]
    assert two_stream_members(rows[:2]) is None  # no motion pair
    assert parse_ensembles("a+lstm,b+lstm") == [["a+lstm", "b+lstm"]]
    with pytest.raises(ConfigError, match="two or more different pairs"):
        parse_ensembles("a+lstm")
