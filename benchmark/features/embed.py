"""Embed every frame of a dataset's videos once, through the cache.

Image backbones: a reader thread decodes and crops frames into batches while the main thread runs
the CNN on the previous batch (OpenCV and TensorFlow both release the GIL), so decoding overlaps
inference. Results stream into a memory-mapped cache file: memory is bounded by the batch size,
not by the video's length.

The tracker's path (what the `track` backbone embeds, and what crop.mode tracker centres on) is a
cache entry of its own, recorded in the same decode pass as the crops whenever a crop pass runs
and the path is wanted, so a video is decoded once for both. A fused backbone embeds each part
through the cache, then joins them (`backbones/fused.py`).
"""

from __future__ import annotations

import contextlib
import queue
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ...core.errors import DataError
from ...core.hashing import content_hash
from ..backbones import CROP_KINDS, FusedBackbone, part_kinds
from ..backbones.base import Backbone, FlowBackbone, ImageBackbone, PoseBackbone, TrackBackbone
from ..data.crops import BLOB_COLUMNS, TRACKER_VERSION, CropSettings, iter_crops, track_blobs
from ..data.manifest import Dataset, VideoEntry
from ..data.pose import centre_track, heading_track
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
    if isinstance(backbone, FusedBackbone):
        # The parts' own keys (their inputs) plus the fused description (a saved model's scaling, if any).
        return CacheKey(entry.id, {"backbone": backbone.describe(),
                                   "parts": [cache_key(dataset, entry, part, crop).digest for part in backbone.parts]})
    fields: dict[str, Any] = {"backbone": backbone.describe()}
    if isinstance(backbone, PoseBackbone):
        # The video is not read: a pose-only entry (no video file) has the same key as one with it.
        fields["pose_sha256"] = content_hash(_require_pose(dataset, entry, "the pose backbone"))
        fields["individual"] = dataset.individual
        fields["parts"] = dataset.parts.key()
        fields["geometry"] = entry.geometry.key()
        # Speeds are per second; the probed rate when the manifest gives none, so a video predicted
        # later (whose entry always carries the probed rate) finds this embedding.
        fields["fps"] = video_fps(entry)
    elif isinstance(backbone, TrackBackbone):
        fields["tracker"] = tracker_key(dataset, entry, backbone.name).digest
        fields["geometry"] = entry.geometry.key()
        fields["fps"] = video_fps(entry)
    else:
        fields["video_sha256"] = content_hash(_require_video(dataset, entry, backbone.name))
        fields["crop"] = crop.key()
        if crop.mode == "pose":
            fields["pose_sha256"] = content_hash(_require_pose(dataset, entry, "crop.mode pose"))
            fields["individual"] = dataset.individual
            fields["parts"] = dataset.parts.key()
            if isinstance(backbone, FlowBackbone):
                fields["heading"] = list(dataset.heading)  # flow_hof's animal-frame flow
    return CacheKey(entry.id, fields)


def tracker_key(dataset: Dataset, entry: VideoEntry, needed_by: str = "the tracker") -> CacheKey:
    """The cache entry of a video's tracker path (`BLOB_COLUMNS` per frame, NaN where nothing was found)."""
    video = _require_video(dataset, entry, needed_by)
    return CacheKey(entry.id, {"backbone": {"backbone": "tracker", "version": TRACKER_SETTINGS["tracker"],
                                            "min_area": TRACKER_SETTINGS["min_area"]},
                               "video_sha256": content_hash(video)})


def require_inputs(
    dataset: Dataset, backbone: Backbone | str, video_ids: list[str] | None = None, crop: CropSettings | None = None
) -> None:
    """DataError naming the first listed video (default: all) that `backbone` cannot embed.

    An image backbone needs each video's file (and its pose file with crop.mode pose), the track
    backbone the video, the pose backbone each pose file; a fused one what each part needs. Reads
    no file: call it before any work, so that a pose-only entry stops a run before other videos or
    backbones are embedded or searched. `backbone` may be a registered or fused name.
    """
    crop = crop or dataset.crop
    name = backbone if isinstance(backbone, str) else backbone.name
    if isinstance(backbone, str):
        kinds = part_kinds(name)
    else:
        kinds = [part.kind for part in backbone.parts] if isinstance(backbone, FusedBackbone) else [backbone.kind]
    entries = [dataset.video(v) for v in video_ids] if video_ids else list(dataset.videos)
    for entry in entries:
        for kind in kinds:
            if kind == "pose":
                _require_pose(dataset, entry, "the pose backbone")
            else:
                _require_video(dataset, entry, name)
                if kind in CROP_KINDS and crop.mode == "pose":
                    _require_pose(dataset, entry, "crop.mode pose")


