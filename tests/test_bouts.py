"""Bout metrics against hand-computed cases: IoU matching, one-to-one, pooling, empty cases, errors."""

import math
import warnings

import numpy as np
import pytest

from mbr_bench.benchmark.bouts import bout_metrics, match_bouts, segment_iou
from mbr_bench.benchmark.data.labels import bout_spans


@pytest.fixture(autouse=True)
def warnings_are_errors():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def test_segment_iou():
    assert segment_iou((1, 5), (2, 6)) == pytest.approx(3 / 5)  # overlap 2..5 = 3, union 1..6 = 5
    assert segment_iou((0, 10), (2, 4)) == pytest.approx(0.2)  # inside: 2 / 10
    assert segment_iou((0, 3), (3, 6)) == 0.0  # touching is not overlapping: stop is exclusive
    assert segment_iou((4, 8), (4, 8)) == 1.0


def test_hand_computed_case():
    y_true = np.array([0, 1, 1, 1, 1, 0, 0, 1, 1, 0])  # bouts [1, 5) and [7, 9)
    y_pred = np.array([0, 0, 1, 1, 1, 1, 0, 0, 0, 0])  # bout [2, 6)
    # [1, 5) vs [2, 6): overlap 2..5 = 3 frames, union 1..6 = 5 frames, IoU 0.6; [7, 9) unmatched.
    m = bout_metrics(y_true, y_pred, iou_thresholds=(0.5, 0.6, 0.75))
    assert (m["bout_tp_iou50"], m["bout_fp_iou50"], m["bout_fn_iou50"]) == (1.0, 0.0, 1.0)
    assert m["bout_precision_iou50"] == 1.0 and m["bout_recall_iou50"] == 0.5
    assert m["bout_f1_iou50"] == pytest.approx(2 / 3)  # 2 * 1 / (2 * 1 + 0 + 1)
    assert m["bout_tp_iou60"] == 1.0  # IoU >= threshold is inclusive
    # At 0.75 nothing matches: the prediction is a false positive and both true bouts are missed.
    assert (m["bout_tp_iou75"], m["bout_fp_iou75"], m["bout_fn_iou75"]) == (0.0, 1.0, 2.0)
    assert m["bout_precision_iou75"] == m["bout_recall_iou75"] == m["bout_f1_iou75"] == 0.0
    # Counts and durations: true bouts of 4 and 2 frames (mean 3), one predicted bout of 4.
    assert m["n_true_bouts"] == 2.0 and m["n_pred_bouts"] == 1.0 and m["bout_count_error"] == -1.0
    assert m["mean_bout_true"] == 3.0 and m["mean_bout_pred"] == 4.0
    # The duration error compares matched pairs only: [1, 5) and [2, 6) are both 4 frames long.
    assert m["mean_duration_error"] == 0.0
    assert "mean_duration_error_s" not in m
    assert all(isinstance(v, float) for v in m.values())


def test_default_keys_and_seconds():
    y = np.array([0, 1, 1, 0, 1, 1, 1, 1])
    m = bout_metrics(y, y, fps=10)
    for suffix in ("iou10", "iou25", "iou50"):
        for name in ("tp", "fp", "fn", "precision", "recall", "f1"):
            assert f"bout_{name}_{suffix}" in m
        assert m[f"bout_f1_{suffix}"] == 1.0
    assert m["mean_duration_error"] == 0.0 and m["mean_duration_error_s"] == 0.0
    pred = np.array([0, 1, 1, 1, 1, 1, 1, 1])  # one bout of 7 frames vs bouts of 2 and 4 (mean 3)
    m = bout_metrics(y, pred, fps=10)
    # [1, 8) matches [4, 8) (IoU 4/7, better than 2/7): |7 - 4| = 3 frames, 0.3 s at 10 fps.
    assert m["mean_duration_error"] == 3.0 and m["mean_duration_error_s"] == pytest.approx(0.3)
    assert m["bout_count_error"] == -1.0


def test_split_prediction():
    y_true = np.zeros(12, dtype=int)
    y_true[1:11] = 1  # one true bout of 10 frames
    y_pred = np.zeros(12, dtype=int)
    y_pred[2:6] = 1  # two predicted bouts of 4 frames inside it, IoU 4 / 10 = 0.4 each
    y_pred[7:11] = 1
    m = bout_metrics(y_true, y_pred, iou_thresholds=(0.1, 0.4, 0.5))
    # Only one of the two pieces may match the true bout: the other is a false positive.
    assert (m["bout_tp_iou10"], m["bout_fp_iou10"], m["bout_fn_iou10"]) == (1.0, 1.0, 0.0)
    assert m["bout_precision_iou10"] == 0.5 and m["bout_recall_iou10"] == 1.0
    assert m["bout_f1_iou10"] == pytest.approx(2 / 3)
    assert m["bout_tp_iou40"] == 1.0
    assert (m["bout_tp_iou50"], m["bout_fp_iou50"], m["bout_fn_iou50"]) == (0.0, 2.0, 1.0)
    # The matched piece [2, 6) is 6 frames shorter than the true bout: absolute, so +6.
    assert m["bout_count_error"] == 1.0 and m["mean_duration_error"] == 6.0
    # Equal IoU: the tie goes to the earlier predicted start.
    assert match_bouts(bout_spans(y_true), bout_spans(y_pred), 0.1) == [(0, 0)]


