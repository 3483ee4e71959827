"""dataset.yaml: which videos, with which pose and label files, in which split.

```yaml
name: my_lab_openfield            # optional
behaviours: [grooming, wall_rearing]
crop: {mode: pose, size: 160, centre: [midbody], min_likelihood: 0.6}   # optional
pose: {heading: [tailbase, snout], individual: null}                    # optional
videos:
  - id: m1                        # unique
    video: videos/m1.mp4          # paths are relative to this file
    pose: poses/m1_dlc.csv        # optional (DLC CSV or H5)
    labels: labels/m1.csv         # optional (per-frame CSV, DLC CSV + behaviour columns, interval CSV)
    split: train                  # train | test; required with labels, and train needs labels
    fps: 10                       # optional; default: the video's own
  - id: m2                        # pose-only: the video is archived, its DeepLabCut output is not
    pose: poses/m2_dlc.csv        # one row per frame of the recording
    labels: labels/m2.csv
    split: train
    fps: 30                       # required without a video
```
A video entry needs a video, or a pose file and fps (pose-only: only the `pose` backbone can embed
it, frame count = pose rows). Loading checks structure and that every named file exists;
`check.py` reads the files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ...core.errors import ConfigError, DataError
from .crops import CropSettings

SPLITS = ("train", "test")
_TOP_KEYS = {"name", "behaviours", "behaviors", "crop", "pose", "videos", "synthetic"}
_VIDEO_KEYS = {"id", "video", "pose", "labels", "split", "fps"}
_POSE_KEYS = {"heading", "individual"}


@dataclass(frozen=True)
class VideoEntry:
    id: str
    video: Path | None  # None: a pose-only entry (pose and fps are then set)
    pose: Path | None = None
    labels: Path | None = None
    split: str | None = None
    fps: float | None = None


@dataclass(frozen=True)
class Dataset:
    path: Path
    name: str
    behaviours: tuple[str, ...]
    videos: tuple[VideoEntry, ...]
    crop: CropSettings = field(default_factory=CropSettings)
    heading: tuple[str, str] = ("tailbase", "snout")
    individual: str | None = None

    def video(self, video_id: str) -> VideoEntry:
        for entry in self.videos:
            if entry.id == video_id:
                return entry
        known = ", ".join(entry.id for entry in self.videos)
        raise ConfigError(f"{self.path}: no video with id '{video_id}'; known: {known}")

    def split(self, name: str) -> tuple[VideoEntry, ...]:
        return tuple(entry for entry in self.videos if entry.split == name)

    @property
    def labelled(self) -> bool:
        return any(entry.labels is not None for entry in self.videos)

    @property
    def pose_only(self) -> tuple[VideoEntry, ...]:
        """The entries without a video file (only the pose backbone can embed them)."""
        return tuple(entry for entry in self.videos if entry.video is None)


def _fail(path: Path, problem: str, fix: str) -> DataError:
    return DataError(f"{path}: {problem}; {fix}")


def _as_list(value: Any) -> list[Any]:
    return [value] if isinstance(value, str) else list(value)


def _resolve(manifest: Path, where: str, value: Any) -> Path:
    if not isinstance(value, str) or not value:
        raise _fail(manifest, f"{where} must be a file path, got {value!r}", "give a path relative to dataset.yaml")
    path = Path(value).expanduser()
    path = path if path.is_absolute() else manifest.parent / path
    if not path.exists():
        raise _fail(manifest, f"{where} file not found: {path}", "fix the path (relative to dataset.yaml) or add the file")
    return path


def _video_entry(manifest: Path, index: int, raw: Any) -> VideoEntry:
    where = f"videos[{index}]"
    if not isinstance(raw, dict):
        raise _fail(manifest, f"{where} must be a mapping with id, video, ...", "see the dataset format in the README")
    unknown = set(raw) - _VIDEO_KEYS
    if unknown:
        raise _fail(manifest, f"{where} has unknown key(s) {sorted(unknown)}", f"use only {sorted(_VIDEO_KEYS)}")
    if raw.get("id") is None or raw.get("id") == "":
        raise _fail(manifest, f"{where} has no id", "give it a unique id: (and a video:, or pose: with fps:)")
    video_id = str(raw["id"])
    where = f"video '{video_id}'"
    split = raw.get("split")
    if split is not None and split not in SPLITS:
        raise _fail(manifest, f"{where} has split {split!r}", "use split: train or split: test")
    fps = raw.get("fps")
    if fps is not None and (isinstance(fps, bool) or not isinstance(fps, (int, float)) or not fps > 0):
        raise _fail(manifest, f"{where} has fps {fps!r}", "give a positive number or leave fps out")
    has_video, has_pose = raw.get("video") is not None, raw.get("pose") is not None
    if not has_video and not has_pose:
        raise _fail(manifest, f"{where} has neither a video nor a pose file",
                    "add video: (its file), or pose: and fps: for a pose-only entry")
    if not has_video and fps is None:
        raise _fail(manifest, f"{where} has a pose file but no video, so its frame rate is unknown",
                    "add fps: (frames per second of the recording) to it, or add video:")
    entry = VideoEntry(
        id=video_id,
        video=_resolve(manifest, f"{where} video", raw["video"]) if has_video else None,
        pose=_resolve(manifest, f"{where} pose", raw["pose"]) if has_pose else None,
        labels=_resolve(manifest, f"{where} labels", raw["labels"]) if raw.get("labels") is not None else None,
        split=split,
        fps=float(fps) if fps is not None else None,
    )
    if entry.labels is not None and entry.split is None:
        raise _fail(manifest, f"{where} has labels but no split", "add split: train or split: test")
    if entry.split == "train" and entry.labels is None:
        # The searches train and score on every train video: without labels there is nothing to learn.
        raise _fail(manifest, f"{where} has split: train but no labels",
                    "add labels: for it, or set split: test or leave split out to embed it without training on it")
    return entry


def load_dataset(path: str | Path) -> Dataset:
    """Parse and validate dataset.yaml; every referenced file must exist."""
    manifest = Path(path).expanduser()
    if manifest.is_dir():
        manifest = manifest / "dataset.yaml"
    if not manifest.is_file():
        raise _fail(manifest, "dataset manifest not found", "pass the path of a dataset.yaml (see README: dataset format)")
    try:
        raw = yaml.safe_load(manifest.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise _fail(manifest, f"not valid YAML{at}", "fix the syntax") from None
    if not isinstance(raw, dict):
        raise _fail(manifest, "must be a YAML mapping with a videos list", "see the dataset format in the README")
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise _fail(manifest, f"unknown key(s) {sorted(unknown)}", f"use only {sorted(_TOP_KEYS - {'behaviors'})}")

    behaviours = tuple(str(b) for b in _as_list(raw.get("behaviours", raw.get("behaviors")) or []))
    if len(set(behaviours)) != len(behaviours):
        raise _fail(manifest, f"behaviours listed twice: {list(behaviours)}", "list each behaviour once")

    raw_videos = raw.get("videos")
    if not isinstance(raw_videos, list) or not raw_videos:
        raise _fail(manifest, "no videos listed", "add a videos: list (see the dataset format in the README)")
    videos = tuple(_video_entry(manifest, i, item) for i, item in enumerate(raw_videos))
    seen: set[str] = set()
    for entry in videos:
        if entry.id in seen:
            raise _fail(manifest, f"duplicate video id '{entry.id}'", "give every video a unique id")
        seen.add(entry.id)

    labelled = [entry for entry in videos if entry.labels is not None]
    if labelled and not behaviours:
        raise _fail(manifest, "videos have labels but no behaviours are listed", "add behaviours: [name, ...]")
    if labelled:
        for split in SPLITS:
            if not any(entry.split == split for entry in labelled):
                raise _fail(
                    manifest,
                    f"no labelled {split} video",
                    f"mark at least one labelled video split: {split} (searches use train; test is held out)",
                )

    try:
        crop = CropSettings.from_dict(raw.get("crop"))
    except ConfigError as error:
        raise ConfigError(f"{manifest}: crop: {error}") from None
    pose_cfg = raw.get("pose") or {}
    if not isinstance(pose_cfg, dict) or set(pose_cfg) - _POSE_KEYS:
        raise _fail(manifest, f"pose: must be a mapping with keys {sorted(_POSE_KEYS)}", "fix the pose: section")
    heading = tuple(str(p) for p in _as_list(pose_cfg.get("heading", ["tailbase", "snout"])))
    if len(heading) != 2:
        raise _fail(manifest, f"pose.heading must name two body parts (back, front), got {list(heading)}", "e.g. heading: [tailbase, snout]")
    return Dataset(
        path=manifest.resolve(),
        name=str(raw.get("name") or manifest.parent.name),
        behaviours=behaviours,
        videos=videos,
        crop=crop,
        heading=(heading[0], heading[1]),
        individual=pose_cfg.get("individual"),
    )
