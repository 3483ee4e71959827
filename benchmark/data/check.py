"""`mbr-bench dataset check`: read every file a manifest names and prove they agree.

The first problem found stops the check with a DataError (file, problem, fix); softer findings
(a behaviour absent from a training video, a lying container header) come back as warnings.
A pose-only entry (no video file) is checked from its pose file: frames = pose rows, fps from the
manifest, the body parts the pose backbone needs, and labels of the same length.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from ...core.errors import DataError
from .labels import bout_spans, label_names, read_labels
from .manifest import Dataset, VideoEntry
from .pose import centre_track, clean_pose, require_parts, require_tracked
from .video import count_frames, probe_video

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class BehaviourStats:
    positives: int
    percent: float
    bouts: int
    mean_bout: float  # frames; 0 when there is no bout


@dataclass(frozen=True)
class VideoReport:
    id: str
    split: str | None
    frames: int
    fps: float
    width: int | None  # None for a pose-only entry (no video file)
    height: int | None
    bodyparts: tuple[str, ...]
    behaviours: dict[str, BehaviourStats]

    @property
    def has_video(self) -> bool:
        return self.width is not None

    @property
    def resolution(self) -> str:
        """'640x480', or '—' for a pose-only entry."""
        return f"{self.width}x{self.height}" if self.width is not None else "—"


@dataclass
class DatasetReport:
    dataset: Dataset
    videos: list[VideoReport] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def behaviour_stats(y: np.ndarray) -> BehaviourStats:
    spans = bout_spans(y)
    lengths = spans[:, 1] - spans[:, 0] if len(spans) else np.zeros(0)
    positives = int(y.sum())
    return BehaviourStats(
        positives=positives,
        percent=100.0 * positives / max(len(y), 1),
        bouts=len(spans),
        mean_bout=float(lengths.mean()) if len(lengths) else 0.0,
    )


def _check_video(dataset: Dataset, entry: VideoEntry, report: DatasetReport) -> VideoReport:
    if entry.video is None:
        return _check_pose_only(dataset, entry, report)
    info = probe_video(entry.video)
    frames = count_frames(entry.video)
    if frames != info.n_frames:
        report.warnings.append(
            f"{entry.video}: the container header says {info.n_frames} frames but {frames} decode; "
            f"using {frames} (re-encode the video to fix its header)"
        )
    fps = entry.fps or info.fps
    if entry.fps and info.fps > 0 and abs(entry.fps - info.fps) > 0.01 * info.fps:
        report.warnings.append(
            f"{dataset.path}: video '{entry.id}' has fps: {entry.fps:g} but its container says {info.fps:g} "
            f"({100 * abs(entry.fps - info.fps) / info.fps:.0f} % apart), and the manifest's rate times its labels and "
            "motion windows; correct fps: or leave it out to use the container's"
        )
    # A recording cut short keeps its header: the pose and labels made from the whole video then
    # match the header's count, and the video, not them, is what to fix.
    truncated = frames < info.n_frames

    bodyparts: tuple[str, ...] = ()
    if entry.pose is not None:
        pose = dataset.read_pose(entry)
        if truncated and pose.n_frames == info.n_frames:
            raise _truncated_video(entry, info.n_frames, frames, entry.pose, "pose rows")
        if pose.n_frames != frames:
            raise DataError(
                f"{entry.pose}: frame-count mismatch for video '{entry.id}': video {frames}, pose {pose.n_frames}; "
                "the pose file must have one row per video frame (re-run pose estimation on this exact video)"
            )
        bodyparts = pose.bodyparts
        if dataset.crop.mode == "pose":
            centre_track(pose, dataset.crop.centre, dataset.crop.min_likelihood)  # raises on unusable parts
    elif dataset.crop.mode == "pose":
        raise DataError(
            f"{dataset.path}: video '{entry.id}' has no pose file but crop.mode is pose; "
            "add pose: for it, or set crop.mode to tracker or full"
        )

    stats: dict[str, BehaviourStats] = {}
    if entry.labels is not None:
        # Reading first: a missing behaviour column (the searches need it) is named before extra ones.
        try:
            labels = read_labels(entry.labels, dataset.behaviours, n_frames=frames, fps=fps)
        except DataError:
            if truncated and _fits(entry, dataset, info.n_frames, fps):
                raise _truncated_video(entry, info.n_frames, frames, entry.labels, "label rows") from None
            raise
        stats = _label_stats(dataset, entry, labels, frames, "video", report)
    return VideoReport(entry.id, entry.split, frames, fps, info.width, info.height, bodyparts, stats)


def _check_pose_only(dataset: Dataset, entry: VideoEntry, report: DatasetReport) -> VideoReport:
    """An entry without a video: its pose file sets the frame count; only the pose backbone embeds it."""
    # load_dataset refuses both cases; a Dataset built in code may not.
    if entry.pose is None:
        raise DataError(f"{dataset.path}: video '{entry.id}' has neither a video nor a pose file; "
                        "add video: (its file), or pose: and fps: for a pose-only entry")
    if entry.fps is None:
        raise DataError(
            f"{dataset.path}: video '{entry.id}' has no video file and no fps; "
            "add fps: (frames per second of the recording) to it"
        )
    pose = dataset.read_pose(entry)
    frames = pose.n_frames
    # The pose backbone centres on crop.centre and turns into the heading (back, front): name a
    # missing or never-tracked part now rather than in the middle of a run.
    centre_track(pose, dataset.crop.centre, dataset.crop.min_likelihood)
    heading = require_parts(pose, dataset.heading, "pose.heading")
    require_tracked(pose, clean_pose(pose, dataset.crop.min_likelihood), heading, "pose.heading",
                    dataset.crop.min_likelihood)
    stats: dict[str, BehaviourStats] = {}
    if entry.labels is not None:
        labels = read_labels(entry.labels, dataset.behaviours, n_frames=frames, fps=entry.fps,
                             source=f"its pose file {entry.pose.name}")
        stats = _label_stats(dataset, entry, labels, frames, "pose", report)
    return VideoReport(entry.id, entry.split, frames, entry.fps, None, None, pose.bodyparts, stats)


def _label_stats(
    dataset: Dataset, entry: VideoEntry, labels: pd.DataFrame, frames: int, counted_by: str, report: DatasetReport
) -> dict[str, BehaviourStats]:
    """Per-behaviour statistics of an entry's labels; DataError on unknown behaviours or a length mismatch."""
    assert entry.labels is not None
    unknown = [name for name in label_names(entry.labels) if name not in dataset.behaviours]
    if unknown:
        raise DataError(
            f"{entry.labels}: unknown behaviour(s) {unknown}; declared in {dataset.path.name}: "
            f"{list(dataset.behaviours)}; add them to behaviours or remove the column(s)"
        )
    if len(labels) != frames:
        raise DataError(
            f"{entry.labels}: frame-count mismatch for video '{entry.id}': {counted_by} {frames}, "
            f"labels {len(labels)}; label exactly one row per {'video frame' if counted_by == 'video' else 'pose row'}"
        )
    stats: dict[str, BehaviourStats] = {}
    for behaviour in dataset.behaviours:
        stats[behaviour] = behaviour_stats(labels[behaviour].to_numpy())
        if entry.split == "train" and stats[behaviour].positives == 0:
            report.warnings.append(
                f"{entry.labels}: behaviour '{behaviour}' has no positive frame in training video '{entry.id}'; "
                "its leave-one-video-out fold cannot be scored, so `mbr-bench run` stops unless "
                "--allow-empty-folds: label that behaviour in it or move it to split: test"
            )
    return stats