def _require_video(dataset: Dataset, entry: VideoEntry, backbone_name: str) -> Path:
    return _require(dataset, entry, entry.video, "video", f"backbone {backbone_name}",
                    "add video: for it in dataset.yaml, or use the pose backbone (run --backbones pose)")


TRACKER_SETTINGS = {"tracker": TRACKER_VERSION, "min_area": 30}  # BlobTracker's defaults, which embedding uses


def _require_pose(dataset: Dataset, entry: VideoEntry, needed_by: str) -> Path:
    return _require(dataset, entry, entry.pose, "pose", needed_by,
                    "add pose: for it, or use an image backbone with crop.mode tracker or full")


def _require(dataset: Dataset, entry: VideoEntry, path: Path | None, what: str, needed_by: str, fix: str) -> Path:
    """`path`, the entry's `what` file; the one-line error naming who needs it and the fix when it has none."""
    if path is None:
        raise DataError(f"{dataset.path}: video '{entry.id}' has no {what} file, which {needed_by} needs; {fix}")
    return path


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
    dataset: Dataset, entry: VideoEntry, crop: CropSettings, out_size: int | tuple[int, ...], n_frames: int,
    blobs: list | None,
) -> tuple[Iterator[Any], np.ndarray | None]:
    """The video's crops, and the animal's heading per frame when the crops follow pose that has the
    heading parts (None otherwise)."""
    centres = heading = None
    if crop.mode == "pose":
        pose = dataset.read_pose(entry, _require_pose(dataset, entry, "crop.mode pose"))
        centres = centre_track(pose, crop.centre, crop.min_likelihood)
        if len(centres) != n_frames:
            raise DataError(
                f"{entry.pose}: frame-count mismatch for video '{entry.id}': video {n_frames}, "
                f"pose {len(centres)}; the pose file must have one row per video frame"
            )
        heading = heading_track(pose, dataset.heading, crop.min_likelihood)
    return iter_crops(entry.video, crop, out_size, centres=centres, blobs=blobs), heading


def _batches_per_size(crops: Iterator[tuple[np.ndarray, ...]], batch_size: int, sizes: tuple[int, ...]
                      ) -> Iterator[tuple[np.ndarray, ...]]:
    """Tuples of crops (one per size) -> tuples of batches (one per size)."""
    batches = tuple(np.empty((batch_size, size, size, 3), np.uint8) for size in sizes)
    filled = 0
    for frame in crops:
        for batch, image in zip(batches, frame):
            batch[filled] = image
        filled += 1
        if filled == batch_size:
            yield batches
            batches = tuple(np.empty_like(batch) for batch in batches)  # the consumer still holds these
            filled = 0
    if filled:
        yield tuple(batch[:filled] for batch in batches)


def _embed_crops(
    dataset: Dataset, entry: VideoEntry, backbones: list[ImageBackbone], crop: CropSettings, outs: list[np.ndarray],
    batch_size: int, bar: Any, blobs: list | None,
) -> list[float]:
    """One decode and crop pass for every backbone in `backbones` (image or flow), each into its `outs`.

    Returns each backbone's own seconds (its `embed_images` calls); the rest of the pass is decoding."""
    seconds = [0.0] * len(backbones)
    n_frames = len(outs[0])
    sizes = tuple(backbone.input_size for backbone in backbones)
    crops, heading = _image_frames(dataset, entry, crop, sizes, n_frames, blobs)
    for backbone in backbones:
        # Flow backbones: no crop of another video comes before this one's first; the animal's heading.
        backbone.start_video(heading)
    filled = 0
    written = [0] * len(backbones)  # a centred clip backbone returns its rows a few frames late
    for batches in _prefetch(_batches_per_size(crops, batch_size, sizes)):
        count = len(batches[0])
        if filled + count > n_frames:
            raise DataError(f"{entry.video}: decodes more frames than its header's {n_frames}; re-encode the video")
        for k, (backbone, batch, out) in enumerate(zip(backbones, batches, outs)):
            began = time.perf_counter()
            rows = backbone.embed_images(batch)
            out[written[k] : written[k] + len(rows)] = rows
            written[k] += len(rows)
            seconds[k] += time.perf_counter() - began
        filled += count
        bar.update(count)
    if filled != n_frames:
        raise DataError(
            f"{entry.video}: only {filled} of the {n_frames} frames in its header decode (truncated or corrupt); "
            "re-encode or replace the file"
        )
    for k, (backbone, out) in enumerate(zip(backbones, outs)):
        began = time.perf_counter()
        rows = backbone.finish_video()
        out[written[k] : written[k] + len(rows)] = rows
        seconds[k] += time.perf_counter() - began
        if written[k] + len(rows) != n_frames:
            raise RuntimeError(f"{backbone.name} returned {written[k] + len(rows)} embeddings for {n_frames} frames")
    return seconds


