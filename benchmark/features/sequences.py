"""Class-balanced frame weights, and cutting videos into fixed-length windows and back.

A temporal head trains on and predicts windows of `length` frames. Windows are cut the same way for
training and for prediction:

* A video of `T > length` frames is cut with stride `length` (starts 0, length, 2*length, ...).
  When `T` is not a multiple of `length`, one more window is aligned to the end of the video
  (start `T - length`), so no frame is dropped and no window needs padding.
* A video of `T <= length` frames is one window, zero-padded at the end up to `length`.
* For training, each frame counts exactly once in the loss: padded frames get weight 0, and the
  frames the end-aligned window repeats from the window before it get weight 0 in that last window.
* For prediction, windows are stitched back to `T` values: each frame takes its value from the
  first window that covers it (so the end-aligned window contributes only its new frames), and
  padding is dropped.

Class weights follow the reference's formula 4.1, computed over all frames of the training videos:
`w_neg = n / (2 n_neg)`, `w_pos = n / (2 n_pos)`, so both classes carry the same total weight n/2.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...core.errors import DataError


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


def window_starts(n_frames: int, length: int) -> np.ndarray:
    """First frame of each window: stride `length`, the last window aligned to the video's end.

    `n_frames <= length` gives `[0]` (one padded window).
    """
    if length < 1:
        raise ValueError(f"window length must be >= 1, got {length}")
    if n_frames <= length:
        return np.zeros(1, dtype=np.int64)
    starts = np.arange(0, n_frames - length + 1, length, dtype=np.int64)
    if starts[-1] + length < n_frames:
        starts = np.append(starts, n_frames - length)
    return starts


def _check_video(X: np.ndarray, y: np.ndarray, w: np.ndarray, index: int, dim: int | None) -> None:
    if X.ndim != 2 or len(X) == 0:
        raise DataError(f"embeddings of video #{index}: expected a (frames, features) array with at least "
                        f"one frame, got shape {X.shape}; check the embedding cache for this video")
    if dim is not None and X.shape[1] != dim:
        raise DataError(f"embeddings of video #{index}: {X.shape[1]} features, but video #0 has {dim}; "
                        "all videos must come from the same backbone")
    if len(y) != len(X) or len(w) != len(X):
        raise DataError(f"video #{index}: {len(X)} embedding frames but {len(y)} labels and {len(w)} weights; "
                        "labels, weights and embeddings must have one row per frame")


def training_windows(
    X: Sequence[np.ndarray], y: Sequence[np.ndarray], w: Sequence[np.ndarray], length: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut every video into windows of `length` frames for training (see the module docstring).

    Args:
        X: per video, (frames, features) embeddings.
        y: per video, (frames,) 0/1 labels.
        w: per video, (frames,) sample weights.
        length: window length in frames.

    Returns:
        Xw (N, length, features), yw (N, length, 1) and ww (N, length), all float32; weights are 0
        on padding and on frames already counted by an earlier window.
    """
    if len(X) == 0:
        raise DataError("training windows: no training video given; a fold needs at least one")
    if not (len(X) == len(y) == len(w)):
        raise DataError(f"training windows: {len(X)} embedding arrays, {len(y)} label arrays and "
                        f"{len(w)} weight arrays; pass one of each per video")
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
    for Xv, yv, wv in zip(X, y, w):
        yv, wv = np.asarray(yv).reshape(-1), np.asarray(wv).reshape(-1)
        n_frames = len(Xv)
        counted_until = 0  # frames before this index are already weighted in an earlier window
        for start in window_starts(n_frames, length):
            stop = min(start + length, n_frames)
            span = stop - start
            Xw[row, :span] = Xv[start:stop]
            yw[row, :span, 0] = yv[start:stop]
            ww[row, :span] = wv[start:stop]
            ww[row, : max(counted_until - start, 0)] = 0.0
            counted_until = stop
            row += 1
    return Xw, yw, ww


def stitch(window_predictions: np.ndarray, starts: np.ndarray, n_frames: int) -> np.ndarray:
    """(N, length) window predictions back to (n_frames,): each frame from the first window covering it."""
    predictions = np.asarray(window_predictions)
    if predictions.ndim == 3 and predictions.shape[-1] == 1:
        predictions = predictions[..., 0]
    if predictions.ndim != 2 or len(predictions) != len(starts):
        raise ValueError(f"expected ({len(starts)}, length) window predictions, got shape {predictions.shape}")
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
