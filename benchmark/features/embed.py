"""Embed every frame of a dataset's videos once, through the cache.

Image backbones: a reader thread decodes and crops frames into batches while the main thread runs
the CNN on the previous batch (OpenCV and TensorFlow both release the GIL), so decoding overlaps
inference. Results stream into a memory-mapped cache file: memory is bounded by the batch size,
not by the video's length.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ...core.errors import DataError
from ...core.hashing import content_hash
from ..backbones.base import BACKBONES, Backbone, ImageBackbone, PoseBackbone
from ..data.crops import CropSettings, iter_crops, track_centroids
from ..data.manifest import Dataset, VideoEntry
from ..data.pose import centre_track, read_pose
from ..data.video import probe_video
from .cache import CacheKey, EmbeddingCache

_PREFETCH_BATCHES = 3  # enough to hide decode jitter; each batch is ~5 MB at 224 px x 32


@dataclass(frozen=True)
class EmbedResult:
    """One video's outcome, as printed by `mbr-bench embed` (and its --json)."""

    video_id: str
    frames: int
    dim: int
    computed: int  # frames run through the backbone now; 0 on a cache hit
    seconds: float  # wall time of this call for this video
    compute_seconds_per_frame: float  # from the run that filled the cache
    path: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)



def video_fps(entry: VideoEntry) -> float:
    """The manifest's frame rate for a video, else the one in the video's header."""
    if entry.fps:
        return float(entry.fps)
    if entry.video is None:  # the manifest refuses this; an entry built in code may not
        raise DataError(f"{entry.pose}: video '{entry.id}' has no video file and no fps; "
                        "add fps: (frames per second of the recording) to it in dataset.yaml")
    return float(probe_video(entry.video).fps)


def cache_key(dataset: Dataset, entry: VideoEntry, backbone: Backbone, crop: CropSettings) -> CacheKey:
    """What the embedding of `entry` depends on, and nothing more."""
    fields: dict[str, Any] = {"backbone": backbone.describe()}
    if isinstance(backbone, PoseBackbone):
        # The video is not read: a pose-only entry (no video file) has the same key as one with it.
        fields["pose_sha256"] = content_hash(_require_pose(dataset, entry, "the pose backbone"))
        fields["individual"] = dataset.individual
        # Speeds are per second; the probed rate when the manifest gives none, so a video predicted
        # later (whose entry always carries the probed rate) finds this embedding.
        fields["fps"] = video_fps(entry)
    else:
        fields["video_sha256"] = content_hash(_require_video(dataset, entry, backbone.name))
        fields["crop"] = crop.key()
        if crop.mode == "pose":
            fields["pose_sha256"] = content_hash(_require_pose(dataset, entry, "crop.mode pose"))
            fields["individual"] = dataset.individual
    return CacheKey(entry.id, fields)


def require_inputs(
    dataset: Dataset, backbone: Backbone | str, video_ids: list[str] | None = None, crop: CropSettings | None = None
) -> None:
    """DataError naming the first listed video (default: all) that `backbone` cannot embed.

    An image backbone needs each video's file (and its pose file with crop.mode pose); the pose
    backbone needs each pose file. Reads no file: call it before any work, so that a pose-only
    entry stops a run before other videos or backbones are embedded or searched. `backbone` may
    be a registered name.
    """
    crop = crop or dataset.crop
    name = backbone if isinstance(backbone, str) else backbone.name
    kind = BACKBONES.kind_of(backbone) if isinstance(backbone, str) else backbone.kind
    entries = [dataset.video(v) for v in video_ids] if video_ids else list(dataset.videos)
    for entry in entries:
        if kind == "pose":
            _require_pose(dataset, entry, "the pose backbone")
        else:
            _require_video(dataset, entry, name)
            if crop.mode == "pose":
                _require_pose(dataset, entry, "crop.mode pose")


def _require_video(dataset: Dataset, entry: VideoEntry, backbone_name: str) -> Path:
    return _require(dataset, entry, entry.video, "video", f"backbone {backbone_name}",
                    "add video: for it in dataset.yaml, or use the pose backbone (run --backbones pose)")


