"""The pose backbones: engineered features from a pose file (DeepLabCut), no weights, no GPU.

They let a lab that has only pose output (no GPU, no video backbone, even no video) run the
benchmark. Posture is invariant to where the mouse is, which way the arena is rotated and the
video's resolution: positions are taken relative to a centre point, rotated into the mouse's
heading frame and measured in body lengths (the video's median back-to-front distance).
Body parts are matched by name (the reader orders them by name), never by column position.

`pose` (features v2) adds movement over time, which is what freezing, grooming and rearing are
made of (see `PoseFeatures.groups` and `motion.py`); `pose_v1` keeps the one-frame features for
comparison. v1, per frame, for P body parts and S segments (see `SEGMENTS`), in this order:

* 2P  positions of each part relative to the centre, in the heading frame (forward, lateral);
* P(P-1)/2  pairwise part distances;
* P   per-part speeds, body lengths per second;
* 1   centre speed, body lengths per second;
* 1   heading angular velocity, rad/s (wrapped to [-pi, pi) per frame);
* 2S  sin and cos of each segment's angle relative to the heading;
* P   DeepLabCut likelihood of each part (0 where missing).

Everything is clipped to +-CLIP so that one bad frame cannot dominate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .base import BACKBONES, PoseBackbone
from .motion import ARENA_MODES, DEFAULT_WINDOWS, STATS, Arena, MotionSettings, arena_features, backward_step, displacement_signals, speed_signals, window_stats
from ..data.manifest import VideoGeometry
from ..data.pose import Pose, clean_pose, require_parts, require_tracked
from ...core.errors import ConfigError, DataError

V1_VERSION = "pose-features-v1"  # bump whenever a feature's definition changes
V2_VERSION = "pose-features-v2.1"  # v2.1: net displacement over each window
CLIP = 10.0

# Named segments whose direction relative to the heading carries posture (head turn, body bend).
# Each end is one part or the mean of several; a segment is used when all its parts exist.
SEGMENTS: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("leftear", "rightear"), ("snout",)),  # head direction: between the ears -> snout
    (("leftear",), ("rightear",)),  # ear line
    (("midbody",), ("snout",)),  # front half of the body
    (("tailbase",), ("midbody",)),  # back half of the body
)


def _as_parts(value: Sequence[str] | str, setting: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    try:
        parts = tuple(value)
    except TypeError:
        raise ConfigError(f"{setting} is {value!r}; give a list of body part names") from None
    if not parts or not all(isinstance(p, str) and p for p in parts):
        raise ConfigError(f"{setting} is {value!r}; give a non-empty list of body part names")
    return parts


def _segments(bodyparts: Sequence[str], heading: tuple[str, str]) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    present = set(bodyparts)
    out = []
    for back, front in SEGMENTS:
        if not present.issuperset(back + front):
            continue
        if back == (heading[0],) and front == (heading[1],):
            continue  # the heading itself: its relative angle is always 0
        out.append((back, front))
    return out


class _PoseBackboneBase(PoseBackbone):
    """What both pose feature versions share: settings, and a cleaned track in the heading frame."""

    version: ClassVar[str]

    def __init__(
        self,
        centre: Sequence[str] = ("midbody",),
        heading: Sequence[str] = ("tailbase", "snout"),
        min_likelihood: float = 0.6,
        weights: str | None = "none",
    ) -> None:
        if weights is not None and str(weights).lower() != "none":
            raise ConfigError(
                f"backbone '{self.name}' got weights={weights!r}; pose features have no weights, "
                "leave weights unset or 'none'"
            )
        self.centre = _as_parts(centre, "crop.centre")
        heading_parts = _as_parts(heading, "pose.heading")
        if len(heading_parts) != 2 or heading_parts[0] == heading_parts[1]:
            raise ConfigError(
                f"pose.heading is {list(heading_parts)}; give two different body parts, back then front "
                "(e.g. [tailbase, snout])"
            )
        self.heading: tuple[str, str] = (heading_parts[0], heading_parts[1])
        try:
            self.min_likelihood = float(min_likelihood)
        except (TypeError, ValueError):
            raise ConfigError(f"crop.min_likelihood is {min_likelihood!r}; give a number between 0 and 1") from None
        if not 0.0 <= self.min_likelihood <= 1.0:
            raise ConfigError(f"crop.min_likelihood is {min_likelihood}; give a number between 0 and 1")

    @property
    def weights_id(self) -> str:
        """The feature-definition version (pose features have no weights)."""
        return self.version

    def describe(self) -> dict[str, Any]:
        """Backbone name, feature version and every setting that changes the features."""
        return {
            **super().describe(),
            "centre": list(self.centre),
            "heading": list(self.heading),
            "min_likelihood": self.min_likelihood,
        }

    def _track(self, pose: Pose, fps: float) -> _Track:
        if not (isinstance(fps, (int, float, np.number)) and np.isfinite(fps) and fps > 0):
            raise ConfigError(f"{pose.path}: fps is {fps!r}; set a positive fps for this video in dataset.yaml")
        centre_idx = require_parts(pose, self.centre, "crop.centre")
        back_idx, front_idx = require_parts(pose, self.heading, "pose.heading (back part, front part)")
        cleaned = clean_pose(pose, self.min_likelihood)
        require_tracked(pose, cleaned, centre_idx, "crop.centre", self.min_likelihood)
        require_tracked(pose, cleaned, (back_idx, front_idx), "pose.heading", self.min_likelihood)

        # A part never tracked in this video stays NaN here and contributes zeros at the end.
        xy = cleaned.xy  # (T, P, 2)
        centre = xy[:, centre_idx, :].mean(axis=1)  # (T, 2)
        axis = xy[:, front_idx, :] - xy[:, back_idx, :]
        length = np.hypot(axis[:, 0], axis[:, 1])
        body = float(np.median(length))
        if not np.isfinite(body) or body <= 0:
            raise DataError(
                f"{pose.path}: median distance between heading parts '{self.heading[0]}' and "
                f"'{self.heading[1]}' is {body:.3g} px; set pose.heading in dataset.yaml to two parts "
                "that are apart (back, front)"
            )
        unit = _unit_heading(axis, length, body)  # (T, 2)
        return _Track(xy, centre, xy[:, front_idx, :], unit, np.arctan2(unit[:, 1], unit[:, 0]), length, body)

    def _posture(self, pose: Pose, track: _Track) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Positions in the heading frame (T, 2P), pairwise distances (T, P(P-1)/2), segment angles (T, 2S)."""
        xy, unit, body = track.xy, track.unit, track.body
        n_frames, n_parts = xy.shape[:2]
        rel = (xy - track.centre[:, None, :]) / body
        forward = rel[..., 0] * unit[:, None, 0] + rel[..., 1] * unit[:, None, 1]
        lateral = unit[:, None, 0] * rel[..., 1] - unit[:, None, 1] * rel[..., 0]
        positions = np.stack([forward, lateral], axis=2).reshape(n_frames, 2 * n_parts)

        i, j = np.triu_indices(n_parts, k=1)
        diff = xy[:, i, :] - xy[:, j, :]
        distances = np.hypot(diff[..., 0], diff[..., 1]) / body

        index = {name: k for k, name in enumerate(pose.bodyparts)}
        angles = []
        for back, front in _segments(pose.bodyparts, self.heading):
            seg = xy[:, [index[n] for n in front], :].mean(axis=1) - xy[:, [index[n] for n in back], :].mean(axis=1)
            seg_len = np.hypot(seg[:, 0], seg[:, 1])
            with np.errstate(invalid="ignore", divide="ignore"):
                cos = (seg[:, 0] * unit[:, 0] + seg[:, 1] * unit[:, 1]) / seg_len
                sin = (unit[:, 0] * seg[:, 1] - unit[:, 1] * seg[:, 0]) / seg_len
            # A zero-length segment has no direction: (0, 0) rather than an arbitrary angle.
            degenerate = ~(seg_len > 1e-9 * body)
            cos[degenerate] = 0.0
            sin[degenerate] = 0.0
            angles.append(np.stack([sin, cos], axis=1))
        return positions, distances, np.concatenate(angles, axis=1) if angles else np.zeros((n_frames, 0))


