"""Class-balanced frame weights, per-feature statistics, and cutting videos into windows and back.

A temporal head trains on and predicts windows of `length` frames.

Training windows (`training_windows`, starts from `window_starts`):

* A video of `T > length` frames is cut with stride `length` (starts 0, length, 2*length, ...).
  When `T` is not a multiple of `length`, one more window is aligned to the end of the video
  (start `T - length`), so no frame is dropped and no window needs padding.
* A video of `T <= length` frames is one window, zero-padded at the end up to `length`.
* Each frame counts exactly once in the loss: padded frames get weight 0, and the frames the
  end-aligned window repeats from the window before it get weight 0 in that last window.

Prediction windows (`prediction_starts`, then `stitch`), used by every prediction path (a head's
`predict_proba` and its per-epoch validation scoring):

* Windows overlap by half: stride `length // 2` (at least 1), starts 0, stride, 2*stride, ... while
  the window fits in the video, plus one window aligned to the end when the last one stops short
  of it. A video of `T <= length` frames is one zero-padded window, as in training.
* Each frame takes its value from the window in which it has the most past, the earliest-starting
  window covering it: frames 0 .. length-1 come from the first window (a frame there has all of its
  past that the video holds), every later frame from a window in which it sits at position
  `length - stride` or later, so it has seen at least `length // 2` frames before it. A causal
  model (LSTM, TCN) then never predicts a frame past the first window from a cold start.
* Padding is dropped; every frame is taken from exactly one window.

Class weights follow the reference's formula 4.1, computed over all frames of the training videos:
`w_neg = n / (2 n_neg)`, `w_pos = n / (2 n_pos)`, so both classes carry the same total weight n/2.

`feature_stats` gives the per-feature mean and standard deviation a head's `feature_norm` scales
its inputs with; `training_windows` applies such a scaling per video as it cuts the windows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...core.errors import DataError

# A feature whose standard deviation over the frames is below this is constant there: `feature_stats`
# gives it scale 1 (centred, not divided), as scikit-learn's StandardScaler does, since dividing by a
# floor this small would blow up a feature that is dead in the training videos but moves in another.
FEATURE_STD_EPSILON = 1e-6

# Rows per step when accumulating statistics: bounds the float64 temporaries on long videos.
_STATS_CHUNK_FRAMES = 8192

# (mean, std), each (features,) float32: a video's frames are scaled as (x - mean) / std.
Scaling = tuple[np.ndarray, np.ndarray]


def _binary_labels(labels: np.ndarray, index: int) -> np.ndarray:
    array = np.asarray(labels).reshape(-1)
    values = np.unique(array)
    if not np.isin(values, (0, 1)).all():
        bad = values[~np.isin(values, (0, 1))][:5].tolist()
        raise DataError(f"labels of video #{index}: frame labels must be 0 or 1, found {bad}; "
                        "binarise the behaviour column before training")
    return array


def class_weights(labels: Sequence[np.ndarray]) -> tuple[float, float]:
    """(w_neg, w_pos) = (n / (2 n_neg), n / (2 n_pos)) over all frames of the given videos.

    Pass the training videos only, so that a held-out video does not influence its own weights.

    Raises:
        DataError: there are no frames, or no positive or no negative frame among them.
    """
    flat = [_binary_labels(y, index) for index, y in enumerate(labels)]
    n_frames = int(sum(len(y) for y in flat))
    if n_frames == 0:
        raise DataError("class weights: the training videos hold no labelled frame; "
                        "check that the fold has training videos with labels")
    n_positive = int(sum(int(y.sum()) for y in flat))
    n_negative = n_frames - n_positive
    for count, kind in ((n_positive, "positive"), (n_negative, "negative")):
        if count == 0:
            raise DataError(
                f"class weights: no {kind} frame among the {n_frames} training frames "
                f"of {len(flat)} videos; a fold and behaviour need both positive and negative frames "
                "in their training videos (label more, or leave this behaviour out)"
            )
    return n_frames / (2.0 * n_negative), n_frames / (2.0 * n_positive)


def sample_weights(labels: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Per-frame float32 weights for each video, from `class_weights(labels)`."""
    w_negative, w_positive = class_weights(labels)
    return [
        np.where(np.asarray(y).reshape(-1) == 1, w_positive, w_negative).astype(np.float32) for y in labels
    ]


