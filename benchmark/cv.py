"""Leave-one-video-out cross-validation over the labelled training videos.

Folds are by video, never by frame: neighbouring frames are nearly identical, so a frame-level split
would score memory, not recognition. Test videos never appear in a fold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import ConfigError, DataError
from .data.manifest import Dataset


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


ALLOW_EMPTY_FOLDS_FLAG = "--allow-empty-folds"


def empty_fold_message(labels_path: str | Path, video_id: str, behaviour: str) -> str:
    """The one-line error for a training video without a positive frame of `behaviour`.

    Its leave-one-video-out fold has no positive to validate on: PR-AUC and early stopping are
    undefined there. `labels_path` is that video's labels file (the file to fix).
    """
    return (
        f"{labels_path}: video '{video_id}' has no '{behaviour}' frame, so its leave-one-video-out fold "
        f"cannot be scored; label that behaviour in it, move it to split: test, or pass {ALLOW_EMPTY_FOLDS_FLAG}"
    )


def check_fold_labels(
    fold: Fold,
    labels_by_video: Mapping[str, np.ndarray],
    behaviour: str,
    path: str | Path,
    *,
    labels_path: str | Path | None = None,
    allow_empty: bool = True,
) -> str | None:
    """Check that a fold can be trained and scored for `behaviour`.

    Args:
        fold: the fold to check.
        labels_by_video: per-frame 0/1 labels of this behaviour, by video id.
        behaviour: the behaviour's name, for messages.
        path: the dataset manifest, for messages.
        labels_path: the labels file of the fold's validation video, named by the empty-fold
            message and warning (default: `path`).
        allow_empty: whether a validation video with no positive frame is a warning (True, the fold
            is to be left out) or a DataError (False: `empty_fold_message`).

    Returns:
        None, or a warning when the validation video has no positive frame and `allow_empty` (its
        PR-AUC is undefined and the fold drops out of the PR-AUC mean).

    Raises:
        DataError: the fold's training videos hold no positive frame, so there is nothing to learn;
            or, unless `allow_empty`, its validation video holds none.
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
        if not allow_empty:
            raise DataError(empty_fold_message(labels_path or path, fold.val_id, behaviour))
        return (
            f"{labels_path or path}: behaviour '{behaviour}' has no positive frame in validation video "
            f"'{fold.val_id}' (fold {fold.index}); its PR-AUC is undefined and left out of the fold mean"
        )
    return None


def select_folds(
    folds: Sequence[Fold],
    labels_by_video: Mapping[str, np.ndarray],
    behaviour: str,
    dataset: Dataset,
    allow_empty_folds: bool = False,
) -> tuple[list[Fold], list[str]]:
    """The folds a search for `behaviour` can score, and one warning per fold left out.

    Every training video must show the behaviour: a video without a positive frame is a DataError
    (`empty_fold_message`, naming its labels file; the first such video in manifest order) unless
    `allow_empty_folds`, in which case its fold is left out with a warning.

    Raises:
        DataError: an empty validation video (see above); a fold whose training videos hold no
            positive frame; or no fold left to score.
    """
    def labels_of(video_id: str) -> Path | str:
        entry = next((v for v in dataset.videos if v.id == video_id), None)
        return entry.labels if entry is not None and entry.labels is not None else dataset.path

    if not allow_empty_folds:  # the empty video is the fix, even where an earlier fold fails on training
        for fold in folds:
            y = labels_by_video.get(fold.val_id)
            if y is not None and not np.any(np.asarray(y) > 0):
                raise DataError(empty_fold_message(labels_of(fold.val_id), fold.val_id, behaviour))
    kept: list[Fold] = []
    warnings: list[str] = []
    for fold in folds:
        warning = check_fold_labels(fold, labels_by_video, behaviour, dataset.path,
                                    labels_path=labels_of(fold.val_id), allow_empty=True)
        if warning:
            warnings.append(f"{warning}; fold {fold.index + 1} is left out for {behaviour}")
        else:
            kept.append(fold)
    if not kept:
        raise DataError(f"{dataset.path}: no training video shows '{behaviour}'; "
                        "label it in at least two training videos to search for it")
    return kept, warnings
