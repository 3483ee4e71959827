"""Movement over time, shared by the `pose` and `track` backbones.

Behaviours such as freezing, grooming or rearing are defined by how an animal moves over a
fraction of a second to a few seconds, not by one frame: one-frame speeds at 30-50 fps are mostly
tracking jitter. This module turns tracks into per-frame motion signals (speed, acceleration,
immobility) and summarises any signal over several windows given in seconds (mean, std, min,
max), so that each frame's features describe its neighbourhood in time.

Pure numpy/scipy: no weights, deterministic, linear in the number of frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import maximum_filter1d, minimum_filter1d, uniform_filter1d

from ...core.errors import ConfigError

DEFAULT_WINDOWS = (0.2, 0.5, 1.0, 2.0)  # seconds: sub-second twitches up to a freezing bout's onset
STATS = ("mean", "std", "min", "max")
ARENA_MODES = ("auto", "none")  # auto: the manifest's arena, else estimated from the track
# Immobility: moving less than this many body lengths per second, measured between the mean
# positions of the two halves of IMMOBILE_SPAN seconds around a frame, so that tracking jitter
# (a pixel or so per frame) averages out. About 1 cm/s for a 10 cm mouse, the order of the speed
# thresholds freezing scorers use.
IMMOBILE_BODY_LENGTHS_PER_S = 0.1
IMMOBILE_SPAN = 0.5  # seconds


@dataclass(frozen=True)
class MotionSettings:
    """How tracks become motion features; part of each motion backbone's cache key."""

    windows: tuple[float, ...] = DEFAULT_WINDOWS
    causal: bool = False  # True: a window ends at its frame (real-time use); False: centred on it

    def __post_init__(self) -> None:
        try:
            windows = tuple(float(w) for w in self.windows)
        except (TypeError, ValueError):
            raise ConfigError(f"motion windows are {self.windows!r}; give a list of seconds, e.g. [0.2, 0.5, 1, 2]") from None
        if not windows or not all(np.isfinite(w) and w > 0 for w in windows):
            raise ConfigError(f"motion windows are {list(self.windows)}; give positive seconds, e.g. [0.2, 0.5, 1, 2]")
        object.__setattr__(self, "windows", windows)
        object.__setattr__(self, "causal", bool(self.causal))

    def describe(self) -> dict[str, object]:
        return {"windows": list(self.windows), "causal": self.causal}


def window_frames(seconds: float, fps: float) -> int:
    """A window of `seconds` at `fps`, in frames (at least 1)."""
    return max(1, int(round(seconds * fps)))


def window_stats(signals: np.ndarray, fps: float, settings: MotionSettings) -> np.ndarray:
    """(T, K) signals -> (T, K * len(windows) * 4): mean, std, min, max of each signal per window.

    Columns are ordered window-major, then statistic, then signal. Windows are centred on their
    frame (or end at it when causal); at a video's edges the first and last values are repeated,
    so every frame sees a full window and no frame looks past the video.
    """
    x = np.asarray(signals, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"signals must be (frames, k), got shape {x.shape}")
    blocks = []
    for seconds in settings.windows:
        size = window_frames(seconds, fps)
        # scipy's origin shifts a window to the left (into the past): (size-1)//2 makes it end at the frame.
        origin = (size - 1) // 2 if settings.causal else 0
        kw = {"size": size, "axis": 0, "mode": "nearest", "origin": origin}
        mean = uniform_filter1d(x, **kw)
        var = uniform_filter1d(x * x, **kw) - mean * mean
        blocks += [mean, np.sqrt(np.clip(var, 0.0, None)), minimum_filter1d(x, **kw), maximum_filter1d(x, **kw)]
    return np.concatenate(blocks, axis=1) if blocks else np.zeros((len(x), 0))


def backward_step(track: np.ndarray) -> np.ndarray:
    """Backward difference along time (first axis); the first frame takes the forward difference."""
    step = np.zeros_like(track)
    if len(track) > 1:
        step[1:] = np.diff(track, axis=0)
        step[0] = step[1]
    return step