@dataclass(frozen=True, eq=False)
class _Track:
    xy: np.ndarray  # (T, P, 2) cleaned pixels
    centre: np.ndarray  # (T, 2)
    front: np.ndarray  # (T, 2) the heading's front part
    unit: np.ndarray  # (T, 2) unit heading
    angle: np.ndarray  # (T,) heading angle, rad
    length: np.ndarray  # (T,) back-to-front distance, px
    body: float  # median back-to-front distance, px


def _turning(angle: np.ndarray, fps: float) -> np.ndarray:
    """Heading angular velocity, rad/s (wrapped per frame; the first frame takes the forward difference)."""
    turn = np.zeros(len(angle))
    if len(angle) > 1:
        turn[1:] = _wrap(np.diff(angle))
        turn[0] = turn[1]
    return turn * fps


def _finish(blocks: list[np.ndarray]) -> np.ndarray:
    """Join feature blocks; NaN (a never-tracked part) -> 0, everything clipped to +-CLIP, float32."""
    features = np.concatenate(blocks, axis=1)
    features = np.nan_to_num(features, nan=0.0, posinf=CLIP, neginf=-CLIP)
    return np.clip(features, -CLIP, CLIP).astype(np.float32)


@BACKBONES.register("pose_v1")
class PoseFeaturesV1(_PoseBackboneBase):
    """One-frame pose features (v1, see the module docstring), kept for comparison with `pose`."""

    version = V1_VERSION

    def output_dim_for(self, bodyparts: tuple[str, ...]) -> int:
        """4P + P(P-1)/2 + 2 + 2S features for P body parts and S usable segments."""
        p = len(bodyparts)
        return 4 * p + p * (p - 1) // 2 + 2 + 2 * len(_segments(bodyparts, self.heading))

    def embed_pose(self, pose: Pose, fps: float, geometry: VideoGeometry | None = None) -> np.ndarray:
        """(n_frames, output_dim_for(pose.bodyparts)) float32, finite, deterministic; no geometry used."""
        track = self._track(pose, fps)
        positions, distances, angles = self._posture(pose, track)
        step = backward_step(track.xy)  # (T, P, 2) pixels per frame
        part_speed = np.hypot(step[..., 0], step[..., 1]) * fps / track.body
        centre_step = backward_step(track.centre)
        centre_speed = np.hypot(centre_step[:, 0], centre_step[:, 1]) * fps / track.body
        return _finish([positions, distances, part_speed, centre_speed[:, None],
                        _turning(track.angle, fps)[:, None], angles, np.nan_to_num(pose.likelihood, nan=0.0)])


