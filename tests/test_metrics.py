"""Frame metrics against hand-computed values; undefined cases give 0.0 or NaN, never a warning."""

import math
import warnings

import numpy as np
import pytest

from mbr_bench.benchmark.metrics import confusion, frame_metrics, pr_curve, summarise

Y = np.array([0, 0, 1, 1])
P = np.array([0.1, 0.6, 0.4, 0.9])


@pytest.fixture(autouse=True)
def warnings_are_errors():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def test_hand_computed_case():
    m = frame_metrics(Y, P)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (1, 1, 1, 1)
    assert m["precision"] == 0.5 and m["recall"] == 0.5 and m["accuracy"] == 0.5 and m["f1"] == 0.5
    # ranked 0.9(+) 0.6(-) 0.4(+) 0.1(-): AP = 1/2 * 1 + 1/2 * 2/3
    assert m["pr_auc"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert m["pr_auc"] == pytest.approx(0.8333333333)
    # 3 of the 4 (positive, negative) pairs are ranked correctly
    assert m["roc_auc"] == pytest.approx(0.75)
    assert m["positive_rate"] == 0.5 and m["n_frames"] == 4
    assert confusion(Y, P).tolist() == [[1, 1], [1, 1]]


def test_threshold_moves_the_counts():
    m = frame_metrics(Y, P, threshold=0.3)  # 0.4 now positive: tp 2, fp 1
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (2, 1, 0, 1)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == 1.0
    assert m["f1"] == pytest.approx(0.8)
    assert confusion(Y, P, threshold=0.95).tolist() == [[2, 0], [2, 0]]
    assert frame_metrics(Y, P, threshold=0.95)["precision"] == 0.0  # nothing predicted positive
    assert frame_metrics(Y, P, 0.3)["pr_auc"] == frame_metrics(Y, P, 0.7)["pr_auc"]  # threshold-free


def test_probability_equal_to_threshold_is_positive_as_on_the_pr_curve():
    y = np.array([0, 1, 1, 0, 1, 0, 0, 1])
    p = np.array([0.2, 0.5, 0.7, 0.5, 0.3, 0.1, 0.8, 0.9])
    precision, recall, thresholds = pr_curve(y, p)
    assert len(precision) == len(recall) == len(thresholds) + 1
    for i, threshold in enumerate(thresholds):
        m = frame_metrics(y, p, threshold=float(threshold))
        assert m["precision"] == pytest.approx(precision[i]) and m["recall"] == pytest.approx(recall[i])
    assert frame_metrics(y, p, threshold=0.5)["tp"] == 3


def test_perfect_predictions():
    y = np.array([0, 1, 1, 0, 0, 1])
    m = frame_metrics(y, y.astype(float))
    assert m["pr_auc"] == 1.0 and m["roc_auc"] == 1.0
    assert m["accuracy"] == m["precision"] == m["recall"] == m["f1"] == 1.0
    assert frame_metrics(y.astype(bool), np.where(y, 0.7, 0.2))["pr_auc"] == 1.0


def test_single_class_gives_nan_or_zero_without_warnings():
    negatives = frame_metrics(np.zeros(5, int), np.array([0.1, 0.7, 0.2, 0.9, 0.0]))
    assert math.isnan(negatives["roc_auc"]) and math.isnan(negatives["pr_auc"])
    assert negatives["precision"] == 0.0 and negatives["recall"] == 0.0 and negatives["f1"] == 0.0
    assert negatives["fp"] == 2 and negatives["accuracy"] == pytest.approx(3 / 5)
    assert negatives["positive_rate"] == 0.0
    positives = frame_metrics(np.ones(3, int), np.array([0.2, 0.6, 0.9]))
    assert math.isnan(positives["roc_auc"]) and positives["pr_auc"] == 1.0
    assert positives["recall"] == pytest.approx(2 / 3) and positives["precision"] == 1.0
    with pytest.raises(ValueError, match="at least one positive frame"):
        pr_curve(np.zeros(3, int), np.array([0.1, 0.5, 0.9]))


@pytest.mark.parametrize(
    ("y", "p", "kwargs", "match"),
    [
        ([0, 1, 1], [0.1, 0.2], {}, "shape"),
        ([0, 1], [0.1, 1.2], {}, r"\[0, 1\]"),
        ([0, 1], [-0.1, 0.5], {}, r"\[0, 1\]"),
        ([0, 1], [np.nan, 0.5], {}, "NaN"),
        ([0, 2], [0.1, 0.5], {}, "0/1 labels"),
        (["a", "b"], [0.1, 0.5], {}, "0/1 labels"),
        ([], [], {}, "no frames"),
        ([0, 1], [0.1, 0.5], {"threshold": 1.5}, "threshold"),
    ],
)
def test_programming_errors_raise_value_error(y, p, kwargs, match):
    with pytest.raises(ValueError, match=match):
        frame_metrics(np.array(y), np.array(p), **kwargs)


def test_summarise_ignores_nan():
    summary = summarise(
        [
            {"pr_auc": 0.5, "roc_auc": math.nan, "tp": 2},
            {"pr_auc": 0.9, "roc_auc": 0.8, "tp": 4},
            {"pr_auc": math.nan, "roc_auc": 0.6, "tp": 6},
        ]
    )
    # Sample standard deviation (ddof=1) over the folds that have a value; SE = std / sqrt(their number).
    assert summary["pr_auc_mean"] == pytest.approx(0.7) and summary["pr_auc_std"] == pytest.approx(np.std([0.5, 0.9], ddof=1))
    assert summary["pr_auc_se"] == pytest.approx(np.std([0.5, 0.9], ddof=1) / np.sqrt(2))
    assert summary["roc_auc_mean"] == pytest.approx(0.7) and summary["roc_auc_std"] == pytest.approx(np.std([0.8, 0.6], ddof=1))
    assert summary["tp_mean"] == pytest.approx(4.0) and summary["tp_std"] == pytest.approx(2.0)
    assert summary["tp_se"] == pytest.approx(2.0 / np.sqrt(3))
    assert summary["n_folds"] == 3
    assert set(summary) == {f"{key}_{stat}" for key in ("pr_auc", "roc_auc", "tp") for stat in ("mean", "std", "se")} | {"n_folds"}


def test_summarise_all_nan_missing_keys_and_real_folds():
    summary = summarise([{"roc_auc": math.nan}, {"roc_auc": math.nan, "f1": 0.4}])
    assert math.isnan(summary["roc_auc_mean"]) and math.isnan(summary["roc_auc_std"])
    assert summary["f1_mean"] == 0.4 and math.isnan(summary["f1_std"])  # one value: no spread; no f1 counts as NaN
    folds = [frame_metrics(Y, P), frame_metrics(Y, Y.astype(float))]
    assert summarise(folds)["pr_auc_mean"] == pytest.approx((0.8333333333 + 1.0) / 2)
    with pytest.raises(ValueError, match="at least one fold"):
        summarise([])