def test_duration_errors_do_not_cancel():
    # True bouts [2, 12) and [20, 30), 10 frames each; one predicted 2 frames too long, the other
    # 2 frames too short. Mean lengths agree (10 and 10): the old signed error would be 0.
    y_true = np.zeros(40, dtype=int)
    y_true[2:12] = 1
    y_true[20:30] = 1
    y_pred = np.zeros(40, dtype=int)
    y_pred[1:13] = 1  # 12 frames
    y_pred[21:29] = 1  # 8 frames
    m = bout_metrics(y_true, y_pred, fps=4)
    assert m["mean_bout_true"] == m["mean_bout_pred"] == 10.0  # the signed difference of means: 0
    assert m["mean_duration_error"] == 2.0 and m["mean_duration_error_s"] == pytest.approx(0.5)
    # The same across videos: one video over-long, the other over-short, pooled over the pairs.
    m = bout_metrics([y_true[:16], y_true[16:]], [y_pred[:16], y_pred[16:]])
    assert m["mean_duration_error"] == 2.0
    # Unequal errors average: |12 - 10| and |5 - 10| over two pairs.
    y_pred[21:29] = 0
    y_pred[22:27] = 1
    assert bout_metrics(y_true, y_pred)["mean_duration_error"] == pytest.approx(3.5)


def test_duration_error_uses_the_lowest_threshold_matches():
    # A true bout of 10 frames and a prediction of 3 inside it: IoU 0.3, |3 - 10| = 7.
    y_true = np.array([0] + [1] * 10 + [0])
    y_pred = np.array([0] * 4 + [1] * 3 + [0] * 5)
    assert bout_metrics(y_true, y_pred, iou_thresholds=(0.25, 0.5))["mean_duration_error"] == 7.0
    # Nothing matches at 0.5 alone: no pair to time, NaN (the miss shows in bout recall).
    assert math.isnan(bout_metrics(y_true, y_pred, iou_thresholds=(0.5,))["mean_duration_error"])


def test_one_to_one_highest_iou_wins():
    true_spans = np.array([[0, 10]])
    pred_spans = np.array([[0, 3], [4, 10]])  # IoU 0.3 and 0.6: the better one takes the true bout
    assert match_bouts(true_spans, pred_spans, 0.1) == [(0, 1)]
    # One prediction overlapping two true bouts matches only one of them.
    true_spans = np.array([[0, 4], [6, 8]])  # IoU with [0, 8): 4/8 and 2/8
    assert match_bouts(true_spans, np.array([[0, 8]]), 0.1) == [(0, 0)]
    m = bout_metrics([1, 1, 1, 1, 0, 0, 1, 1], [1] * 8, iou_thresholds=(0.1,))
    assert (m["bout_tp_iou10"], m["bout_fp_iou10"], m["bout_fn_iou10"]) == (1.0, 0.0, 1.0)


def test_greedy_is_not_fooled_by_order():
    # true [0, 6) and [8, 14); pred [2, 9) overlaps both (IoU 4/9 and 1/12), pred [9, 14) overlaps the
    # second (IoU 5/6). Greedy by IoU: (t1, p1) 0.83 first, then (t0, p0) 0.44.
    true_spans = np.array([[0, 6], [8, 14]])
    pred_spans = np.array([[2, 9], [9, 14]])
    assert match_bouts(true_spans, pred_spans, 0.05) == [(0, 0), (1, 1)]
    assert match_bouts(true_spans, pred_spans, 0.5) == [(1, 1)]


def test_matching_agrees_with_a_brute_force_greedy():
    rng = np.random.default_rng(0)
    for _ in range(50):
        y_true = (rng.random(200) < 0.4).astype(int)
        y_pred = (rng.random(200) < 0.4).astype(int)
        ts, ps = bout_spans(y_true), bout_spans(y_pred)
        for threshold in (0.1, 0.3, 0.5):
            pairs = [
                (segment_iou(ts[i], ps[j]), ts[i][0], ps[j][0], i, j)
                for i in range(len(ts))
                for j in range(len(ps))
                if segment_iou(ts[i], ps[j]) >= threshold
            ]
            pairs.sort(key=lambda q: (-q[0], q[1], q[2]))
            used_t, used_p, expected = set(), set(), []
            for _, _, _, i, j in pairs:
                if i not in used_t and j not in used_p:
                    used_t.add(i)
                    used_p.add(j)
                    expected.append((i, j))
            assert match_bouts(ts, ps, threshold) == sorted(expected)


