"""Post-processing: morphology on hand-made sequences, threshold rules against brute force, tuning."""

import warnings

import numpy as np
import pytest
from scipy.ndimage import maximum_filter1d, minimum_filter1d

from mbr_bench.core.errors import ConfigError
from mbr_bench.benchmark.postprocess import (
    PostProcess,
    choose_threshold,
    closing,
    default_grid,
    opening,
    parse_threshold_rule,
    remove_short_bouts,
    tune_postprocess,
)


@pytest.fixture(autouse=True)
def warnings_are_errors():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# --- morphology ---------------------------------------------------------------------------------


def test_closing_fills_a_short_gap():
    out = closing([0, 0, 0, 1, 1, 1, 1, 0, 1, 1, 1], 3)
    assert out.tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1]
    assert out.dtype == np.int8
    # Closing fills only gaps shorter than its size: a 3-frame gap survives size 3, not size 5.
    y = [1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0]
    assert closing(y, 3).tolist() == y
    assert closing(y, 5).tolist() == [1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0]


def test_opening_removes_short_runs_and_keeps_long_ones():
    y = [0, 1, 0, 0, 1, 1, 0, 0, 1, 1, 1, 0, 0, 1, 1, 1, 1, 0]
    assert opening(y, 3).tolist() == [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 1, 1, 1, 1, 0]
    assert opening(y, 5).tolist() == [0] * 18  # the 4-frame run is shorter than 5 too
    assert opening(y + [0, 1, 1, 1, 1, 1, 0], 5).tolist() == [0] * 19 + [1, 1, 1, 1, 1, 0]


def test_size_one_leaves_labels_unchanged():
    y = np.array([0, 1, 0, 1, 1, 0, 1])
    assert closing(y, 1).tolist() == opening(y, 1).tolist() == remove_short_bouts(y, 1).tolist() == y.tolist()
    assert closing(np.zeros(0, dtype=int), 3).size == 0


def test_edges_are_not_shrunk():
    # Bouts cut by the start and end of the video: the video is taken to continue as it ends.
    y = [1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1]
    for size in (3, 5):
        assert closing(y, size).tolist() == y
    assert opening(y, 3).tolist() == y
    assert opening(y, 5).tolist() == y  # a 3-frame edge run survives size 5: (5 + 1) / 2 = 3 frames
    # A 1-frame run at the edge is still a blip for size 3.
    assert opening([1, 0, 0, 0, 0, 1], 3).tolist() == [0] * 6
    # Closing never fills a gap touching an edge, however short: no bout is known beyond it.
    assert closing([0, 1, 1, 0, 0], 3).tolist() == [0, 1, 1, 0, 0]
    assert closing([0, 0, 1, 1, 0, 0], 3).tolist() == [0, 0, 1, 1, 0, 0]


def _bits(text: str) -> list[int]:
    return [int(c) for c in text]


def _text(labels) -> str:
    return "".join(str(int(v)) for v in labels)


@pytest.mark.parametrize(
    ("labels", "size", "expected"),
    [
        # Edge gaps, leading and trailing, are never filled (replicated borders gave 1111111000).
        ("0011111000", 5, "0011111000"),
        ("0011111000", 9, "0011111000"),
        ("0110", 3, "0110"),
        ("0100", 3, "0100"),
        ("0001", 5, "0001"),
        ("1000", 5, "1000"),
        # Interior gaps shorter than the size are filled; a run touching an edge is kept whole.
        ("1100110000", 5, "1111110000"),
        ("1100110000", 3, "1111110000"),
        ("11000110000", 3, "11000110000"),  # a 3-frame gap survives size 3
        ("0000110011", 5, "0000111111"),
        ("0101010", 3, "0111110"),
        ("1010101", 3, "1111111"),
        ("0100010", 3, "0100010"),  # a 3-frame gap survives size 3 ...
        ("0100010", 5, "0111110"),  # ... not size 5, and the edge gaps stay
        ("1000000001", 7, "1000000001"),  # an 8-frame gap survives size 7 ...
        ("1000000001", 9, "1111111111"),  # ... not size 9
        # Size 1 leaves the labels unchanged.
        ("0011111000", 1, "0011111000"),
        ("0101010", 1, "0101010"),
        # All zeros, all ones, a single frame.
        ("00000", 3, "00000"),
        ("00000", 11, "00000"),
        ("11111", 3, "11111"),
        ("11111", 11, "11111"),
        ("1", 3, "1"),
        ("0", 5, "0"),
    ],
)
def test_closing_fills_only_gaps_between_bouts(labels, size, expected):
    out = closing(_bits(labels), size)
    assert _text(out) == expected
    assert out.dtype == np.int8 and out.shape == (len(labels),)
    assert _text(closing(np.array(_bits(labels), dtype=bool), size)) == expected