def _truncated_video(entry: VideoEntry, n_header: int, frames: int, other, what: str) -> DataError:  # noqa: ANN001
    return DataError(
        f"{entry.video}: video '{entry.id}' is truncated: its header lists {n_header} frames but only {frames} "
        f"decode, while {other} has {n_header} {what}; copy the complete video again (or redo the pose and "
        "labels on this shorter file)"
    )


def _fits(entry: VideoEntry, dataset: Dataset, n_frames: int, fps: float) -> bool:
    """Whether the labels file reads cleanly for a video of `n_frames` frames."""
    try:
        read_labels(entry.labels, dataset.behaviours, n_frames=n_frames, fps=fps)
    except DataError:
        return False
    return True


def check_pose_parts(dataset: Dataset) -> None:
    """DataError when a pose file lacks the crop.centre or pose.heading parts, or when the pose files end up
    with different body parts; `run` calls it before embedding anything for a pose backbone."""
    with_pose = []
    for entry in dataset.videos:
        if entry.pose is None:
            continue
        pose = dataset.read_pose(entry)
        require_parts(pose, dataset.crop.centre, "crop.centre")
        require_parts(pose, dataset.heading, "pose.heading (back part, front part)")
        with_pose.append((entry, pose.bodyparts))
    _same_parts(with_pose)