def _half_means(tracks: np.ndarray, half: int, causal: bool) -> tuple[np.ndarray, np.ndarray]:
    """Mean positions of two consecutive spans of `half` frames: (earlier, later) per frame.

    Centred, the earlier span ends at the frame and the later one follows it; causal, the later span
    ends at the frame. Near a video's end (centred) the last full measure is repeated, and near its
    start (causal) the earlier span is the first frame's, so no frame looks past the video or,
    causal, past itself.
    """
    ending = uniform_filter1d(tracks, size=half, axis=0, mode="nearest", origin=(half - 1) // 2)  # t-half+1..t
    n = len(ending)
    if n <= half:  # too short for two spans: no measurable movement
        return ending, ending
    frames = np.arange(n)
    if causal:
        earlier = np.maximum(frames - half, 0)
        later = frames
    else:
        earlier = np.minimum(frames, n - 1 - half)
        later = earlier + half
    return ending[earlier], ending[later]


def span_speed(tracks: np.ndarray, fps: float, seconds: float, causal: bool = False) -> np.ndarray:
    """(T, K, 2) positions -> (T, K) net speed over `seconds`, in pixels per second.

    The distance between the mean positions of the window's two halves, over the time between
    them. Tracking jitter (a pixel or so per frame, independent between frames) averages out in
    the means, so a still animal measures near 0 at any frame rate, unlike its one-frame speed.
    """
    half = max(1, window_frames(seconds, fps) // 2)
    earlier, later = _half_means(tracks, half, causal)
    step = later - earlier
    return np.hypot(step[..., 0], step[..., 1]) * fps / half


def displacement_signals(tracks: np.ndarray, fps: float, scale: float, settings: MotionSettings) -> np.ndarray:
    """(T, K, 2) positions in pixels -> (T, K * len(windows)): log1p of the net speed over each window.

    Window-major, then track. `scale` turns pixels into the speed unit, as in `speed_signals`.
    Where the window statistics of one-frame speeds still count jitter, this says how far the
    animal actually went: what separates a freeze or a groom from a slow walk.
    """
    columns = [np.log1p(span_speed(tracks, fps, seconds, settings.causal) * scale) for seconds in settings.windows]
    return np.concatenate(columns, axis=1) if columns else np.zeros((len(tracks), 0))


def speed_signals(tracks: np.ndarray, fps: float, scale: float, body: float, causal: bool = False) -> np.ndarray:
    """(T, K, 2) positions in pixels -> (T, 3K): log speed, signed log acceleration, immobility.

    `scale` turns pixels into the speed unit (1 / body length in pixels, or 1 / px_per_cm);
    `body` is the body length in pixels, which immobility is measured in whatever the unit.
    * speed: log1p(|step| * fps * scale), one-frame;
    * acceleration: sign * log1p(|d speed / dt|), from the one-frame speeds;
    * immobility: 1 where the mean positions of the IMMOBILE_SPAN seconds before and after the
      frame are less than IMMOBILE_BODY_LENGTHS_PER_S body lengths per second apart (0 elsewhere).
    """
    step = backward_step(tracks)
    speed = np.hypot(step[..., 0], step[..., 1]) * fps * scale  # (T, K)
    accel = backward_step(speed) * fps
    immobile = (span_speed(tracks, fps, IMMOBILE_SPAN, causal) / body < IMMOBILE_BODY_LENGTHS_PER_S).astype(np.float64)
    return np.concatenate([np.log1p(speed), np.sign(accel) * np.log1p(np.abs(accel)), immobile], axis=1)


@dataclass(frozen=True)
class Arena:
    """An axis-aligned rectangular arena in pixels: where the walls are."""

    x0: float
    y0: float
    x1: float
    y1: float

    @classmethod
    def from_track(cls, centre: np.ndarray, quantile: float = 0.005) -> Arena:
        """The box the animal's centre covers over a whole video (extreme 0.5% ignored as tracking errors).

        The centre never touches a wall (half a body width stays between), so distances to this box
        are a little smaller than to the real walls, the same for every video.
        """
        finite = centre[np.isfinite(centre).all(axis=1)]
        lo = np.quantile(finite, quantile, axis=0)
        hi = np.quantile(finite, 1 - quantile, axis=0)
        return cls(float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))

    def describe(self) -> list[float]:
        return [self.x0, self.y0, self.x1, self.y1]


def arena_features(centre: np.ndarray, front: np.ndarray | None, arena: Arena, body: float) -> np.ndarray:
    """Per frame, in body lengths: centre's distance to the nearest wall, to being in a corner
    (the larger of its distances to the two nearest walls), and when a front part is known, the
    front part's wall distance and how much the body points at the nearest wall (-1 away .. 1 at)."""
    def walls(p: np.ndarray) -> np.ndarray:  # (T, 4): distances to left, top, right, bottom walls
        return np.stack([p[:, 0] - arena.x0, p[:, 1] - arena.y0, arena.x1 - p[:, 0], arena.y1 - p[:, 1]], axis=1)

    d = walls(centre) / body
    nearest_x, nearest_y = np.minimum(d[:, 0], d[:, 2]), np.minimum(d[:, 1], d[:, 3])
    columns = [d.min(axis=1), np.maximum(nearest_x, nearest_y)]
    if front is not None:
        columns.append(walls(front).min(axis=1) / body)
        # Outward normal of the nearest wall, against the heading's unit vector.
        normals = np.array([[-1.0, 0.0], [0.0, -1.0], [1.0, 0.0], [0.0, 1.0]])
        heading = front - centre
        norm = np.hypot(heading[:, 0], heading[:, 1])
        with np.errstate(invalid="ignore", divide="ignore"):
            unit = heading / norm[:, None]
        facing = np.einsum("tk,tk->t", unit, normals[d.argmin(axis=1)])
        columns.append(np.where(norm > 0, facing, 0.0))
    return np.stack(columns, axis=1)


def feature_names(signal_names: Sequence[str], settings: MotionSettings) -> list[str]:
    """Column names of `window_stats` for these signals, e.g. 'speed:snout:mean@0.5s'."""
    return [f"{s}:{stat}@{w:g}s" for w in settings.windows for stat in STATS for s in signal_names]