def test_closing_empty_input():
    for size in (1, 3, 5):
        out = closing([], size)
        assert out.size == 0 and out.dtype == np.int8
        assert opening([], size).size == 0


def _closing_with_replicated_borders(labels, size):
    """The closing before edge gaps were left alone: scipy's filters with mode='nearest'."""
    y = np.asarray(labels, dtype=np.int8)
    return minimum_filter1d(maximum_filter1d(y, size, mode="nearest"), size, mode="nearest")


def test_closing_properties_on_random_labels():
    rng = np.random.default_rng(20240607)
    for _ in range(400):
        n = int(rng.integers(1, 60))
        y = (rng.random(n) < rng.uniform(0.05, 0.9)).astype(np.int8)
        size = int(rng.choice([1, 3, 5, 7, 9, 15]))
        out = closing(y, size)
        assert out.dtype == np.int8 and out.shape == y.shape
        assert np.all(out >= y)  # never removes a positive
        positive = np.flatnonzero(y)
        if positive.size == 0:
            assert not out.any()
            continue
        first, last = positive[0], positive[-1]
        # Never sets a frame before the first positive or after the last one.
        assert not out[:first].any() and not out[last + 1 :].any()
        # Strictly between them, the same as the old closing: interior gaps are unchanged.
        old = _closing_with_replicated_borders(y, size)
        np.testing.assert_array_equal(out[first + 1 : last], old[first + 1 : last])
        # A gap between two runs is filled exactly when it is shorter than the size.
        starts = np.flatnonzero(np.diff(y) == -1) + 1  # first 0 after a run
        for g0 in starts[starts <= last]:
            g1 = g0 + np.argmax(y[g0:] == 1)  # next 1
            assert out[g0:g1].all() == (g1 - g0 < size)
        # Idempotent: a closed sequence closes to itself.
        np.testing.assert_array_equal(closing(out, size), out)


def test_opening_never_creates_positives_on_random_labels():
    rng = np.random.default_rng(7)
    for _ in range(400):
        n = int(rng.integers(1, 60))
        y = (rng.random(n) < rng.uniform(0.05, 0.95)).astype(np.int8)
        size = int(rng.choice([1, 3, 5, 7, 9]))
        out = opening(y, size)
        assert np.all(out <= y)  # only ever removes frames
        np.testing.assert_array_equal(opening(out, size), out)
        # Each run is kept whole or removed whole: kept when at least `size` frames long inside,
        # (size + 1) / 2 at an edge, always when it is the whole video.
        ends = np.flatnonzero(np.diff(np.concatenate([[0], y, [0]])))
        for r0, r1 in zip(ends[::2], ends[1::2], strict=True):
            edge = r0 == 0 or r1 == n
            keep = (r1 - r0) >= ((size + 1) // 2 if edge else size) or (r0 == 0 and r1 == n)
            expected = np.ones(r1 - r0) if keep else np.zeros(r1 - r0)
            np.testing.assert_array_equal(out[r0:r1], expected)


@pytest.mark.parametrize("size", [0, 2, 4, -1, 3.0, True, "3"])
def test_bad_window_size_raises_config_error(size):
    with pytest.raises(ConfigError, match="odd number of frames such as 3 or 5"):
        closing([0, 1, 0], size)
    with pytest.raises(ConfigError, match="odd number of frames"):
        opening([0, 1, 0], size)


def test_labels_must_be_binary():
    with pytest.raises(ValueError, match="0/1"):
        closing([0, 2, 1], 3)
    with pytest.raises(ValueError, match="1-D"):
        opening(np.zeros((2, 2)), 3)


def test_remove_short_bouts():
    y = [1, 0, 1, 1, 0, 1, 1, 1, 0, 0, 1, 1]
    assert remove_short_bouts(y, 2).tolist() == [0, 0, 1, 1, 0, 1, 1, 1, 0, 0, 1, 1]
    assert remove_short_bouts(y, 3).tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0]
    assert remove_short_bouts(y, 4).tolist() == [0] * 12
    assert remove_short_bouts(y, 3).dtype == np.int8
    for bad in (0, -2, 2.5, False):
        with pytest.raises(ConfigError, match="min_bout"):
            remove_short_bouts(y, bad)