def tracked_blobs(dataset: Dataset, entry: VideoEntry, cache: EmbeddingCache, progress: bool = False) -> np.ndarray:
    """The tracker's path of a video from the cache, or tracked now (one decode) and cached."""
    key = tracker_key(dataset, entry)
    cached = cache.load(key, verify=True)
    if cached is not None:
        return np.asarray(cached, dtype=np.float64)
    with cache.claim(key):
        cached = cache.load(key, verify=True)
        if cached is not None:
            return np.asarray(cached, dtype=np.float64)
        started = time.perf_counter()
        blobs = track_blobs(entry.video, progress=progress)
        _save_blobs(cache, key, blobs, started)
    return blobs


def _save_blobs(cache: EmbeddingCache, key: CacheKey, blobs: np.ndarray, started: float) -> None:
    info: dict[str, Any] = {"columns": list(BLOB_COLUMNS)}
    with cache.writer(key, blobs.shape, info) as out:
        out[:] = blobs
        _timing(info, started, len(blobs), 1)


def _wants_track(cache: EmbeddingCache, dataset: Dataset, entry: VideoEntry, crop: CropSettings, also_track: bool) -> bool:
    """Whether this crop pass should record the tracker's path: crop.mode tracker finds it anyway;
    otherwise only when asked and not cached yet."""
    if crop.mode == "tracker":
        return cache.record(tracker_key(dataset, entry)) is None
    return also_track and cache.record(tracker_key(dataset, entry)) is None


def embed_video(
    dataset: Dataset,
    entry: VideoEntry,
    backbone: Backbone,
    cache: EmbeddingCache,
    crop: CropSettings | None = None,
    batch_size: int = 32,
    progress: bool = True,
    also_track: bool = False,
    companions: Sequence[Backbone] = (),
) -> EmbedResult:
    """Embed one video (or load it from the cache).

    `also_track`: an image backbone's crop pass also records the tracker's path (for the `track`
    backbone), so that the video is not decoded a second time for it. `companions`: other image or
    flow backbones that the same crop pass embeds too, where their cache entries are missing (a run
    of mobilenet_v2 and flow_hof decodes each video once).
    """
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
        if isinstance(backbone, (PoseBackbone, TrackBackbone)):
            features = _whole_video_features(dataset, entry, backbone, cache, progress)
            shape = features.shape
            with cache.writer(key, shape, info) as out:
                out[:] = features
                _timing(info, started, shape[0], batch_size)
        else:
            assert isinstance(backbone, ImageBackbone)
            n_frames = probe_video(_require_video(dataset, entry, backbone.name)).n_frames
            shape = (n_frames, backbone.output_dim)
            blobs: list | None = [] if _wants_track(cache, dataset, entry, crop, also_track) else None
            riders = _missing_companions(cache, dataset, entry, backbone, crop, companions)
            names = " + ".join(b.name for b in (backbone, *riders))
            with contextlib.ExitStack() as stack:
                bar = stack.enter_context(tqdm(total=n_frames, desc=f"{entry.id} · {names}", unit="frame",
                                               disable=not progress, leave=False))
                outs = [stack.enter_context(cache.writer(key, shape, info, dtype=backbone.cache_dtype))]
                rider_infos: list[dict[str, Any]] = [{} for _ in riders]
                for rider, rider_info in zip(riders, rider_infos):
                    outs.append(stack.enter_context(cache.writer(cache_key(dataset, entry, rider, crop),
                                                                 (n_frames, rider.output_dim), rider_info,
                                                                 dtype=rider.cache_dtype)))
                own = _embed_crops(dataset, entry, [backbone, *riders], crop, outs, batch_size, bar, blobs)
                # A shared pass: each entry's cost is its own compute plus the decoding and cropping,
                # which it would pay alone (what the board shows as its embedding cost).
                decoding = max(time.perf_counter() - started - sum(own), 0.0)
                for entry_info, seconds in zip((info, *rider_infos), own):
                    _cost(entry_info, seconds + decoding, n_frames, batch_size)
            if blobs:  # recorded in the crop pass: the track backbone will not decode this video again
                _save_blobs(cache, tracker_key(dataset, entry), np.asarray(blobs, np.float64), started)
    return EmbedResult(
        entry.id, shape[0], shape[1], shape[0], round(time.perf_counter() - started, 4),
        float(info["seconds_per_frame"]), str(cache.array_path(key)),
    )


def _missing_companions(
    cache: EmbeddingCache, dataset: Dataset, entry: VideoEntry, backbone: Backbone, crop: CropSettings,
    companions: Sequence[Backbone],
) -> list[ImageBackbone]:
    """The image or flow backbones among `companions` (not `backbone` itself) not cached for this video."""
    riders: list[ImageBackbone] = []
    for other in companions:
        if (isinstance(other, ImageBackbone) and other.name != backbone.name
                and other.name not in [r.name for r in riders]
                and cache.record(cache_key(dataset, entry, other, crop)) is None):
            riders.append(other)
    return riders


