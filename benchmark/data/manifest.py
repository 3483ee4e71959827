"""dataset.yaml: which videos, with which pose and label files, in which split.

```yaml
name: my_lab_openfield            # optional
behaviours: [grooming, wall_rearing]
crop: {mode: pose, size: 160, centre: [midbody], min_likelihood: 0.6}   # optional
pose:                             # optional
  heading: [tailbase, snout]      # back part, front part
  individual: null                # multi-animal files: which animal
  rename: {Nose: snout, Tail_base: tailbase}   # file name -> name used everywhere else
  ignore: [LED]                   # parts to drop (after renaming)
motion: {windows: [0.2, 0.5, 1, 2], causal: false}   # optional: pose and track time scales, seconds
px_per_cm: 12.5                   # optional (also per video): speeds in cm/s instead of body lengths/s
arena: [40, 30, 600, 450]         # optional (also per video): walls, pixels left, top, right, bottom;
                                  # without it the arena is estimated from where the animal goes
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
    arena: [12, 8, 500, 496]      # this camera's walls (overrides the top-level arena)
```
A video entry needs a video, or a pose file and fps (pose-only: only the `pose` backbone can embed
it, frame count = pose rows). Loading checks structure and that every named file exists;
`check.py` reads the files.
"""

from __future__ import annotations

import reprlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ...core.errors import ConfigError, DataError
from ...core.textfiles import check_text_file
from .crops import CropSettings
from .pose import Pose, read_pose

SPLITS = ("train", "test")
_TOP_KEYS = {"name", "behaviours", "behaviors", "crop", "pose", "motion", "px_per_cm", "arena", "videos", "synthetic"}
_VIDEO_KEYS = {"id", "video", "pose", "labels", "split", "fps", "px_per_cm", "arena"}
_POSE_KEYS = {"heading", "individual", "rename", "ignore"}
_MOTION_KEYS = {"windows", "causal"}


@dataclass(frozen=True)
class VideoGeometry:
    """What the manifest says of a video's camera: scale and where the arena's walls are."""

    px_per_cm: float | None = None
    arena: tuple[float, float, float, float] | None = None  # left, top, right, bottom, pixels

    def key(self) -> dict[str, Any]:
        return {"px_per_cm": self.px_per_cm, "arena": list(self.arena) if self.arena else None}


@dataclass(frozen=True)
class PartNames:
    """How a pose file's body-part names map onto the names the dataset uses (`pose:` rename/ignore)."""

    rename: tuple[tuple[str, str], ...] = ()
    ignore: tuple[str, ...] = ()

    def key(self) -> dict[str, Any]:
        return {"rename": [list(pair) for pair in self.rename], "ignore": list(self.ignore), "order": "by-name"}


@dataclass(frozen=True)
class VideoEntry:
    id: str
    video: Path | None  # None: a pose-only entry (pose and fps are then set)
    pose: Path | None = None
    labels: Path | None = None
    split: str | None = None
    fps: float | None = None
    geometry: VideoGeometry = field(default_factory=VideoGeometry)


@dataclass(frozen=True)
class Dataset:
    path: Path
    name: str
    behaviours: tuple[str, ...]
    videos: tuple[VideoEntry, ...]
    crop: CropSettings = field(default_factory=CropSettings)
    heading: tuple[str, str] = ("tailbase", "snout")
    individual: str | None = None
    parts: PartNames = field(default_factory=PartNames)
    motion: dict[str, Any] = field(default_factory=dict)  # `motion:` settings for the pose and track backbones

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

    def read_pose(self, entry: VideoEntry, pose_file: Path | None = None) -> Pose:
        """The entry's pose file (or `pose_file`), read with this dataset's animal and part names."""
        path = pose_file or entry.pose
        if path is None:
            raise DataError(f"{self.path}: video '{entry.id}' has no pose file; add pose: for it in dataset.yaml")
        return read_pose(path, self.individual, self.parts.rename, self.parts.ignore)

    @property
    def pose_only(self) -> tuple[VideoEntry, ...]:
        """The entries without a video file (only the pose backbones can embed them)."""
        return tuple(entry for entry in self.videos if entry.video is None)