# --- PostProcess --------------------------------------------------------------------------------


def test_postprocess_round_trip_and_identity():
    pp = PostProcess(closing=5, opening=3, min_bout=4)
    assert pp.to_dict() == {"closing": 5, "opening": 3, "min_bout": 4}
    assert PostProcess.from_dict(pp.to_dict()) == pp
    assert PostProcess.from_dict({"closing": 3}) == PostProcess(3, 1, 1)  # missing sizes are off
    assert PostProcess(np.int64(3)) == PostProcess(3) and hash(PostProcess(np.int64(3))) == hash(PostProcess(3))
    assert PostProcess().is_identity and not pp.is_identity
    y = np.array([0, 1, 0, 1, 1, 0, 0])
    assert PostProcess().apply(y).tolist() == y.tolist()


def test_postprocess_validation():
    with pytest.raises(ConfigError, match="odd number"):
        PostProcess(closing=4)
    with pytest.raises(ConfigError, match="odd number"):
        PostProcess.from_dict({"opening": 2})
    with pytest.raises(ConfigError, match="min_bout"):
        PostProcess(min_bout=0)
    with pytest.raises(ConfigError, match="unknown post-processing setting.*min_len"):
        PostProcess.from_dict({"closing": 3, "min_len": 5})


def test_apply_closes_before_opening():
    y = np.array([0, 0, 0, 1, 0, 1, 0, 0, 0])
    pp = PostProcess(closing=3, opening=3)
    # Closing joins the two blips into a 3-frame bout, which opening with size 3 keeps.
    assert pp.apply(y).tolist() == [0, 0, 0, 1, 1, 1, 0, 0, 0]
    # The other order would remove both blips before they could be joined.
    assert closing(opening(y, 3), 3).tolist() == [0] * 9
    # min_bout comes last: the joined bout of 3 frames is dropped by min_bout 4.
    assert PostProcess(closing=3, min_bout=4).apply(y).tolist() == [0] * 9


def test_postprocess_never_extends_a_bout_to_the_edge():
    # A bout 2 frames from the start and 3 from the end: the largest closing leaves the edges alone.
    y = np.array([0, 0, 1, 1, 1, 0, 1, 1, 0, 0, 0])
    for size in (3, 5, 31):
        assert PostProcess(closing=size).apply(y).tolist() == [0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0]
    # Opening after closing only removes: nothing appears at the edges either.
    assert PostProcess(closing=31, opening=5).apply(y).tolist() == [0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0]
    assert PostProcess(closing=31, opening=7).apply(y).tolist() == [0] * 11  # the 6-frame bout is short