@BACKBONES.register("pose")
class PoseFeatures(_PoseBackboneBase):
    """Pose features v2: posture, movement over several time scales, place in the arena.

    Per frame, in this order (P body parts, S segments, W windows; see `groups`):
    posture (2P positions + P(P-1)/2 distances + 2S segment angles), motion signals (speed,
    acceleration, immobility of each part and of the centre, turning and elongation: 3(P+1) + 2),
    their window statistics (mean, std, min, max over each window: 4W x that), displacement (the
    net speed of each part and of the centre over each window: W(P+1)), arena (4 when the arena is
    known or estimated, else 0), and each part's likelihood (P).
    """

    version = V2_VERSION

    def __init__(
        self,
        centre: Sequence[str] = ("midbody",),
        heading: Sequence[str] = ("tailbase", "snout"),
        min_likelihood: float = 0.6,
        weights: str | None = "none",
        windows: Sequence[float] = DEFAULT_WINDOWS,
        causal: bool = False,
        arena: str = "auto",
    ) -> None:
        super().__init__(centre, heading, min_likelihood, weights)
        self.motion = MotionSettings(tuple(windows), causal)
        if arena not in ARENA_MODES:
            raise ConfigError(f"pose arena is {arena!r}; use one of {', '.join(ARENA_MODES)}")
        self.arena = arena

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **self.motion.describe(), "arena": self.arena}

    def groups(self, bodyparts: tuple[str, ...]) -> dict[str, int]:
        """Feature group -> number of columns, in column order."""
        p = len(bodyparts)
        n_signals = 3 * (p + 1) + 2  # speed, acceleration, immobility per part and centre; turning; elongation
        return {
            "posture": 2 * p + p * (p - 1) // 2 + 2 * len(_segments(bodyparts, self.heading)),
            "motion": n_signals,
            "multiscale": n_signals * len(STATS) * len(self.motion.windows),
            "displacement": (p + 1) * len(self.motion.windows),
            "arena": 0 if self.arena == "none" else 4,
            "likelihood": p,
        }

    def output_dim_for(self, bodyparts: tuple[str, ...]) -> int:
        return sum(self.groups(bodyparts).values())

    def embed_pose(self, pose: Pose, fps: float, geometry: VideoGeometry | None = None) -> np.ndarray:
        """(n_frames, output_dim_for(pose.bodyparts)) float32, finite, deterministic.

        `geometry` (from the manifest) gives px_per_cm, which puts speeds in cm/s, and the arena's
        walls; without walls the arena is estimated from where the centre goes over the video.
        """
        geometry = geometry or VideoGeometry()
        track = self._track(pose, fps)
        positions, distances, angles = self._posture(pose, track)
        scale = 1.0 / geometry.px_per_cm if geometry.px_per_cm else 1.0 / track.body
        tracks = np.concatenate([track.xy, track.centre[:, None, :]], axis=1)  # parts, then the centre
        # A part never tracked stays NaN: its signals are 0 (after _finish), never spread by the windows.
        signals = np.nan_to_num(speed_signals(tracks, fps, scale, track.body, self.motion.causal), nan=0.0)
        turning = np.log1p(np.abs(_turning(track.angle, fps)))[:, None]
        elongation = (track.length / track.body)[:, None]  # shortens when the mouse rears or hunches
        signals = np.concatenate([signals, turning, elongation], axis=1)
        blocks = [positions, distances, angles, signals, window_stats(signals, fps, self.motion),
                  displacement_signals(tracks, fps, scale, self.motion)]  # NaN of a never-tracked part: 0 in _finish
        if self.arena != "none":
            arena = Arena(*geometry.arena) if geometry.arena else Arena.from_track(track.centre)
            blocks.append(arena_features(track.centre, track.front, arena, track.body))
        blocks.append(np.nan_to_num(pose.likelihood, nan=0.0))
        return _finish(blocks)


def _unit_heading(axis: np.ndarray, length: np.ndarray, body: float) -> np.ndarray:
    """Unit heading vectors; frames where back and front coincide reuse the last defined heading."""
    valid = length > 1e-6 * body
    idx = np.where(valid, np.arange(len(length)), -1)
    idx = np.maximum.accumulate(idx)
    first = int(np.argmax(valid))  # the median length is > 0, so some frame is valid
    idx[idx < 0] = first
    return axis[idx] / length[idx, None]


def _wrap(angle: np.ndarray) -> np.ndarray:
    return (angle + np.pi) % (2 * np.pi) - np.pi
