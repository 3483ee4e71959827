"""The `pose` backbone: engineered per-frame features from a DeepLabCut pose file.

It lets a lab that has only DeepLabCut output (no GPU, no video backbone) run the benchmark.
All features are invariant to where the mouse is, which way the arena is rotated and the video's
resolution: positions are taken relative to a centre point, rotated into the mouse's heading
frame and measured in body lengths (the video's median back-to-front distance).

Per frame, for P body parts and S segments (see `SEGMENTS`), in this order:

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
from typing import Any

import numpy as np

from .base import BACKBONES, PoseBackbone
from ..data.pose import Pose, clean_pose, require_parts, require_tracked
from ...core.errors import ConfigError, DataError

FEATURES_VERSION = "pose-features-v1"  # bump whenever a feature's definition changes
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


@BACKBONES.register("pose")
class PoseFeatures(PoseBackbone):
    """Engineered pose features (see the module docstring); no weights, no TensorFlow."""

    def __init__(
        self,
        centre: Sequence[str] = ("midbody",),
        heading: Sequence[str] = ("tailbase", "snout"),
        min_likelihood: float = 0.6,
        weights: str | None = "none",
    ) -> None:
        if weights is not None and str(weights).lower() != "none":
            raise ConfigError(
                f"backbone 'pose' got weights={weights!r}; pose features have no weights, "
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
        return FEATURES_VERSION

    def describe(self) -> dict[str, Any]:
        """Backbone name, feature version and every setting that changes the features."""
        return {
            **super().describe(),
            "centre": list(self.centre),
            "heading": list(self.heading),
            "min_likelihood": self.min_likelihood,
        }

    def output_dim_for(self, bodyparts: tuple[str, ...]) -> int:
        """4P + P(P-1)/2 + 2 + 2S features for P body parts and S usable segments."""
        p = len(bodyparts)
        return 4 * p + p * (p - 1) // 2 + 2 + 2 * len(_segments(bodyparts, self.heading))

    def embed_pose(self, pose: Pose, fps: float) -> np.ndarray:
        """(n_frames, output_dim_for(pose.bodyparts)) float32, finite, deterministic."""
        if not (isinstance(fps, (int, float, np.number)) and np.isfinite(fps) and fps > 0):
            raise ConfigError(f"{pose.path}: fps is {fps!r}; set a positive fps for this video in dataset.yaml")
        centre_idx = require_parts(pose, self.centre, "crop.centre")
        back_idx, front_idx = require_parts(pose, self.heading, "pose.heading (back part, front part)")
        cleaned = clean_pose(pose, self.min_likelihood)
        require_tracked(pose, cleaned, centre_idx, "crop.centre", self.min_likelihood)
        require_tracked(pose, cleaned, (back_idx, front_idx), "pose.heading", self.min_likelihood)

        # A part never tracked in this video stays NaN here and contributes zeros at the end.
        xy = cleaned.xy  # (T, P, 2)
        n_frames, n_parts = xy.shape[:2]
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
        angle = np.arctan2(unit[:, 1], unit[:, 0])

        blocks: list[np.ndarray] = []
        rel = (xy - centre[:, None, :]) / body
        forward = rel[..., 0] * unit[:, None, 0] + rel[..., 1] * unit[:, None, 1]
        lateral = unit[:, None, 0] * rel[..., 1] - unit[:, None, 1] * rel[..., 0]
        blocks.append(np.stack([forward, lateral], axis=2).reshape(n_frames, 2 * n_parts))

        i, j = np.triu_indices(n_parts, k=1)
        diff = xy[:, i, :] - xy[:, j, :]
        blocks.append(np.hypot(diff[..., 0], diff[..., 1]) / body)

        step = _step(xy)  # (T, P, 2) pixels per frame
        blocks.append(np.hypot(step[..., 0], step[..., 1]) * fps / body)
        centre_step = _step(centre[:, None, :])[:, 0, :]
        blocks.append((np.hypot(centre_step[:, 0], centre_step[:, 1]) * fps / body)[:, None])

        turn = np.zeros(n_frames)
        if n_frames > 1:
            turn[1:] = _wrap(np.diff(angle))
            turn[0] = turn[1]  # first frame: forward difference
        blocks.append((turn * fps)[:, None])

        index = {name: k for k, name in enumerate(pose.bodyparts)}
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
            blocks.append(np.stack([sin, cos], axis=1))

        blocks.append(np.nan_to_num(pose.likelihood, nan=0.0))

        features = np.concatenate(blocks, axis=1)
        features = np.nan_to_num(features, nan=0.0, posinf=CLIP, neginf=-CLIP)
        return np.clip(features, -CLIP, CLIP).astype(np.float32)


def _unit_heading(axis: np.ndarray, length: np.ndarray, body: float) -> np.ndarray:
    """Unit heading vectors; frames where back and front coincide reuse the last defined heading."""
    valid = length > 1e-6 * body
    idx = np.where(valid, np.arange(len(length)), -1)
    idx = np.maximum.accumulate(idx)
    first = int(np.argmax(valid))  # the median length is > 0, so some frame is valid
    idx[idx < 0] = first
    return axis[idx] / length[idx, None]


def _step(track: np.ndarray) -> np.ndarray:
    """Backward difference along time; the first frame takes the forward difference."""
    step = np.zeros_like(track)
    if len(track) > 1:
        step[1:] = np.diff(track, axis=0)
        step[0] = step[1]
    return step


def _wrap(angle: np.ndarray) -> np.ndarray:
    return (angle + np.pi) % (2 * np.pi) - np.pi