def test_tune_with_bouts_near_the_edges():
    # Folds whose true bouts start 3 frames in and end 3 frames before the end, predictions with a
    # hole: closing fills the hole; with replicated borders it also filled the 3 edge frames.
    y = np.zeros(40, dtype=np.int8)
    y[3:37] = 1
    pred = y.copy()
    pred[10] = pred[25] = 0
    p = np.where(pred == 1, 0.9, 0.1)
    chosen, scores = tune_postprocess([y, y], [p, p], threshold=0.5, grid={"closing": [3, 5, 7, 15]})
    assert chosen == PostProcess(closing=3)
    assert scores["score_post"] == pytest.approx(1.0)
    for size in (3, 5, 7, 15):
        np.testing.assert_array_equal(closing(pred, size), y)


# --- threshold ----------------------------------------------------------------------------------


def _random_folds(seed: int, n_folds: int = 4):
    rng = np.random.default_rng(seed)
    y_folds, p_folds = [], []
    for _ in range(n_folds):
        n = int(rng.integers(50, 150))
        y = (rng.random(n) < 0.3).astype(np.int8)
        # Informative but noisy, rounded so that some probabilities tie.
        p = np.clip(np.round(0.35 * y + rng.random(n) * 0.65, 2), 0.0, 1.0)
        y_folds.append(y)
        p_folds.append(p)
    return y_folds, p_folds


def _pooled_counts(y_folds, p_folds, threshold):
    y, p = np.concatenate(y_folds).astype(bool), np.concatenate(p_folds)
    predicted = p >= threshold
    tp = np.count_nonzero(predicted & y)
    return tp, np.count_nonzero(predicted & ~y), np.count_nonzero(~predicted & y)


@pytest.mark.parametrize("seed", range(5))
def test_max_f1_matches_brute_force(seed):
    y_folds, p_folds = _random_folds(seed)
    chosen = choose_threshold(y_folds, p_folds, "max_f1")

    def f1(t):
        tp, fp, fn = _pooled_counts(y_folds, p_folds, t)
        return 2 * tp / (2 * tp + fp + fn)

    candidates = np.unique(np.concatenate(p_folds))
    best = max(f1(t) for t in candidates)
    assert f1(chosen) == pytest.approx(best)
    assert chosen == max(t for t in candidates if f1(t) == pytest.approx(best))  # ties: the highest


@pytest.mark.parametrize(("seed", "target"), [(0, 0.9), (1, 0.5), (2, 0.75), (3, 1.0)])
def test_target_recall_is_the_highest_threshold_reaching_it(seed, target):
    y_folds, p_folds = _random_folds(seed)
    chosen = choose_threshold(y_folds, p_folds, f"recall:{target}")

    def recall(t):
        tp, _, fn = _pooled_counts(y_folds, p_folds, t)
        return tp / (tp + fn)

    assert recall(chosen) >= target
    candidates = np.unique(np.concatenate(p_folds))
    assert chosen == max(t for t in candidates if recall(t) >= target)
    higher = candidates[candidates > chosen]
    assert higher.size == 0 or recall(higher.min()) < target


def test_choose_threshold_is_deterministic_and_ignores_fold_order():
    # The function sees only the CV folds' out-of-fold predictions: test data cannot reach it.
    y_folds, p_folds = _random_folds(7, n_folds=6)
    for rule in ("max_f1", "recall:0.8"):
        first = choose_threshold(y_folds, p_folds, rule)
        assert choose_threshold(y_folds, p_folds, rule) == first
        order = [3, 0, 5, 1, 4, 2]
        assert choose_threshold([y_folds[k] for k in order], [p_folds[k] for k in order], rule) == first
        assert 0.0 <= first <= 1.0


def test_threshold_rules():
    assert parse_threshold_rule("max_f1") == ("max_f1", None)
    assert parse_threshold_rule(" Recall:0.9 ") == ("recall", 0.9)
    assert parse_threshold_rule("recall:1") == ("recall", 1.0)
    for bad in ("f1", "recall", "recall:", "recall:0", "recall:1.5", "recall:nan", "recall:x", "precision:0.9", None):
        with pytest.raises(ConfigError, match="'max_f1' or 'recall:<target>'"):
            parse_threshold_rule(bad)
    y_folds, p_folds = _random_folds(0)
    with pytest.raises(ConfigError, match="recall:0.9"):
        choose_threshold(y_folds, p_folds, "recall=0.9")