def window_starts(n_frames: int, length: int, stride: int | None = None) -> np.ndarray:
    """First frame of each window: starts 0, stride, 2*stride, ... while a window fits in the video,
    and one more aligned to the video's end when the last one stops short of it.

    `stride` defaults to `length` (the training windows, which do not overlap).
    `n_frames <= length` gives `[0]` (one padded window).
    """
    if length < 1:
        raise ValueError(f"window length must be >= 1, got {length}")
    stride = length if stride is None else stride
    if not 1 <= stride <= length:
        raise ValueError(f"window stride must be in [1, {length}], got {stride}")
    if n_frames <= length:
        return np.zeros(1, dtype=np.int64)
    starts = np.arange(0, n_frames - length + 1, stride, dtype=np.int64)
    if starts[-1] + length < n_frames:
        starts = np.append(starts, n_frames - length)
    return starts


def prediction_stride(length: int) -> int:
    """Stride of the prediction windows: half a window, at least 1 frame."""
    return max(length // 2, 1)


def prediction_starts(n_frames: int, length: int) -> np.ndarray:
    """First frame of each prediction window: half-overlapping (see the module docstring)."""
    return window_starts(n_frames, length, prediction_stride(length))


def feature_stats(videos: Sequence[np.ndarray]) -> Scaling:
    """Per-feature mean and standard deviation over all frames of `videos`, pooled.

    Accumulated in float64, returned as float32 arrays of shape (features,). The standard deviation
    is the population one (ddof 0); where it is below FEATURE_STD_EPSILON it is set to 1.

    Raises:
        DataError: no video, a video that is not (frames >= 1, features), or videos of different widths.
    """
    if len(videos) == 0:
        raise DataError("feature statistics: no video given; a fold needs at least one training video")
    arrays, dim = [], None
    for index, Xv in enumerate(videos):
        Xv = np.asarray(Xv)
        _check_embeddings(Xv, index, dim)
        dim = Xv.shape[1]
        arrays.append(Xv)
    n_frames = sum(len(Xv) for Xv in arrays)
    total = np.zeros(dim, np.float64)
    for Xv in arrays:
        for first in range(0, len(Xv), _STATS_CHUNK_FRAMES):
            total += Xv[first : first + _STATS_CHUNK_FRAMES].sum(axis=0, dtype=np.float64)
    mean = total / n_frames
    squares = np.zeros(dim, np.float64)
    for Xv in arrays:
        for first in range(0, len(Xv), _STATS_CHUNK_FRAMES):
            squares += np.square(Xv[first : first + _STATS_CHUNK_FRAMES].astype(np.float64) - mean).sum(axis=0)
    std = np.sqrt(squares / n_frames)
    std = np.where(std < FEATURE_STD_EPSILON, 1.0, std)
    if not (np.isfinite(mean).all() and np.isfinite(std).all()):
        raise DataError(f"feature statistics: the embeddings of these {len(arrays)} videos hold NaN or infinite "
                        "values; check the embedding cache (re-embed the videos)")
    return mean.astype(np.float32), std.astype(np.float32)


def scale(X: np.ndarray, scaling: Scaling | None) -> np.ndarray:
    """(x - mean) / std per feature, float32; `X` itself (as float32) when `scaling` is None."""
    X = np.asarray(X, np.float32)
    if scaling is None:
        return X
    mean, std = scaling
    return (X - mean) / std


def _check_embeddings(X: np.ndarray, index: int, dim: int | None) -> None:
    if X.ndim != 2 or len(X) == 0:
        raise DataError(f"embeddings of video #{index}: expected a (frames, features) array with at least "
                        f"one frame, got shape {X.shape}; check the embedding cache for this video")
    if dim is not None and X.shape[1] != dim:
        raise DataError(f"embeddings of video #{index}: {X.shape[1]} features, but video #0 has {dim}; "
                        "all videos must come from the same backbone")


def _check_video(X: np.ndarray, y: np.ndarray, w: np.ndarray, index: int, dim: int | None) -> None:
    _check_embeddings(X, index, dim)
    if len(y) != len(X) or len(w) != len(X):
        raise DataError(f"video #{index}: {len(X)} embedding frames but {len(y)} labels and {len(w)} weights; "
                        "labels, weights and embeddings must have one row per frame")


def training_windows(
    X: Sequence[np.ndarray],
    y: Sequence[np.ndarray],
    w: Sequence[np.ndarray],
    length: int,
    scalings: Sequence[Scaling | None] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut every video into windows of `length` frames for training (see the module docstring).

    Args:
        X: per video, (frames, features) embeddings.
        y: per video, (frames,) 0/1 labels.
        w: per video, (frames,) sample weights.
        length: window length in frames.
        scalings: per video, the (mean, std) its frames are scaled with as they are copied into the
            windows (`scale`), or None to copy them as they are; padding stays 0 either way.

    Returns:
        Xw (N, length, features), yw (N, length, 1) and ww (N, length), all float32; weights are 0
        on padding and on frames already counted by an earlier window.
    """
    if len(X) == 0:
        raise DataError("training windows: no training video given; a fold needs at least one")
    if not (len(X) == len(y) == len(w)):
        raise DataError(f"training windows: {len(X)} embedding arrays, {len(y)} label arrays and "
                        f"{len(w)} weight arrays; pass one of each per video")
    if scalings is None:
        scalings = [None] * len(X)
    if len(scalings) != len(X):
        raise ValueError(f"training windows: {len(scalings)} scalings for {len(X)} videos")
    dim = None
    counts = []
    for index, (Xv, yv, wv) in enumerate(zip(X, y, w)):
        Xv, yv, wv = np.asarray(Xv), np.asarray(yv).reshape(-1), np.asarray(wv).reshape(-1)
        _check_video(Xv, yv, wv, index, dim)
        dim = Xv.shape[1]
        counts.append(len(window_starts(len(Xv), length)))

    n_windows = sum(counts)
    Xw = np.zeros((n_windows, length, dim), np.float32)
    yw = np.zeros((n_windows, length, 1), np.float32)
    ww = np.zeros((n_windows, length), np.float32)
    row = 0
    for Xv, yv, wv, scaling in zip(X, y, w, scalings):
        yv, wv = np.asarray(yv).reshape(-1), np.asarray(wv).reshape(-1)
        n_frames = len(Xv)
        counted_until = 0  # frames before this index are already weighted in an earlier window
        for start in window_starts(n_frames, length):
            stop = min(start + length, n_frames)
            span = stop - start
            Xw[row, :span] = scale(Xv[start:stop], scaling)
            yw[row, :span, 0] = yv[start:stop]
            ww[row, :span] = wv[start:stop]
            ww[row, : max(counted_until - start, 0)] = 0.0
            counted_until = stop
            row += 1
    return Xw, yw, ww


def stitch(window_predictions: np.ndarray, starts: np.ndarray, n_frames: int) -> np.ndarray:
    """(N, length) window predictions back to (n_frames,): each frame from the earliest-starting
    window covering it, the one in which it has the most past (see the module docstring).

    `starts` must be increasing and the windows must cover every frame (ValueError otherwise), as
    `prediction_starts` and `window_starts` give them.
    """
    predictions = np.asarray(window_predictions)
    if predictions.ndim == 3 and predictions.shape[-1] == 1:
        predictions = predictions[..., 0]
    if predictions.ndim != 2 or len(predictions) != len(starts):
        raise ValueError(f"expected ({len(starts)}, length) window predictions, got shape {predictions.shape}")
    starts = np.asarray(starts)
    if len(starts) > 1 and not (np.diff(starts) > 0).all():
        raise ValueError(f"window starts must be increasing, got {starts.tolist()[:10]}")
    length = predictions.shape[1]
    out = np.empty(n_frames, dtype=predictions.dtype)
    filled_until = 0
    for window, start in zip(predictions, starts):
        first, stop = max(int(start), filled_until), min(int(start) + length, n_frames)
        if first > filled_until:
            raise ValueError(f"windows leave frames {filled_until}..{first - 1} uncovered")
        if stop > first:
            out[first:stop] = window[first - start : stop - start]
            filled_until = stop
    if filled_until < n_frames:
        raise ValueError(f"windows cover {filled_until} of {n_frames} frames")
    return out
