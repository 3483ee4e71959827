"""Leave-one-video-out folds: by video, over labelled train videos only, with label checks per fold."""

from pathlib import Path

import numpy as np
import pytest

from mbr_bench.benchmark.cv import Fold, check_fold_labels, empty_fold_message, leave_one_video_out, select_folds
from mbr_bench.benchmark.data.manifest import Dataset, VideoEntry, load_dataset
from mbr_bench.core.errors import ConfigError, DataError

MANIFEST = Path("/data/lab/dataset.yaml")


def _dataset(*videos: tuple[str, str | None, bool]) -> Dataset:
    """(id, split, labelled) per video; paths are dummies (nothing reads them)."""
    entries = tuple(
        VideoEntry(
            id=video_id,
            video=Path(f"/data/lab/{video_id}.mp4"),
            labels=Path(f"/data/lab/{video_id}.csv") if labelled else None,
            split=split,
        )
        for video_id, split, labelled in videos
    )
    return Dataset(path=MANIFEST, name="lab", behaviours=("grooming",), videos=entries)


def test_one_fold_per_train_video_in_manifest_order():
    dataset = _dataset(
        ("a", "train", True), ("t1", "test", True), ("b", "train", True), ("c", "train", True), ("t2", "test", True)
    )
    folds = leave_one_video_out(dataset)
    assert folds == [
        Fold(0, ("b", "c"), "a"),
        Fold(1, ("a", "c"), "b"),
        Fold(2, ("a", "b"), "c"),
    ]
    train = {entry.id for entry in dataset.split("train")}
    assert sorted(fold.val_id for fold in folds) == sorted(train)  # each validated exactly once
    for fold in folds:
        assert fold.val_id not in fold.train_ids
        assert set(fold.train_ids) | {fold.val_id} == train
        assert not {"t1", "t2"} & (set(fold.train_ids) | {fold.val_id})  # test videos never seen


def test_unlabelled_and_unsplit_videos_are_left_out():
    dataset = _dataset(
        ("a", "train", True), ("u", None, False), ("b", "train", True), ("x", "train", False), ("t", "test", True)
    )
    assert [(f.val_id, f.train_ids) for f in leave_one_video_out(dataset)] == [("a", ("b",)), ("b", ("a",))]


@pytest.mark.parametrize(
    ("videos", "found"),
    [
        ((("a", "train", True), ("t", "test", True)), "found 1 (a)"),
        ((("a", "train", True), ("b", "train", False), ("t", "test", True)), "found 1 (a)"),
        ((("t", "test", True),), "found 0;"),
    ],
)
def test_fewer_than_two_train_videos(videos, found):
    with pytest.raises(ConfigError) as caught:
        leave_one_video_out(_dataset(*videos))
    message = str(caught.value)
    assert message.startswith(str(MANIFEST)) and "\n" not in message
    assert "at least 2 labelled train videos" in message and found in message and "split: train" in message


def test_folds_from_a_real_manifest(tiny_dataset):
    dataset = load_dataset(tiny_dataset(split=("train", "test", "train", "train")))
    assert [(f.index, f.val_id, f.train_ids) for f in leave_one_video_out(dataset)] == [
        (0, "t0", ("t2", "t3")),
        (1, "t2", ("t0", "t3")),
        (2, "t3", ("t0", "t2")),
    ]


def test_check_fold_labels():
    fold = Fold(1, ("a", "c"), "b")
    labels = {"a": np.array([0, 1, 1, 0]), "b": np.array([0, 0, 1, 0]), "c": np.zeros(4, int)}
    assert check_fold_labels(fold, labels, "grooming", MANIFEST) is None

    labels["b"] = np.zeros(4, int)
    warning = check_fold_labels(fold, labels, "grooming", MANIFEST)
    assert warning.startswith(str(MANIFEST)) and "'grooming'" in warning
    assert "validation video 'b'" in warning and "PR-AUC is undefined" in warning

    labels = {"a": np.zeros(4, int), "b": np.array([0, 1, 0, 0]), "c": np.zeros(4, bool)}
    with pytest.raises(DataError) as caught:
        check_fold_labels(fold, labels, "grooming", MANIFEST)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(str(MANIFEST))
    for fragment in ("'grooming'", "fold 1", "(a, c;", "validating on b", "label 'grooming' in more training videos"):
        assert fragment in message, message

    with pytest.raises(ValueError, match="no labels for fold 1"):
        check_fold_labels(fold, {"a": np.ones(2)}, "grooming", MANIFEST)


EMPTY_FOLD_TEXT = (
    "/data/lab/c.csv: video 'c' has no 'grooming' frame, so its leave-one-video-out fold cannot be scored; "
    "label that behaviour in it, move it to split: test, or pass --allow-empty-folds"
)


def test_empty_fold_message_is_the_documented_line():
    assert empty_fold_message(Path("/data/lab/c.csv"), "c", "grooming") == EMPTY_FOLD_TEXT


def test_check_fold_labels_raises_for_an_empty_validation_video_unless_allowed():
    fold = Fold(1, ("a", "b"), "c")
    labels = {"a": np.array([0, 1]), "b": np.array([1, 0]), "c": np.zeros(2, int)}
    with pytest.raises(DataError) as caught:
        check_fold_labels(fold, labels, "grooming", MANIFEST, labels_path="/data/lab/c.csv", allow_empty=False)
    assert str(caught.value) == EMPTY_FOLD_TEXT
    warning = check_fold_labels(fold, labels, "grooming", MANIFEST, labels_path="/data/lab/c.csv", allow_empty=True)
    assert warning.startswith("/data/lab/c.csv: ") and "validation video 'c'" in warning
    # Without labels_path the manifest is named, as before.
    assert check_fold_labels(fold, labels, "grooming", MANIFEST).startswith(str(MANIFEST))


def test_select_folds():
    dataset = _dataset(("a", "train", True), ("b", "train", True), ("c", "train", True), ("t", "test", True))
    folds = leave_one_video_out(dataset)
    labels = {"a": np.array([0, 1]), "b": np.array([1, 0]), "c": np.array([1, 1])}
    assert select_folds(folds, labels, "grooming", dataset) == (folds, [])

    labels["c"] = np.zeros(2, int)
    with pytest.raises(DataError) as caught:
        select_folds(folds, labels, "grooming", dataset)
    assert str(caught.value) == EMPTY_FOLD_TEXT
    kept, warnings = select_folds(folds, labels, "grooming", dataset, allow_empty_folds=True)
    assert kept == folds[:2]
    assert len(warnings) == 1 and warnings[0].startswith("/data/lab/c.csv: ")
    assert warnings[0].endswith("fold 3 is left out for grooming")

    # Two videos, one empty: the empty video is named, not the fold that cannot train because of it.
    dataset = _dataset(("a", "train", True), ("c", "train", True), ("t", "test", True))
    folds = leave_one_video_out(dataset)
    with pytest.raises(DataError, match="video 'c' has no 'grooming' frame"):
        select_folds(folds, {"a": np.array([0, 1]), "c": np.zeros(2, int)}, "grooming", dataset)
    with pytest.raises(DataError, match="no positive frame in the training videos of fold 0"):
        select_folds(folds, {"a": np.array([0, 1]), "c": np.zeros(2, int)}, "grooming", dataset,
                     allow_empty_folds=True)