def test_choose_threshold_bad_input():
    with pytest.raises(ValueError, match="no positive frame"):
        choose_threshold([np.zeros(5), np.zeros(3)], [np.full(5, 0.2), np.full(3, 0.7)])
    with pytest.raises(ValueError, match="folds"):
        choose_threshold([np.array([0, 1])], [np.array([0.1, 0.9]), np.array([0.5])])
    with pytest.raises(ValueError, match="frame by frame"):
        choose_threshold([np.array([0, 1])], [np.array([0.1, 0.9, 0.5])])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        choose_threshold([np.array([0, 1])], [np.array([0.1, 1.5])])


# --- grid and tuning ----------------------------------------------------------------------------


def test_default_grid():
    # 0.2 s is 6 frames at 30 fps (halfway between 5 and 7: rounds up) and 2 frames at 10 fps.
    assert default_grid(30) == {"closing": [1, 7, 15, 31], "opening": [1, 7, 15], "min_bout": [1, 6, 15, 30]}
    assert default_grid(10) == {"closing": [1, 3, 5, 11], "opening": [1, 3, 5], "min_bout": [1, 2, 5, 10]}
    # At a low frame rate short windows collapse to the same size and are listed once.
    assert default_grid(2) == {"closing": [1, 3], "opening": [1], "min_bout": [1, 2]}
    for name, sizes in default_grid(25).items():
        assert sizes == sorted(set(sizes)) and sizes[0] == 1
        if name != "min_bout":
            assert all(s % 2 == 1 for s in sizes)
    for bad in (0, -10, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="fps"):
            default_grid(bad)


def _fragmented(seed: int, n_bouts: int = 20):
    """True bouts of 20 frames 40 frames apart; predictions with 1-frame holes and 1-frame blips."""
    rng = np.random.default_rng(seed)
    n = 60 * n_bouts + 40
    y = np.zeros(n, dtype=np.int8)
    starts = 40 + 60 * np.arange(n_bouts)
    for s in starts:
        y[s : s + 20] = 1
    pred = y.copy()
    for s in starts:
        pred[s + rng.choice(np.arange(3, 17), size=2, replace=False)] = 0  # holes inside the bout
        pred[s - 20 + int(rng.integers(-3, 4))] = 1  # a blip mid-gap, far from any bout
    # Probabilities on either side of 0.5, so the threshold reproduces `pred`.
    proba = np.where(pred == 1, 0.8, 0.2) + rng.uniform(-0.1, 0.1, n)
    return y, proba


@pytest.mark.parametrize("fps", [10.0, 30.0])
def test_tune_repairs_fragmented_predictions(fps):
    folds = [_fragmented(seed) for seed in range(4)]
    y_folds, p_folds = [f[0] for f in folds], [f[1] for f in folds]
    chosen, scores = tune_postprocess(y_folds, p_folds, threshold=0.5, fps=fps)
    assert chosen.closing >= 3
    assert chosen.min_bout > 1 or chosen.opening > 1
    assert scores["score_post"] > scores["score_raw"]
    assert scores["score_post"] == pytest.approx(1.0)  # holes filled and blips gone: a perfect repair
    for y, p in zip(y_folds, p_folds, strict=True):
        np.testing.assert_array_equal(chosen.apply((p >= 0.5).astype(int)), y)


def test_tune_keeps_clean_predictions_unchanged():
    rng = np.random.default_rng(1)
    y_folds, p_folds = [], []
    for seed in range(3):
        y, _ = _fragmented(seed)
        y_folds.append(y)
        p_folds.append(np.where(y == 1, 0.9, 0.1) + rng.uniform(-0.05, 0.05, y.size))
    chosen, scores = tune_postprocess(y_folds, p_folds, threshold=0.5, fps=30)
    # Some smoothing also scores 1.0 here; a tie prefers doing less, so nothing is done.
    assert chosen.is_identity
    assert scores["score_raw"] == scores["score_post"] == pytest.approx(1.0)


