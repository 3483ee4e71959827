"""Leave-one-video-out cross-validation over the labelled training videos.

Folds are by video, never by frame: neighbouring frames are nearly identical, so a frame-level split
would score memory, not recognition. Test videos never appear in a fold.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mbr_bench.benchmark.data.manifest import Dataset
from mbr_bench.benchmark.errors import ConfigError, DataError


@dataclass(frozen=True)
class Fold:
    """One fold: fit on `train_ids`, early-stop on and score `val_id`."""

    index: int
    train_ids: tuple[str, ...]
    val_id: str


def leave_one_video_out(dataset: Dataset) -> list[Fold]:
    """One fold per labelled training video, in manifest order; that video validates, the others train.

    Raises ConfigError with fewer than 2 labelled training videos.
    """
    train_ids = [entry.id for entry in dataset.split("train") if entry.labels is not None]
    if len(train_ids) < 2:
        found = f" ({', '.join(train_ids)})" if train_ids else ""
        raise ConfigError(
            f"{dataset.path}: leave-one-video-out needs at least 2 labelled train videos, found "
            f"{len(train_ids)}{found}; mark more labelled videos split: train"
        )
    return [
        Fold(index=index, train_ids=tuple(other for other in train_ids if other != val_id), val_id=val_id)
        for index, val_id in enumerate(train_ids)
    ]


def check_fold_labels(
    fold: Fold,
    labels_by_video: Mapping[str, np.ndarray],
    behaviour: str,
    path: str | Path,
) -> str | None:
    """Check that a fold can be trained and scored for `behaviour`.

    Args:
        fold: the fold to check.
        labels_by_video: per-frame 0/1 labels of this behaviour, by video id.
        behaviour: the behaviour's name, for messages.
        path: the dataset manifest, for messages.

    Returns:
        None, or a warning when the validation video has no positive frame (its PR-AUC is undefined
        and the fold drops out of the PR-AUC mean).

    Raises:
        DataError: the fold's training videos hold no positive frame, so there is nothing to learn.
    """
    missing = [video_id for video_id in (*fold.train_ids, fold.val_id) if video_id not in labels_by_video]
    if missing:
        raise ValueError(f"labels_by_video has no labels for fold {fold.index} video(s) {missing}")
    if not any(np.any(np.asarray(labels_by_video[video_id]) > 0) for video_id in fold.train_ids):
        raise DataError(
            f"{path}: behaviour '{behaviour}' has no positive frame in the training videos of fold "
            f"{fold.index} ({', '.join(fold.train_ids)}; validating on {fold.val_id}); label '{behaviour}' "
            f"in more training videos (each fold trains on all but one) or leave the behaviour out"
        )
    if not np.any(np.asarray(labels_by_video[fold.val_id]) > 0):
        return (
            f"{path}: behaviour '{behaviour}' has no positive frame in validation video '{fold.val_id}' "
            f"(fold {fold.index}); its PR-AUC is undefined and left out of the fold mean"
        )
    return None
