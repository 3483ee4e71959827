import numpy as np
import pytest

from mbr_bench.core.errors import DataError
from mbr_bench.benchmark.features.sequences import (
    FEATURE_STD_EPSILON,
    class_weights,
    feature_stats,
    prediction_starts,
    prediction_stride,
    sample_weights,
    scale,
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


def test_stitch_takes_the_earliest_window_covering_a_frame():
    starts = window_starts(15, 10)  # [0, 5]
    windows = np.stack([np.zeros(10), np.ones(10)])
    np.testing.assert_array_equal(stitch(windows[..., None], starts, 15), [0] * 10 + [1] * 5)


def test_window_starts_reject_a_bad_stride():
    with pytest.raises(ValueError, match="stride"):
        window_starts(30, 10, 0)
    with pytest.raises(ValueError, match="stride"):
        window_starts(30, 10, 11)


# -- prediction windows: half-overlapping, each frame from the window where it has the most past ------


@pytest.mark.parametrize(
    "n_frames, length, expected",
    [
        (1, 10, [0]),
        (5, 10, [0]),  # shorter than a window: one padded window
        (10, 10, [0]),  # exactly one window
        (11, 10, [0, 1]),  # one frame longer: a second window aligned to the end
        (15, 10, [0, 5]),  # the half-stride window ends at the last frame
        (16, 10, [0, 5, 6]),
        (27, 10, [0, 5, 10, 15, 17]),
        (30, 10, [0, 5, 10, 15, 20]),
        (5, 2, [0, 1, 2, 3]),  # length 2: stride 1
        (7, 3, [0, 1, 2, 3, 4]),  # odd length: stride 3 // 2 = 1
        (12, 5, [0, 2, 4, 6, 7]),  # stride 2
    ],
)
def test_prediction_starts(n_frames, length, expected):
    assert prediction_starts(n_frames, length).tolist() == expected


def test_prediction_stride_is_half_a_window_and_at_least_one():
    assert [prediction_stride(length) for length in (1, 2, 3, 10, 11, 300)] == [1, 1, 1, 5, 5, 150]


def _stitched(n_frames, length, value):
    """Stitch prediction windows whose entry at (window starting at s, position k) is value(s, k);
    padding positions hold -1, so a padded value leaking through shows."""
    starts = prediction_starts(n_frames, length)
    windows = np.full((len(starts), length), -1, np.int64)
    for row, start in enumerate(starts):
        span = min(length, n_frames - start)
        windows[row, :span] = [value(int(start), k) for k in range(span)]
    return stitch(windows, starts, n_frames)


N_FRAMES = [1, 2, 5, 9, 10, 11, 14, 15, 16, 19, 20, 21, 29, 30, 31, 37, 101, 1000]
LENGTHS = [2, 3, 10, 11, 16]


@pytest.mark.parametrize("n_frames", N_FRAMES)
@pytest.mark.parametrize("length", LENGTHS)
def test_prediction_stitch_takes_every_frame_once_from_its_own_position(n_frames, length):
    # Each window reports the frame index at each position: stitching gives back 0 .. n-1, so every
    # frame is taken exactly once, from a window covering it, and no padding is used.
    np.testing.assert_array_equal(_stitched(n_frames, length, lambda start, k: start + k), np.arange(n_frames))


@pytest.mark.parametrize("n_frames", N_FRAMES)
@pytest.mark.parametrize("length", LENGTHS)
def test_prediction_stitch_gives_each_frame_at_least_half_a_window_of_past(n_frames, length):
    # Each window reports, at each position, how many frames of past the window holds there.
    past = _stitched(n_frames, length, lambda start, k: k)
    frames = np.arange(n_frames)
    # Frames of the first window have all their past; every later frame at least length // 2 frames.
    head = frames < length
    np.testing.assert_array_equal(past[head], frames[head])
    assert (past[~head] >= length // 2).all()
    assert (past >= np.minimum(frames, length // 2)).all()
    # ... and it is the most past any window offers: the earliest window covering the frame.
    starts = prediction_starts(n_frames, length)
    for frame in range(n_frames):
        covering = [int(s) for s in starts if s <= frame < s + length]
        assert past[frame] == frame - min(covering)


def test_stitch_rejects_unordered_or_gapped_windows():
    with pytest.raises(ValueError, match="increasing"):
        stitch(np.zeros((2, 10)), np.array([5, 0]), 15)
    with pytest.raises(ValueError, match="uncovered"):
        stitch(np.zeros((2, 10)), np.array([0, 12]), 22)
    with pytest.raises(ValueError, match="cover 10 of 15"):
        stitch(np.zeros((1, 10)), np.array([0]), 15)


# -- feature statistics and scaled training windows ------------------------------------------------


def test_feature_stats_pool_all_frames_of_all_videos():
    rng = np.random.default_rng(3)
    X = [rng.normal(2.0, 3.0, size=(n, 4)).astype(np.float32) for n in (5, 40, 17)]
    X[1][:, 1] += 10.0  # videos differ, so pooled and per-video statistics differ
    mean, std = feature_stats(X)
    pooled = np.concatenate(X).astype(np.float64)
    assert mean.dtype == std.dtype == np.float32 and mean.shape == std.shape == (4,)
    np.testing.assert_allclose(mean, pooled.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(std, pooled.std(axis=0), rtol=1e-6)


def test_feature_stats_over_many_chunks_match_numpy():
    X = np.random.default_rng(4).normal(100.0, 0.5, size=(20_000, 3)).astype(np.float32)
    mean, std = feature_stats([X])
    np.testing.assert_allclose(mean, X.astype(np.float64).mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(std, X.astype(np.float64).std(axis=0), rtol=1e-5)


def test_a_constant_feature_is_centred_not_divided():
    X = np.zeros((30, 2), np.float32)
    X[:, 0] = np.arange(30)
    X[:, 1] = 7.0
    mean, std = feature_stats([X])
    assert mean[1] == 7.0 and std[1] == 1.0 and std[0] > FEATURE_STD_EPSILON
    moved = np.array([[0.0, 7.5]], np.float32)
    assert scale(moved, (mean, std))[0, 1] == pytest.approx(0.5)  # not 0.5 / epsilon


def test_feature_stats_reject_bad_embeddings():
    with pytest.raises(DataError, match="video #1: 3 features, but video #0 has 2"):
        feature_stats([np.zeros((4, 2)), np.zeros((4, 3))])
    with pytest.raises(DataError, match=r"video #0: expected a \(frames, features\) array"):
        feature_stats([np.zeros((0, 2))])
    with pytest.raises(DataError, match="NaN or infinite"):
        feature_stats([np.full((4, 2), np.nan)])


def test_training_windows_scale_each_video_with_its_own_scaling_and_keep_padding_zero():
    lengths, length = (7, 25), 10
    X, y = _videos(lengths)
    w = sample_weights(y)
    scalings = [(np.full(3, 1.0, np.float32), np.full(3, 2.0, np.float32)), None]
    Xw, _, _ = training_windows(X, y, w, length, scalings)
    np.testing.assert_allclose(Xw[0, :7], (X[0] - 1.0) / 2.0)
    assert not Xw[0, 7:].any()  # padding stays 0 after scaling
    np.testing.assert_array_equal(Xw[1], X[1][:10])  # the second video is not scaled
    with pytest.raises(ValueError, match="1 scalings for 2 videos"):
        training_windows(X, y, w, length, scalings[:1])