def test_tune_with_a_custom_grid_always_tries_the_identity():
    y, p = _fragmented(0)
    chosen, scores = tune_postprocess([y], [p], threshold=0.5, grid={"closing": [31]})
    # Closing over 31 frames merges the blips into the bouts: worse than doing nothing.
    assert chosen.is_identity and scores["score_post"] == scores["score_raw"]
    chosen, _ = tune_postprocess([y], [p], threshold=0.5, grid={"closing": [3], "min_bout": [2]})
    assert chosen == PostProcess(closing=3, min_bout=2)


def test_tune_bad_input():
    y, p = _fragmented(0)
    with pytest.raises(ConfigError, match="unknown post-processing grid key"):
        tune_postprocess([y], [p], 0.5, grid={"closings": [3]})
    with pytest.raises(ConfigError, match="odd number"):
        tune_postprocess([y], [p], 0.5, grid={"closing": [4]})
    with pytest.raises(ConfigError, match="lists no opening size"):
        tune_postprocess([y], [p], 0.5, grid={"opening": []})
    with pytest.raises(ValueError, match="threshold"):
        tune_postprocess([y], [p], 1.5)
    with pytest.raises(ValueError, match="no positive frame"):
        tune_postprocess([np.zeros_like(y)], [p], 0.5)
    with pytest.raises(ValueError, match="wrap one fold in a list"):
        tune_postprocess(y, p, 0.5)


def _many_bouts():
    rng = np.random.default_rng(0)
    y_folds, p_folds = [], []
    for _ in range(6):
        y = np.zeros(10_000, dtype=np.int8)
        for s in range(20, 10_000 - 40, 60):
            y[s : s + 20] = 1
        y_folds.append(y)
        p_folds.append(np.clip(0.6 * y + rng.normal(0.2, 0.25, y.size), 0.0, 1.0))  # thousands of raw bouts
    return y_folds, p_folds


def test_tune_handles_thousands_of_fragmented_bouts():
    y_folds, p_folds = _many_bouts()
    chosen, scores = tune_postprocess(y_folds, p_folds, threshold=0.5, fps=30)
    assert not chosen.is_identity and scores["score_post"] > scores["score_raw"]


def test_tune_speed(benchmark):
    """Timed by pytest-benchmark (skipped in the normal run), never asserted against the clock."""
    y_folds, p_folds = _many_bouts()
    chosen, _ = benchmark(tune_postprocess, y_folds, p_folds, threshold=0.5, fps=30)
    assert not chosen.is_identity


def _flickering_bouts(seed: int, n: int = 600) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = np.zeros(n, np.int8)
    for start in rng.integers(0, n - 20, 25):
        labels[start:start + rng.integers(3, 15)] = 1
    return (labels ^ (rng.random(n) < 0.15)).astype(np.int8)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_post_processing_keeps_its_seconds_at_another_frame_rate(seed):
    """Tuned on 10 fps videos, applied to the same recording at 30 fps: the same labels, frame for frame."""
    slow = _flickering_bouts(seed)
    fast = np.repeat(slow, 3)
    post = PostProcess(closing=5, opening=3, min_bout=4)
    expected = np.repeat(post.apply(slow), 3)
    assert post.at_fps(10, 30) == PostProcess(closing=15, opening=9, min_bout=12)
    np.testing.assert_array_equal(post.at_fps(10, 30).apply(fast), expected)
    assert (post.apply(fast) == expected).mean() < 0.9  # sizes kept in frames: a third of the time


def test_post_processing_at_the_same_or_an_unknown_rate_is_unchanged():
    post = PostProcess(closing=5, opening=3, min_bout=4)
    assert post.at_fps(10, 10) is post and post.at_fps(10, 10.05) is post
    assert post.at_fps(None, 30) is post and post.at_fps(10, None) is post
    assert PostProcess().at_fps(10, 50) == PostProcess()  # off stays off
    assert post.at_fps(30, 10) == PostProcess(closing=1, opening=1, min_bout=1)
