"""Label new videos with trained models: one CSV of per-frame probabilities and labels per video.

Each model bundle (`bundle.py`) carries its backbone recipe, so a video is embedded exactly as
the training videos were, through the same embedding cache: a video already embedded (a test
video at refit, or an earlier predict run) is read back, not recomputed. Bundles that share a
backbone recipe share one embedding of each video.

Everything that can be checked up front (the videos open, each has the pose file its models need,
no two outputs collide, the backbones rebuild) is checked before anything is embedded, so a bad
input fails in seconds and writes nothing. Each CSV is written to a temporary file and renamed,
so an interrupted run never leaves a truncated CSV under a final name.
"""

from __future__ import annotations

import glob
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..core.errors import ConfigError, DataError
from ..core.files import atomic_output
from .backbones import part_kinds
from .bundle import ModelBundle
from .data.crops import MIN_CROP_SIZE, CropSettings
from .data.manifest import VideoEntry
from .data.video import count_frames, probe_video
from .features.animal_size import RESCALE_ABOVE, measure_animal
from .features.cache import EmbeddingCache
from .pair_inputs import embed_videos

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".wmv")
POSE_SUFFIXES = (".csv", ".h5", ".slp", ".analysis.h5")  # DeepLabCut / LightningPose, then SLEAP
NO_BEHAVIOUR = "none"  # the `behaviour` column of an exclusive CSV on a frame with no behaviour
_ROWS_PER_WRITE = 10_000  # CSV rows formatted per write: bounds the text held in memory


@dataclass
class PredictOptions:
    """What `predict_videos` does; see the module docstring."""

    bundles: list[ModelBundle]  # one per behaviour, in the order of the CSV columns
    inputs: list[Path]  # video files and/or folders of videos
    out_dir: Path  # <out_dir>/<video stem>.csv
    cache: EmbeddingCache  # the cache training used, so its embeddings are reused
    pose: Path | None = None  # a pose file (exactly one video) or a folder of pose files
    exclusive: bool = False  # at most one behaviour per frame: the most probable labelled one
    batch_size: int = 32
    progress: bool = True


@dataclass
class VideoOutcome:
    """One predicted video, as the CLI reports it."""

    video: Path
    csv: Path
    frames: int
    fps: float
    positives: dict[str, int] = field(default_factory=dict)  # labelled frames per behaviour, in the CSV
    seconds: float = 0.0  # wall time for this video, embedding included
    computed: int = 0  # frames embedded now, over all backbone recipes; 0 when all came from the cache


@dataclass
class _Job:
    """A validated video, ready to embed."""

    entry: VideoEntry
    n_frames: int  # from the container header; checked against the embeddings
    fps: float
    csv: Path
    resolution: tuple[int, int] = (0, 0)  # width, height


# --------------------------------------------------------------------------------------------
# finding inputs