def test_pooling_over_videos_sums_counts():
    video_a = (np.array([0, 1, 1, 1, 1, 0, 0, 1, 1, 0]), np.array([0, 0, 1, 1, 1, 1, 0, 0, 0, 0]))
    video_b = (np.array([1, 1, 0, 0, 1, 1, 1]), np.array([1, 1, 1, 0, 0, 0, 1]))
    a, b = bout_metrics(*video_a), bout_metrics(*video_b)
    pooled = bout_metrics([video_a[0], video_b[0]], [video_a[1], video_b[1]])
    for suffix in ("iou10", "iou25", "iou50"):
        tp, fp, fn = (a[f"bout_{k}_{suffix}"] + b[f"bout_{k}_{suffix}"] for k in ("tp", "fp", "fn"))
        assert (pooled[f"bout_tp_{suffix}"], pooled[f"bout_fp_{suffix}"], pooled[f"bout_fn_{suffix}"]) == (tp, fp, fn)
        assert pooled[f"bout_f1_{suffix}"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert pooled["n_true_bouts"] == a["n_true_bouts"] + b["n_true_bouts"] == 4.0
    # Durations pool over bouts, not over videos: true bouts of 4, 2, 2, 3 frames.
    assert pooled["mean_bout_true"] == pytest.approx(11 / 4)


def test_bouts_never_cross_a_video_boundary():
    # Concatenated, the two videos' edge bouts would join into one bout of 4 frames.
    first, second = np.array([0, 0, 1, 1]), np.array([1, 1, 0, 0])
    m = bout_metrics([first, second], [first, second])
    assert m["n_true_bouts"] == 2.0 and m["mean_bout_true"] == 2.0
    assert bout_metrics(np.concatenate([first, second]), np.concatenate([first, second]))["n_true_bouts"] == 1.0


def test_empty_cases():
    zeros = np.zeros(6, dtype=int)
    some = np.array([0, 1, 1, 0, 1, 0])
    m = bout_metrics(zeros, zeros)  # nothing to score
    assert math.isnan(m["bout_precision_iou50"]) and math.isnan(m["bout_recall_iou50"])
    assert math.isnan(m["bout_f1_iou50"])
    assert m["bout_tp_iou50"] == m["bout_fp_iou50"] == m["bout_fn_iou50"] == 0.0
    assert math.isnan(m["mean_bout_true"]) and math.isnan(m["mean_duration_error"])
    assert m["bout_count_error"] == 0.0
    m = bout_metrics(zeros, some, fps=10)  # only predicted bouts: all false positives
    assert m["bout_fp_iou50"] == 2.0 and m["bout_precision_iou50"] == 0.0
    assert m["bout_recall_iou50"] == 0.0  # no true bout: an empty denominator gives 0.0
    assert m["bout_f1_iou50"] == 0.0
    assert m["bout_count_error"] == 2.0 and m["mean_bout_pred"] == 1.5
    assert math.isnan(m["mean_bout_true"]) and math.isnan(m["mean_duration_error_s"])
    m = bout_metrics(some, zeros)  # only true bouts: all missed
    assert m["bout_fn_iou50"] == 2.0 and m["bout_precision_iou50"] == 0.0 and m["bout_recall_iou50"] == 0.0
    assert m["bout_f1_iou50"] == 0.0 and math.isnan(m["mean_bout_pred"])


def test_bool_and_list_inputs():
    expected = bout_metrics(np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0]))
    assert bout_metrics([False, True, True, False], [False, True, False, False]) == expected
    assert bout_metrics([0, 1, 1, 0], [0.0, 1.0, 0.0, 0.0]) == expected


@pytest.mark.parametrize(
    ("y_true", "y_pred", "kwargs", "message"),
    [
        ([0, 1, 2], [0, 1, 1], {}, "0/1"),
        ([0, 1, 1], [0, 1], {}, "frame for frame"),
        ([[0, 1], [1, 0]], [[0, 1]], {}, "videos"),
        ([[0, 1], [1, 0, 1]], [[0, 1], [1, 0]], {}, "video 1"),
        ([0, 1], [[0, 1]], {}, "one of each"),
        (np.zeros((2, 3)), np.zeros((2, 3)), {}, "1-D"),
        (["a", "b"], ["a", "b"], {}, "0/1"),
        ([], [], {}, "no videos"),
        ([0, 1], [0, 1], {"iou_thresholds": (0.0,)}, r"\(0, 1\]"),
        ([0, 1], [0, 1], {"iou_thresholds": (0.5, 1.2)}, r"\(0, 1\]"),
        ([0, 1], [0, 1], {"iou_thresholds": (0.1, 0.101)}, "twice"),
        ([0, 1], [0, 1], {"fps": 0}, "fps"),
    ],
)
def test_bad_input_raises(y_true, y_pred, kwargs, message):
    with pytest.raises(ValueError, match=message):
        bout_metrics(y_true, y_pred, **kwargs)


def test_bad_spans_raise():
    with pytest.raises(ValueError, match="stop > start"):
        segment_iou((3, 3), (0, 4))
    with pytest.raises(ValueError, match="sorted and non-overlapping"):
        match_bouts(np.array([[0, 5], [3, 8]]), np.array([[0, 2]]), 0.5)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        match_bouts(np.array([[0, 5]]), np.array([[0, 2]]), 0.0)