def _whole_video_features(
    dataset: Dataset, entry: VideoEntry, backbone: PoseBackbone | TrackBackbone, cache: EmbeddingCache, progress: bool
) -> np.ndarray:
    """Pose or track features of a whole video (they need neighbouring frames, so no batches)."""
    if isinstance(backbone, TrackBackbone):
        blobs = tracked_blobs(dataset, entry, cache, progress)
        return backbone.embed_track(blobs, video_fps(entry), entry.geometry)
    pose = dataset.read_pose(entry, _require_pose(dataset, entry, "the pose backbone"))
    # A pose-only entry (no video file) has as many frames as its pose file has rows.
    if entry.video is not None and entry.video.exists():
        n_video = probe_video(entry.video).n_frames
        if n_video != pose.n_frames:  # labels follow the video: features must too
            raise DataError(
                f"{entry.pose}: frame-count mismatch for video '{entry.id}': video {n_video}, pose "
                f"{pose.n_frames}; the pose file must have one row per video frame (re-run pose "
                "estimation on this exact video)")
    return backbone.embed_pose(pose, video_fps(entry), entry.geometry)


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
    """What computing this entry cost since `started`; set inside the writer so the cache record keeps it."""
    _cost(info, time.perf_counter() - started, n_frames, batch_size)


def _cost(info: dict[str, Any], seconds: float, n_frames: int, batch_size: int) -> None:
    info["seconds"] = seconds
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
    also_track: bool = False,
    companions: Sequence[Backbone] = (),
) -> list[EmbedResult]:
    """Embed the listed videos (default: all) and return one result per video.

    Every listed video is checked to have the files `backbone` needs before any is embedded.
    `also_track` and `companions`: what a crop pass also records (see `embed_video`).
    """
    entries = [dataset.video(v) for v in video_ids] if video_ids else list(dataset.videos)
    require_inputs(dataset, backbone, [entry.id for entry in entries], crop)
    if isinstance(backbone, FusedBackbone):
        return _embed_fused(dataset, backbone, cache, crop or dataset.crop, batch_size, entries, progress, companions)
    return [embed_video(dataset, entry, backbone, cache, crop, batch_size, progress, also_track, companions)
            for entry in entries]


def _embed_fused(
    dataset: Dataset, backbone: FusedBackbone, cache: EmbeddingCache, crop: CropSettings, batch_size: int,
    entries: list[VideoEntry], progress: bool, companions: Sequence[Backbone] = (),
) -> list[EmbedResult]:
    """Each part through the cache (crop parts first, in one crop pass, recording the tracker's path
    if a part needs it), then the join."""
    started = time.perf_counter()
    ids = [entry.id for entry in entries]
    wants_track = any(part.kind == "track" for part in backbone.parts)
    order = sorted(range(len(backbone.parts)), key=lambda k: backbone.parts[k].kind not in CROP_KINDS)
    riders = [*[part for part in backbone.parts if part.kind in CROP_KINDS], *companions]
    parts: dict[int, list[EmbedResult]] = {}
    for k in order:
        parts[k] = embed_dataset(dataset, backbone.parts[k], cache, crop, batch_size, ids, progress, wants_track,
                                 riders)
    results = []
    for i, entry in enumerate(entries):
        arrays = [np.load(parts[k][i].path, mmap_mode="r") for k in range(len(backbone.parts))]
        lengths = {part.name: len(a) for part, a in zip(backbone.parts, arrays)}
        if len(set(lengths.values())) != 1:
            raise DataError(f"{dataset.path}: video '{entry.id}' has different frame counts per part of "
                            f"{backbone.name} ({lengths}); its pose file must have one row per video frame")
        backbone.widths = tuple(int(a.shape[1]) for a in arrays)  # the head's input blocks, hit or miss
        cost = sum(parts[k][i].compute_seconds_per_frame for k in range(len(backbone.parts)))
        key = cache_key(dataset, entry, backbone, crop)
        hit = cache.load(key, verify=True)
        computed = 0
        if hit is None:
            shape = (len(arrays[0]), sum(a.shape[1] for a in arrays))
            info: dict[str, Any] = {}
            with cache.claim(key), cache.writer(key, shape, info) as out:
                backbone.join(arrays, out)
                # The row's cost is its parts' (the join itself is a copy): what a lab pays to embed.
                info.update(seconds=cost * shape[0], seconds_per_frame=cost, batch_size=batch_size,
                            frames_per_second=1.0 / max(cost, 1e-12))
            computed = shape[0]
            hit = cache.load(key)
        results.append(EmbedResult(entry.id, hit.shape[0], hit.shape[1], computed,
                                   round(time.perf_counter() - started, 4), cost, str(cache.array_path(key))))
    return results


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
