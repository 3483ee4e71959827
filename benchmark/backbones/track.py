"""The `track` backbone: motion features from the built-in tracker's path, for videos without pose.

The tracker that places crops (crop.mode tracker) finds the mouse as the largest blob that differs
from the background; its path says how the animal moves, which appearance embeddings of single
frames cannot see. Per frame, from the blob (see `data.crops.BLOB_COLUMNS`):

* motion signals: centre speed (log1p, body lengths/s or cm/s with px_per_cm), signed log
  acceleration, immobility, axis turning (log1p rad/s), area and length relative to the video's
  median (the blob shrinks and shortens when the mouse rears or hunches), elongation
  (log major/minor);
* their statistics over several windows (mean, std, min, max; `motion.py`);
* displacement: the centre's net speed over each window, which tracking jitter does not inflate;
* place in the arena: distance to the nearest wall and to being in a corner, in body lengths
  (arena from the manifest, else estimated from the path).

The body length is the median of the blob's major axis. Frames where the tracker lost the mouse
are interpolated. No weights, no TensorFlow.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ...core.errors import ConfigError, DataError
from ..data.crops import BLOB_COLUMNS
from ..data.manifest import VideoGeometry
from .base import BACKBONES, TrackBackbone
from .motion import ARENA_MODES, DEFAULT_WINDOWS, STATS, Arena, MotionSettings, arena_features, displacement_signals, speed_signals, window_stats

TRACK_VERSION = "track-features-v1.1"  # v1.1: net displacement over each window
CLIP = 10.0
N_SIGNALS = 7  # speed, acceleration, immobility, turning, area, length, elongation
_COL = {name: k for k, name in enumerate(BLOB_COLUMNS)}


@BACKBONES.register("track")
class TrackFeatures(TrackBackbone):
    """Multi-scale motion of the tracker's blob (see the module docstring)."""

    def __init__(self, windows: Sequence[float] = DEFAULT_WINDOWS, causal: bool = False, arena: str = "auto",
                 weights: str | None = "none") -> None:
        if weights is not None and str(weights).lower() != "none":
            raise ConfigError(f"backbone 'track' got weights={weights!r}; track features have no weights, "
                              "leave weights unset or 'none'")
        if arena not in ARENA_MODES:
            raise ConfigError(f"track arena is {arena!r}; use one of {', '.join(ARENA_MODES)}")
        self.motion = MotionSettings(tuple(windows), causal)
        self.arena = arena
        self.output_dim = sum(self.groups().values())

    @property
    def weights_id(self) -> str:
        return TRACK_VERSION

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **self.motion.describe(), "arena": self.arena}

    def groups(self) -> dict[str, int]:
        """Feature group -> number of columns, in column order."""
        return {"motion": N_SIGNALS, "multiscale": N_SIGNALS * len(STATS) * len(self.motion.windows),
                "displacement": len(self.motion.windows), "arena": 0 if self.arena == "none" else 2}

    def embed_track(self, blobs: np.ndarray, fps: float, geometry: VideoGeometry | None = None) -> np.ndarray:
        geometry = geometry or VideoGeometry()
        blobs = np.asarray(blobs, dtype=np.float64)
        if blobs.ndim != 2 or blobs.shape[1] != len(BLOB_COLUMNS) or not np.isfinite(blobs[:, 0]).any():
            raise DataError(f"tracker path of shape {blobs.shape} has no found frame; use crop mode full or a pose file")
        blobs = _fill_gaps(blobs)
        centre = blobs[:, [_COL["x"], _COL["y"]]]
        body = float(np.median(blobs[:, _COL["major"]]))
        if not body > 0:
            raise DataError("the tracker's blob has no length (median major axis 0); check the video's contrast")
        scale = 1.0 / geometry.px_per_cm if geometry.px_per_cm else 1.0 / body
        motion = speed_signals(centre[:, None, :], fps, scale, body, self.motion.causal)  # (T, 3)
        turn = np.zeros(len(blobs))
        if len(blobs) > 1:  # the axis has no front: angles are modulo pi
            turn[1:] = (np.diff(blobs[:, _COL["angle"]]) + np.pi / 2) % np.pi - np.pi / 2
            turn[0] = turn[1]
        area = blobs[:, _COL["area"]] / np.median(blobs[:, _COL["area"]])
        length = blobs[:, _COL["major"]] / body
        with np.errstate(divide="ignore", invalid="ignore"):
            elongation = np.log(blobs[:, _COL["major"]] / blobs[:, _COL["minor"]])
        signals = np.column_stack([motion, np.log1p(np.abs(turn) * fps), area, length, elongation])
        signals = np.nan_to_num(signals, nan=0.0, posinf=CLIP, neginf=-CLIP)
        blocks = [signals, window_stats(signals, fps, self.motion),
                  displacement_signals(centre[:, None, :], fps, scale, self.motion)]
        if self.arena != "none":
            arena = Arena(*geometry.arena) if geometry.arena else Arena.from_track(centre)
            blocks.append(arena_features(centre, None, arena, body))
        features = np.nan_to_num(np.concatenate(blocks, axis=1), nan=0.0, posinf=CLIP, neginf=-CLIP)
        return np.clip(features, -CLIP, CLIP).astype(np.float32)


def _fill_gaps(blobs: np.ndarray) -> np.ndarray:
    """Frames where the tracker found nothing: interpolated between the frames around them (the
    nearest found value at the ends), as pose points below the likelihood threshold are, so that a
    lost moment reads as steady movement, not as a stop and a jump."""
    found = np.isfinite(blobs).all(axis=1)
    if found.all():
        return blobs
    t = np.arange(len(blobs), dtype=np.float64)
    return np.column_stack([np.interp(t, t[found], blobs[found, c]) for c in range(blobs.shape[1])])