def find_videos(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Video files in the order given; a folder contributes its video files, sorted (not recursive).

    A file given twice counts once. DataError for a path that does not exist or a folder with no
    video file (hidden files, such as partial downloads, are skipped).
    """
    videos: list[Path] = []
    seen: set[Path] = set()
    for raw in inputs:
        path = Path(raw).expanduser()
        if path.is_dir():
            found = sorted(
                p for p in path.iterdir()
                if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES and not p.name.startswith(".")
            )
            if not found:
                raise DataError(
                    f"{path}: no video files in this folder (looked for {', '.join(VIDEO_SUFFIXES)}, not in "
                    "subfolders); pass the folder that holds the videos, or the video files themselves"
                )
        elif path.is_file():
            found = [path]
        else:
            raise DataError(f"{path}: no such video file or folder; check the path")
        for video in found:
            resolved = video.resolve()
            if resolved not in seen:
                seen.add(resolved)
                videos.append(video)
    return videos


def pose_candidates(stem: str) -> str:
    """Where `find_pose` looks, in words, for error messages."""
    return f"{stem}.csv, {stem}.h5, {stem}.slp, {stem}.analysis.h5, {stem}DLC*.csv/h5, {stem}_dlc*.csv/h5"


def find_pose(video: Path, pose: Path | None = None) -> Path | None:
    """The pose file of `video`, or None.

    `pose` may be the pose file itself, or a folder to look in instead of the video's own folder.
    In the folder: ``<stem>.csv``, ``<stem>.h5``, ``<stem>.slp``, ``<stem>.analysis.h5`` (SLEAP), then the
    first (sorted) DeepLabCut-style
    ``<stem>DLC*.csv`` or ``<stem>DLC*.h5``, then ``<stem>_dlc*.csv`` or ``.h5``.
    """
    video = Path(video)
    if pose is not None and Path(pose).is_file():
        return Path(pose)
    folder = Path(pose) if pose is not None else video.parent
    stem = video.stem
    for suffix in POSE_SUFFIXES:
        exact = folder / f"{stem}{suffix}"
        if exact.is_file():
            return exact
    # glob.escape: a stem like "mouse[1]" must match itself, not a character class.
    for pattern in ("DLC*", "_dlc*"):  # DeepLabCut's own names, then the common <stem>_dlc.csv
        matches = sorted(
            Path(p) for p in glob.glob(os.path.join(glob.escape(str(folder)), glob.escape(stem) + pattern))
            if Path(p).suffix.lower() in POSE_SUFFIXES and Path(p).is_file()
        )
        if matches:
            return matches[0]
    return None


# --------------------------------------------------------------------------------------------
# decisions


def exclusive_labels(probabilities: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """At most one behaviour per frame: of those labelled, the one with the highest probability.

    Args:
        probabilities: (behaviours, frames) probabilities.
        labels: (behaviours, frames) 0/1 labels (after post-processing).

    Returns:
        (labels with at most one 1 per frame, int8; per frame the index of the kept behaviour, or
        -1 where none is labelled). Equal probabilities go to the behaviour listed first.
    """
    probabilities = np.asarray(probabilities, np.float64)
    labels = np.asarray(labels)
    if probabilities.shape != labels.shape or probabilities.ndim != 2:
        raise ValueError(
            f"probabilities {probabilities.shape} and labels {labels.shape} must both be (behaviours, frames)"
        )
    labelled = labels == 1
    winner = np.argmax(np.where(labelled, probabilities, -np.inf), axis=0)
    winner = np.where(labelled.any(axis=0), winner, -1)
    kept = (np.arange(len(labels))[:, None] == winner[None, :]).astype(np.int8)
    return kept, winner


# --------------------------------------------------------------------------------------------
# writing


def prediction_columns(behaviours: Sequence[str], exclusive: bool) -> list[str]:
    """The CSV header: frame, time_s, then <b>_probability and <b>_label per behaviour [, behaviour]."""
    columns = ["frame", "time_s"]
    for behaviour in behaviours:
        columns += [f"{behaviour}_probability", f"{behaviour}_label"]
    return columns + (["behaviour"] if exclusive else [])


def write_predictions_csv(
    path: str | os.PathLike,
    fps: float,
    probabilities: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    winner: np.ndarray | None = None,
) -> Path:
    """Write one video's predictions, atomically (a temporary file in the same folder, then renamed).

    Args:
        path: the CSV to write; its folder must exist.
        fps: frame rate: time_s = frame / fps, rounded to 6 decimals.
        probabilities: per behaviour, in column order, (frames,) probabilities; written with 9
            significant digits, which reads back as the same float32.
        labels: per behaviour (same keys), (frames,) 0/1 labels.
        winner: for an exclusive CSV, per frame the index of the behaviour in the `behaviour`
            column, -1 for "none"; None writes no `behaviour` column.
    """
    path = Path(path)
    behaviours = list(probabilities)
    if list(labels) != behaviours:
        raise ValueError(f"labels are for {list(labels)} but probabilities for {behaviours}")
    n_frames = len(next(iter(probabilities.values()))) if behaviours else 0
    for name in behaviours:
        if len(probabilities[name]) != n_frames or len(labels[name]) != n_frames:
            raise ValueError(f"{name}: {len(probabilities[name])} probabilities and {len(labels[name])} labels, "
                             f"expected {n_frames} of each")
    names = np.array(behaviours + [NO_BEHAVIOUR], dtype=object)  # index -1 is "none"
    header = ",".join(prediction_columns(behaviours, winner is not None)) + "\n"
    row = "%d,%s" + ",%.9g,%d" * len(behaviours) + (",%s" if winner is not None else "") + "\n"

    with atomic_output(path, durable=True) as tmp, open(tmp, "w", newline="") as handle:
        handle.write(header)
        for start in range(0, n_frames, _ROWS_PER_WRITE):
            stop = min(start + _ROWS_PER_WRITE, n_frames)
            frames = np.arange(start, stop)
            # repr of a float rounded to 6 decimals: 0.1 stays "0.1", not "0.100000".
            times = [repr(t) for t in np.round(frames / fps, 6).tolist()]
            fields: list[list[Any]] = [frames.tolist(), times]
            for name in behaviours:
                # float32 -> Python float is exact, so %.9g round-trips the float32 value.
                fields.append(np.asarray(probabilities[name][start:stop], np.float32).tolist())
                fields.append(np.asarray(labels[name][start:stop]).astype(int).tolist())
            if winner is not None:
                fields.append(names[np.asarray(winner[start:stop])].tolist())
            handle.write("".join(row % values for values in zip(*fields, strict=True)))
    return path


# --------------------------------------------------------------------------------------------
# predicting


def _check_bundles(bundles: Sequence[ModelBundle], exclusive: bool) -> None:
    if not bundles:
        raise ConfigError("no model to predict with; pass at least one --model")
    behaviours = [bundle.behaviour for bundle in bundles]
    twice = sorted({b for b in behaviours if behaviours.count(b) > 1})
    if twice:
        raise ConfigError(
            f"two models for behaviour(s) {', '.join(twice)}; pass one model per behaviour "
            "(predict with the other in a separate run and --out folder)"
        )
    if exclusive and NO_BEHAVIOUR in behaviours:
        raise ConfigError(
            f"a behaviour is named {NO_BEHAVIOUR!r}, which the exclusive CSV uses for frames without a "
            "behaviour; predict without --exclusive"
        )


def _check_stems(videos: Sequence[Path]) -> None:
    by_stem: dict[str, Path] = {}
    for video in videos:
        if video.stem in by_stem:
            raise ConfigError(
                f"{by_stem[video.stem]} and {video} would both be written to {video.stem}.csv; "
                "rename one or predict them separately (with different --out folders)"
            )
        by_stem[video.stem] = video


def _plan(options: PredictOptions, videos: list[Path], needs_pose: bool) -> list[_Job]:
    """Validate every video (opens, has its pose file, writes nowhere it reads) before any work."""
    pose = Path(options.pose).expanduser() if options.pose is not None else None
    if pose is not None:
        if not pose.exists():
            raise DataError(f"{pose}: --pose file or folder not found; check the path")
        if pose.is_file() and len(videos) != 1:
            raise ConfigError(
                f"--pose {pose} is one file but {len(videos)} videos were given; pass a folder of pose files "
                "named after the videos, or predict one video at a time"
            )
    out_dir = Path(options.out_dir).expanduser()
    jobs = []
    for video in videos:
        found = find_pose(video, pose)
        if needs_pose and found is None:
            where = pose if pose is not None else video.parent
            raise DataError(
                f"{video}: no pose file found (looked in {where} for {pose_candidates(video.stem)}), and the "
                "model needs one; pass --pose FILE or a folder of pose files"
            )
        info = probe_video(video)
        jobs.append(_Job(VideoEntry(id=video.stem, video=video, pose=found, fps=info.fps),
                         info.n_frames, info.fps, out_dir / f"{video.stem}.csv", (info.width, info.height)))
    # A CSV must never replace a file it reads, e.g. <stem>.csv pose files with --out on their folder.
    read = {p.resolve(): p for job in jobs for p in (job.entry.video, job.entry.pose) if p is not None}
    for job in jobs:
        if job.csv.resolve() in read:
            raise ConfigError(
                f"{job.csv}: the predictions would overwrite the input file {read[job.csv.resolve()]}; "
                "choose another --out folder"
            )
    return jobs


def _writable_out_dir(out_dir: Path) -> Path:
    """`out_dir`, created, once a file could be written in it; DataError otherwise."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as error:
        raise DataError(f"{out_dir}: cannot write predictions there ({error.strerror or error}); "
                        "choose a writable --out folder") from None
    return out_dir


def _check_parts(bundles: list[ModelBundle], jobs: list[_Job]) -> None:
    """Each pose file must hold the body parts a model's pose features were trained on; checked before any work."""
    for bundle in bundles:
        if not bundle.bodyparts or "pose" not in part_kinds(bundle.backbone):
            continue
        for job in jobs:
            if job.entry.pose is None:
                continue
            parts = bundle.dataset_for([job.entry], where=job.entry.video.parent).read_pose(job.entry).bodyparts
            if set(parts) != set(bundle.bodyparts):
                extra = sorted(set(parts) - set(bundle.bodyparts))
                missing = sorted(set(bundle.bodyparts) - set(parts))
                raise DataError(
                    f"{job.entry.pose}: body parts differ from the {bundle.behaviour} model's (extra: "
                    f"{', '.join(extra) or 'none'}; missing: {', '.join(missing) or 'none'}); export the pose with "
                    f"the model's parts ({', '.join(bundle.bodyparts)}), or train with pose.ignore / pose.rename "
                    "in dataset.yaml so that both match")


def matched_crop(bundle: ModelBundle, job: _Job, cache: EmbeddingCache) -> tuple[CropSettings, str | None]:
    """The bundle's crop for this video, scaled so that the mouse fills it as in the training videos,
    and a line saying so (None when unchanged). DataError when the scale cannot be matched."""
    trained = bundle.animal
    if not trained or bundle.crop.mode == "full":
        return bundle.crop, None
    video, length = job.entry.video, trained["length_px"]
    size = measure_animal(bundle.dataset_for([job.entry], where=video.parent), job.entry, cache)
    if size is None or size.measured_by != trained["measured_by"]:
        expected = trained.get("resolution")
        if expected is None or list(job.resolution) == list(expected):
            return bundle.crop, None
        raise DataError(
            f"{video}: a {job.resolution[0]}x{job.resolution[1]} video, the model's training videos were "
            f"{expected[0]}x{expected[1]}, and the mouse cannot be measured here ({trained['measured_by']}) to "
            f"match its size; give a pose file that tracks {' and '.join(bundle.heading)}, or resize the video to "
            f"{expected[0]}x{expected[1]}")
    ratio = size.length_px / length
    if abs(ratio - 1) <= RESCALE_ABOVE:
        return bundle.crop, None
    if not 0.2 <= ratio <= 5:
        raise DataError(f"{video}: the mouse measures {size.length_px:.0f} px ({size.measured_by}), {ratio:.2f}x the "
                        f"training videos' {length:.0f} px, too far to match by scaling crops; check the pose file, "
                        "or train on videos from this camera")
    scaled = replace(bundle.crop, size=max(MIN_CROP_SIZE, round(bundle.crop.size * ratio)))
    return scaled, (f"{video}: the mouse is {ratio:.2f}x its size in the training videos ({size.measured_by} "
                    f"{size.length_px:.0f} px vs {length:.0f} px); crops of {scaled.size} px instead of "
                    f"{bundle.crop.size} to match")


def _embeddings(bundle: ModelBundle, backbone: Any, job: _Job, options: PredictOptions,
                crop: CropSettings) -> tuple[np.ndarray, int]:
    """(frames, dim) memory-mapped embeddings of the video and the number of frames computed now."""
    dataset = replace(bundle.dataset_for([job.entry], where=job.entry.video.parent), crop=crop)
    embedded = embed_videos(dataset, backbone, options.cache, [job.entry.id], batch_size=options.batch_size,
                            progress=options.progress)
    X = embedded.arrays[job.entry.id]
    # A pose file from another video (or a header count that is off) would shift every label.
    if len(X) != job.n_frames and len(X) != count_frames(job.entry.video):
        source = job.entry.pose if job.entry.pose is not None else job.entry.video
        raise DataError(
            f"{source}: {len(X)} frames of embeddings for video {job.entry.video}, which has {job.n_frames} frames; "
            "the pose file must have one row per video frame (use the pose file of this exact video)"
        )
    return X, embedded.computed


def predict_videos(options: PredictOptions) -> list[VideoOutcome]:
    """Write `<out_dir>/<video stem>.csv` for every input video; one outcome per video, in order.

    Columns: frame (0-based), time_s, then per bundle `<behaviour>_probability` and
    `<behaviour>_label` (post-processed 0/1), and with `exclusive` a final `behaviour` column
    (the behaviour kept on that frame, or "none").
    """
    bundles = list(options.bundles)
    _check_bundles(bundles, options.exclusive)
    videos = find_videos(options.inputs)
    if not videos:
        raise ConfigError("no video to predict; pass video files or folders of videos")
    _check_stems(videos)
    jobs = _plan(options, videos, needs_pose=any(bundle.needs_pose() for bundle in bundles))
    _writable_out_dir(Path(options.out_dir).expanduser())  # before any embedding; the CSV paths are in `jobs`

    # One backbone per distinct recipe; built before any embedding, so a model whose backbone
    # cannot be rebuilt fails before anything is written.
    groups: dict[str, list[int]] = {}
    for index, bundle in enumerate(bundles):
        groups.setdefault(bundle.embedding_key(), []).append(index)
    first = jobs[0].entry
    backbones = {
        key: bundles[members[0]].build_backbone(bundles[members[0]].dataset_for([first], where=first.video.parent))
        for key, members in groups.items()
    }
    _check_parts(bundles, jobs)
    # The crop of every (recipe, video), scaled to the mouse's size: a video that cannot be matched fails here.
    crops: dict[tuple[str, int], CropSettings] = {}
    for number, job in enumerate(jobs):
        for key, members in groups.items():
            crops[key, number], said = matched_crop(bundles[members[0]], job, options.cache)
            if said:
                print(f"mbr-bench: {said}", file=sys.stderr, flush=True)
    outcomes = []
    for number, job in enumerate(tqdm(jobs, desc="predict", unit="video", disable=not options.progress)):
        started = time.perf_counter()
        probabilities: list[np.ndarray | None] = [None] * len(bundles)
        labels: list[np.ndarray | None] = [None] * len(bundles)
        n_frames, computed = job.n_frames, 0
        for key, members in groups.items():
            X, computed_now = _embeddings(bundles[members[0]], backbones[key], job, options, crops[key, number])
            n_frames, computed = len(X), computed + computed_now
            for index in members:
                proba = bundles[index].predict_proba(X)
                probabilities[index] = proba
                labels[index] = bundles[index].decide(proba, job.fps)[1]
            del X  # release the memory map before the next recipe's
        winner = None
        if options.exclusive:
            kept, winner = exclusive_labels(np.stack(probabilities), np.stack(labels))
            labels = list(kept)
        names = [bundle.behaviour for bundle in bundles]
        try:
            write_predictions_csv(job.csv, job.fps, dict(zip(names, probabilities, strict=True)),
                                  dict(zip(names, labels, strict=True)), winner)
        except OSError as error:  # disk full, permissions: the user's to fix, not a bug
            raise DataError(f"{job.csv}: cannot write the predictions ({error.strerror or error}); "
                            "free disk space or choose a writable --out folder") from None
        outcomes.append(VideoOutcome(
            video=job.entry.video, csv=job.csv, frames=n_frames, fps=job.fps,
            positives={name: int(np.count_nonzero(y)) for name, y in zip(names, labels, strict=True)},
            seconds=round(time.perf_counter() - started, 3), computed=computed,
        ))
    return outcomes