_SHORT_REPR = reprlib.Repr()  # Python 3.11's Repr takes no keyword arguments
_SHORT_REPR.maxlevel, _SHORT_REPR.maxdict, _SHORT_REPR.maxlist, _SHORT_REPR.maxtuple = 1, 4, 6, 6
_SHORT_REPR.maxstring = _SHORT_REPR.maxother = 60


def _fail(path: Path, problem: str, fix: str) -> DataError:
    return DataError(f"{path}: {problem}; {fix}")


def _shown(value: Any) -> str:
    """`value` for a message, cut short: a YAML alias bomb or a pasted table must not flood the terminal."""
    return _SHORT_REPR.repr(value)


def _name(manifest: Path, key: str, value: Any) -> str:
    """A name field (dataset name, video id, behaviour): a plain string or number."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _fail(manifest, f"{key} is {_shown(value)}, not a name", f"give {key} a plain string")
    return str(value)


def _as_list(value: Any) -> list[Any]:
    return [value] if isinstance(value, str) else list(value)


def _resolve(manifest: Path, where: str, value: Any) -> Path:
    if not isinstance(value, str) or not value:
        raise _fail(manifest, f"{where} must be a file path, got {_shown(value)}", "give a path relative to dataset.yaml")
    path = Path(value).expanduser()
    path = path if path.is_absolute() else manifest.parent / path
    if not path.exists():
        raise _fail(manifest, f"{where} file not found: {path}", "fix the path (relative to dataset.yaml) or add the file")
    return path


def _px_per_cm(manifest: Path, where: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise _fail(manifest, f"{where} px_per_cm is {_shown(value)}", "give the camera's pixels per centimetre (a positive number)")
    return float(value)


def _arena(manifest: Path, where: str, value: Any) -> tuple[float, float, float, float] | None:
    if value is None:
        return None
    ok = isinstance(value, (list, tuple)) and len(value) == 4 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    if not ok or not (value[0] < value[2] and value[1] < value[3]):
        raise _fail(manifest, f"{where} arena is {_shown(value)}",
                    "give the walls as [left, top, right, bottom] in pixels, left < right and top < bottom")
    return (float(value[0]), float(value[1]), float(value[2]), float(value[3]))


def _part_names(manifest: Path, pose_cfg: dict[str, Any]) -> PartNames:
    rename, ignore = pose_cfg.get("rename") or {}, pose_cfg.get("ignore") or []
    if not isinstance(rename, dict) or not all(isinstance(k, str) and isinstance(v, str) and k and v
                                               for k, v in rename.items()):
        raise _fail(manifest, f"pose.rename is {_shown(rename)}", "give a mapping of file part name -> name, e.g. {Nose: snout}")
    targets = list(rename.values())
    if len(set(targets)) != len(targets):
        raise _fail(manifest, f"pose.rename maps two parts onto one name ({rename})", "give each part its own name")
    ignore = _as_list(ignore)
    if not all(isinstance(p, str) and p for p in ignore):
        raise _fail(manifest, f"pose.ignore is {_shown(ignore)}", "give a list of body part names, e.g. [LED]")
    return PartNames(tuple(sorted(rename.items())), tuple(sorted(set(ignore))))


def _motion(manifest: Path, raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or set(raw) - _MOTION_KEYS:
        raise _fail(manifest, f"motion: must be a mapping with keys {sorted(_MOTION_KEYS)}", "fix the motion: section")
    out: dict[str, Any] = {}
    if raw.get("windows") is not None:
        windows = _as_list(raw["windows"])
        if not windows or not all(isinstance(w, (int, float)) and not isinstance(w, bool) and w > 0 for w in windows):
            raise _fail(manifest, f"motion.windows is {_shown(raw['windows'])}", "give positive seconds, e.g. [0.2, 0.5, 1, 2]")
        out["windows"] = [float(w) for w in windows]
    if raw.get("causal") is not None:
        if not isinstance(raw["causal"], bool):
            raise _fail(manifest, f"motion.causal is {_shown(raw['causal'])}", "give true (windows end at their frame) or false")
        out["causal"] = raw["causal"]
    return out


def _video_entry(manifest: Path, index: int, raw: Any, defaults: VideoGeometry) -> VideoEntry:
    where = f"videos[{index}]"
    if not isinstance(raw, dict):
        raise _fail(manifest, f"{where} must be a mapping with id, video, ...", "see the dataset format in the README")
    unknown = set(raw) - _VIDEO_KEYS
    if unknown:
        raise _fail(manifest, f"{where} has unknown key(s) {sorted(unknown)}", f"use only {sorted(_VIDEO_KEYS)}")
    if raw.get("id") is None or raw.get("id") == "":
        raise _fail(manifest, f"{where} has no id", "give it a unique id: (and a video:, or pose: with fps:)")
    video_id = _name(manifest, f"{where} id", raw["id"])
    where = f"video '{video_id}'"
    split = raw.get("split")
    if split is not None and split not in SPLITS:
        raise _fail(manifest, f"{where} has split {_shown(split)}", "use split: train or split: test")
    fps = raw.get("fps")
    if fps is not None and (isinstance(fps, bool) or not isinstance(fps, (int, float)) or not fps > 0):
        raise _fail(manifest, f"{where} has fps {_shown(fps)}", "give a positive number or leave fps out")
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
        geometry=VideoGeometry(
            px_per_cm=_px_per_cm(manifest, where, raw.get("px_per_cm")) or defaults.px_per_cm,
            arena=_arena(manifest, where, raw.get("arena")) or defaults.arena,
        ),
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
        raw = yaml.safe_load(check_text_file(manifest, "dataset manifest", "pass the path of a dataset.yaml"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise _fail(manifest, f"not valid YAML{at}", "fix the syntax") from None
    if not isinstance(raw, dict):
        raise _fail(manifest, "must be a YAML mapping with a videos list", "see the dataset format in the README")
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise _fail(manifest, f"unknown key(s) {sorted(unknown)}", f"use only {sorted(_TOP_KEYS - {'behaviors'})}")

    behaviours = tuple(_name(manifest, "a behaviours entry", b)
                       for b in _as_list(raw.get("behaviours", raw.get("behaviors")) or []))
    if len(set(behaviours)) != len(behaviours):
        raise _fail(manifest, f"behaviours listed twice: {list(behaviours)}", "list each behaviour once")

    raw_videos = raw.get("videos")
    if not isinstance(raw_videos, list) or not raw_videos:
        raise _fail(manifest, "no videos listed", "add a videos: list (see the dataset format in the README)")
    defaults = VideoGeometry(_px_per_cm(manifest, "the top-level", raw.get("px_per_cm")),
                             _arena(manifest, "the top-level", raw.get("arena")))
    videos = tuple(_video_entry(manifest, i, item, defaults) for i, item in enumerate(raw_videos))
    scaled = [entry.id for entry in videos if entry.geometry.px_per_cm]
    if scaled and len(scaled) != len(videos):
        unscaled = [entry.id for entry in videos if not entry.geometry.px_per_cm]
        raise _fail(manifest, f"px_per_cm is given for {', '.join(scaled)} but not for {', '.join(unscaled)}",
                    "give px_per_cm for every video (or the top level), so that all speeds share one unit")
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
    raw_heading = pose_cfg.get("heading", ["tailbase", "snout"])
    if not isinstance(raw_heading, (list, str)):
        raise _fail(manifest, f"pose.heading is {_shown(raw_heading)}", "name two body parts, e.g. heading: [tailbase, snout]")
    heading = tuple(_name(manifest, "a pose.heading part", p) for p in _as_list(raw_heading))
    if len(heading) != 2:
        raise _fail(manifest, f"pose.heading must name two body parts (back, front), got {list(heading)}", "e.g. heading: [tailbase, snout]")
    individual = pose_cfg.get("individual")
    if individual is not None:
        individual = _name(manifest, "pose.individual", individual)
    return Dataset(
        path=manifest.resolve(),
        name=_name(manifest, "name", raw.get("name") or manifest.parent.name),
        behaviours=behaviours,
        videos=videos,
        crop=crop,
        heading=(heading[0], heading[1]),
        individual=individual,
        parts=_part_names(manifest, pose_cfg),
        motion=_motion(manifest, raw.get("motion")),
    )