def _require_pose(dataset: Dataset, entry: VideoEntry, needed_by: str) -> Path:
    return _require(dataset, entry, entry.pose, "pose", needed_by,
                    "add pose: for it, or use an image backbone with crop.mode tracker or full")


def _require(dataset: Dataset, entry: VideoEntry, path: Path | None, what: str, needed_by: str, fix: str) -> Path:
    """`path`, the entry's `what` file; the one-line error naming who needs it and the fix when it has none."""
    if path is None:
        raise DataError(f"{dataset.path}: video '{entry.id}' has no {what} file, which {needed_by} needs; {fix}")
    return path


def _batches(frames: Iterator[np.ndarray], batch_size: int, size: int) -> Iterator[np.ndarray]:
    batch = np.empty((batch_size, size, size, 3), np.uint8)
    filled = 0
    for frame in frames:
        batch[filled] = frame
        filled += 1
        if filled == batch_size:
            yield batch
            batch = np.empty_like(batch)  # the consumer still holds the previous one
            filled = 0
    if filled:
        yield batch[:filled]


def _prefetch(batches: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    """Run `batches` in a reader thread; re-raise its errors here; stop it if we stop early."""
    buffer: queue.Queue[Any] = queue.Queue(maxsize=_PREFETCH_BATCHES)
    done = object()
    stop = threading.Event()

    def reader() -> None:
        try:
            for batch in batches:
                while not stop.is_set():
                    try:
                        buffer.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            buffer.put(done)
        except BaseException as error:  # handed to the consumer, which raises it
            buffer.put(error)

    thread = threading.Thread(target=reader, name="mbr-bench-decode", daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def _image_frames(
    dataset: Dataset, entry: VideoEntry, crop: CropSettings, out_size: int, n_frames: int
) -> Iterator[np.ndarray]:
    centres = None
    if crop.mode == "pose":
        pose = read_pose(_require_pose(dataset, entry, "crop.mode pose"), individual=dataset.individual)
        centres = centre_track(pose, crop.centre, crop.min_likelihood)
        if len(centres) != n_frames:
            raise DataError(
                f"{entry.pose}: frame-count mismatch for video '{entry.id}': video {n_frames}, "
                f"pose {len(centres)}; the pose file must have one row per video frame"
            )
    elif crop.mode == "tracker":
        centres = track_centroids(entry.video)
    return iter_crops(entry.video, crop, out_size, centres=centres)


def _embed_images(
    dataset: Dataset, entry: VideoEntry, backbone: ImageBackbone, crop: CropSettings, out: np.ndarray, batch_size: int, bar: Any
) -> None:
    n_frames = len(out)
    crops = _image_frames(dataset, entry, crop, backbone.input_size, n_frames)
    filled = 0
    for batch in _prefetch(_batches(crops, batch_size, backbone.input_size)):
        if filled + len(batch) > n_frames:
            raise DataError(f"{entry.video}: decodes more frames than its header's {n_frames}; re-encode the video")
        out[filled : filled + len(batch)] = backbone.embed_images(batch)
        filled += len(batch)
        bar.update(len(batch))
    if filled != n_frames:
        raise DataError(
            f"{entry.video}: only {filled} of the {n_frames} frames in its header decode (truncated or corrupt); "
            "re-encode or replace the file"
        )


def embed_video(
    dataset: Dataset,
    entry: VideoEntry,
    backbone: Backbone,
    cache: EmbeddingCache,
    crop: CropSettings | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> EmbedResult:
    """Embed one video (or load it from the cache)."""
    crop = crop or dataset.crop
    started = time.perf_counter()
    key = cache_key(dataset, entry, backbone, crop)
    hit = _cached_result(cache, key, entry, started)
    if hit is not None:
        return hit
    # A miss: claim the entry, so a worker sharing this cache folder does not compute it too.
    with cache.claim(key, on_wait=lambda owner: _say(f"{entry.id} · {backbone.name}: waiting for {owner}, "
                                                      "which is embedding it")):
        hit = _cached_result(cache, key, entry, started)  # it finished while we waited
        if hit is not None:
            return hit
        info: dict[str, Any] = {}
        if isinstance(backbone, PoseBackbone):
            pose = read_pose(_require_pose(dataset, entry, "the pose backbone"), individual=dataset.individual)
            # A pose-only entry (no video file) has as many frames as its pose file has rows.
            if entry.video is not None and entry.video.exists():
                n_video = probe_video(entry.video).n_frames
                if n_video != pose.n_frames:  # labels follow the video: features must too
                    raise DataError(
                        f"{entry.pose}: frame-count mismatch for video '{entry.id}': video {n_video}, pose "
                        f"{pose.n_frames}; the pose file must have one row per video frame (re-run pose "
                        "estimation on this exact video)")
            features = backbone.embed_pose(pose, video_fps(entry))
            shape = features.shape
            with cache.writer(key, shape, info) as out:
                out[:] = features
                _timing(info, started, shape[0], batch_size)
        else:
            assert isinstance(backbone, ImageBackbone)
            n_frames = probe_video(_require_video(dataset, entry, backbone.name)).n_frames
            shape = (n_frames, backbone.output_dim)
            with cache.writer(key, shape, info) as out, tqdm(
                total=n_frames, desc=f"{entry.id} · {backbone.name}", unit="frame", disable=not progress, leave=False
            ) as bar:
                _embed_images(dataset, entry, backbone, crop, out, batch_size, bar)
                _timing(info, started, shape[0], batch_size)
    return EmbedResult(
        entry.id, shape[0], shape[1], shape[0], round(time.perf_counter() - started, 4),
        float(info["seconds_per_frame"]), str(cache.array_path(key)),
    )


def _cached_result(cache: EmbeddingCache, key: CacheKey, entry: VideoEntry, started: float) -> EmbedResult | None:
    """The result of a cache hit, read only after its checksum matches; None on a miss."""
    hit = cache.load_with_record(key, verify=True)
    if hit is None:
        return None
    cached, record = hit
    # Entries written before the per-frame cost was recorded still carry their total seconds.
    per_frame = record.get("seconds_per_frame", record.get("seconds", 0.0) / max(cached.shape[0], 1))
    return EmbedResult(
        entry.id, cached.shape[0], cached.shape[1], 0, round(time.perf_counter() - started, 4),
        float(per_frame), str(cache.array_path(key)),
    )


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)  # rare, and it explains a pause: never hidden


def _timing(info: dict[str, Any], started: float, n_frames: int, batch_size: int) -> None:
    """What computing this entry cost; set inside the writer so the cache record keeps it."""
    info["seconds"] = time.perf_counter() - started
    info["seconds_per_frame"] = info["seconds"] / max(n_frames, 1)
    info["frames_per_second"] = n_frames / max(info["seconds"], 1e-9)
    info["batch_size"] = batch_size


def embed_dataset(
    dataset: Dataset,
    backbone: Backbone,
    cache: EmbeddingCache,
    crop: CropSettings | None = None,
    batch_size: int = 32,
    video_ids: list[str] | None = None,
    progress: bool = True,
) -> list[EmbedResult]:
    """Embed the listed videos (default: all) and return one result per video.

    Every listed video is checked to have the files `backbone` needs before any is embedded.
    """
    entries = [dataset.video(v) for v in video_ids] if video_ids else list(dataset.videos)
    require_inputs(dataset, backbone, [entry.id for entry in entries], crop)
    return [embed_video(dataset, entry, backbone, cache, crop, batch_size, progress) for entry in entries]


def load_embeddings(
    dataset: Dataset, entry: VideoEntry, backbone: Backbone, cache: EmbeddingCache, crop: CropSettings | None = None
) -> np.ndarray:
    """The cached (frames, dim) embeddings of one video; DataError if it was never embedded."""
    array = cache.load(cache_key(dataset, entry, backbone, crop or dataset.crop))
    if array is None:
        raise DataError(
            f"{dataset.path}: video '{entry.id}' has no cached {backbone.name} embeddings in {cache.root}; "
            f"run `mbr-bench embed --dataset {dataset.path} --backbone {backbone.name}` first"
        )
    return array