def _check_same_parts(dataset: Dataset, report: DatasetReport) -> None:
    _same_parts([(dataset.video(v.id), v.bodyparts) for v in report.videos if v.bodyparts])


def _same_parts(with_pose: list[tuple[VideoEntry, tuple[str, ...]]]) -> None:
    """DataError when pose files of one dataset end up with different body parts (after rename/ignore):
    the pose features of their videos would not mean the same columns."""
    if not with_pose:
        return
    first, parts = with_pose[0]
    for entry, other in with_pose[1:]:
        if set(other) != set(parts):
            only_first = sorted(set(parts) - set(other))
            only_other = sorted(set(other) - set(parts))
            raise DataError(
                f"{entry.pose}: body parts differ from {first.pose} (only in {first.pose.name}: "
                f"{', '.join(only_first) or 'none'}; only in {entry.pose.name}: {', '.join(only_other) or 'none'}); "
                "map the names onto one set with pose.rename and drop extra parts with pose.ignore in dataset.yaml")


def _check_frame_rates(report: DatasetReport) -> None:
    """Warn when videos run at different rates: a head's sequence is a number of frames, so its time span differs."""
    rates: dict[float, list[str]] = {}
    for video in report.videos:
        rates.setdefault(round(video.fps, 2), []).append(video.id)
    if len(rates) > 1 and max(rates) > 1.01 * min(rates):
        listed = "; ".join(f"{fps:g} fps: {', '.join(ids)}" for fps, ids in sorted(rates.items()))
        report.warnings.append(
            f"{report.dataset.path}: videos have different frame rates ({listed}); motion windows and post-processing "
            "are in seconds, but a head's sequence_length is in frames and spans a different time at each rate: "
            "resample the videos to one rate for comparable inputs"
        )


def check_dataset(dataset: Dataset, progress: bool = False) -> DatasetReport:
    """Read every video, pose and labels file of `dataset`; raise DataError on the first inconsistency."""
    report = DatasetReport(dataset)
    for entry in tqdm(dataset.videos, desc="checking videos", unit="video", disable=not progress, leave=False):
        report.videos.append(_check_video(dataset, entry, report))
    _check_same_parts(dataset, report)
    _check_frame_rates(report)
    if not dataset.labelled:
        report.notes.append(
            "no labels: these videos can be embedded (and labelled by a trained model), not benchmarked; "
            "add labels: files and a train/test split to benchmark"
        )
    unlabelled = [entry.id for entry in dataset.videos if entry.labels is None]
    if dataset.labelled and unlabelled:
        report.notes.append(f"videos without labels (embedded, not used by searches): {', '.join(unlabelled)}")
    pose_only = [entry.id for entry in dataset.pose_only]
    if pose_only:
        report.notes.append(
            f"pose-only (no video file): {', '.join(pose_only)}; only the pose backbones (pose, pose_v1) can embed "
            f"{'these' if len(pose_only) > 1 else 'it'} (--backbones pose)"
        )
    return report
