import numpy as np
import pytest

from mbr_bench.core.errors import DataError
from mbr_bench.benchmark.features.sequences import (
    class_weights,
    sample_weights,
    stitch,
    training_windows,
    window_starts,
)


def test_class_weights_hand_case_over_all_videos_together():
    # 10 frames in two videos, 2 positive: w_neg = 10 / (2 * 8), w_pos = 10 / (2 * 2).
    labels = [np.array([0, 1, 0, 0]), np.array([0, 0, 1, 0, 0, 0])]
    w_negative, w_positive = class_weights(labels)
    assert w_negative == pytest.approx(10 / 16)
    assert w_positive == pytest.approx(10 / 4)
    # Per video the ratio would differ (video 0 alone: 4/6 and 4/2), so pooling is what is tested.
    assert class_weights(labels[:1]) != (w_negative, w_positive)


def test_weighted_classes_carry_equal_totals():
    rng = np.random.default_rng(1)
    labels = [(rng.random(n) < 0.13).astype(int) for n in (57, 230, 91)]
    weights = sample_weights(labels)
    all_labels, all_weights = np.concatenate(labels), np.concatenate(weights)
    n_frames = len(all_labels)
    assert all_weights.dtype == np.float32
    assert [len(w) for w in weights] == [57, 230, 91]
    assert all_weights[all_labels == 1].sum() == pytest.approx(n_frames / 2, rel=1e-5)
    assert all_weights[all_labels == 0].sum() == pytest.approx(n_frames / 2, rel=1e-5)


@pytest.mark.parametrize("value, kind", [(0, "positive"), (1, "negative")])
def test_class_weights_need_both_classes(value, kind):
    with pytest.raises(DataError, match=f"no {kind} frame among the 7 training frames"):
        class_weights([np.full(3, value), np.full(4, value)])


def test_class_weights_reject_non_binary_labels():
    with pytest.raises(DataError, match=r"must be 0 or 1, found \[2\]"):
        class_weights([np.array([0, 1, 2])])


@pytest.mark.parametrize(
    "n_frames, length, expected",
    [
        (5, 10, [0]),  # shorter: one padded window
        (10, 10, [0]),  # equal
        (30, 10, [0, 10, 20]),  # divisible
        (25, 10, [0, 10, 15]),  # not divisible: the last window ends at the last frame
        (11, 10, [0, 1]),
    ],
)
def test_window_starts(n_frames, length, expected):
    assert window_starts(n_frames, length).tolist() == expected


def _videos(lengths, dim=3, seed=0):
    rng = np.random.default_rng(seed)
    X = [rng.normal(size=(n, dim)).astype(np.float32) for n in lengths]
    y = [(rng.random(n) < 0.3).astype(int) for n in lengths]
    y[0][0] = 1  # both classes present whatever the draw
    y[0][1] = 0
    return X, y


def test_training_windows_shapes_padding_and_single_count():
    lengths, length = (7, 10, 25, 30), 10
    X, y = _videos(lengths)
    w = sample_weights(y)
    Xw, yw, ww = training_windows(X, y, w, length)
    n_windows = 1 + 1 + 3 + 3
    assert Xw.shape == (n_windows, length, 3) and yw.shape == (n_windows, length, 1) and ww.shape == (n_windows, length)
    assert Xw.dtype == yw.dtype == ww.dtype == np.float32
    # The 7-frame video: zero-padded, weight 0 on padding.
    np.testing.assert_array_equal(Xw[0, :7], X[0])
    assert not Xw[0, 7:].any() and not yw[0, 7:].any() and not ww[0, 7:].any()
    np.testing.assert_array_equal(ww[0, :7], w[0])
    # The 25-frame video's last window starts at 15: frames 15..19 were counted by window [10, 20).
    last = 1 + 1 + 2
    np.testing.assert_array_equal(Xw[last], X[2][15:25])
    assert not ww[last, :5].any()
    np.testing.assert_array_equal(ww[last, 5:], w[2][20:25])
    # Every frame counts exactly once in the loss.
    assert ww.sum() == pytest.approx(np.concatenate(w).sum(), rel=1e-6)
    assert (ww * yw[..., 0]).sum() == pytest.approx(sum((wv * yv).sum() for wv, yv in zip(w, y)), rel=1e-6)


def test_training_windows_reject_mismatched_lengths():
    X, y = _videos((12,))
    with pytest.raises(DataError, match="video #0: 12 embedding frames but 11 labels"):
        training_windows(X, [y[0][:11]], [np.ones(12)], 5)


@pytest.mark.parametrize("n_frames", [1, 9, 10, 11, 20, 37, 101])
@pytest.mark.parametrize("length", [2, 10, 16])
def test_stitch_recovers_every_frame_once(n_frames, length):
    starts = window_starts(n_frames, length)
    windows = np.full((len(starts), length), -1.0)
    for row, start in enumerate(starts):
        span = min(length, n_frames - start)
        windows[row, :span] = np.arange(start, start + span)  # padding stays -1
    np.testing.assert_array_equal(stitch(windows, starts, n_frames), np.arange(n_frames))


def test_stitch_takes_the_first_window_covering_a_frame():
    starts = window_starts(15, 10)  # [0, 5]
    windows = np.stack([np.zeros(10), np.ones(10)])
    np.testing.assert_array_equal(stitch(windows[..., None], starts, 15), [0] * 10 + [1] * 5)
