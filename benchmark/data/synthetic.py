"""Synthetic open field: rendered top-view mp4 videos, DeepLabCut-style pose and per-frame labels.

A simulated mouse walks in a square white arena and now and then grooms, rears in the open middle
or rears against a wall. The bouts are planned first, so that every video holds every behaviour,
and the walks between them are then laid out to bring the mouse where the next bout needs it (the
open middle, or a wall it faces). Behaviours differ in posture, paw placement and motion, both in
the pixels and in the pose, never in a colour code: a model has to learn them.

Unlabelled distractors are planned among the bouts, so that no single-frame cue gives a behaviour
away: stretches (the mouse stops, shortens, lifts its head forward-up and draws its forepaws in
under the chest, like the onset of a rear, but comes down again with the forepaws on the floor;
in the open middle and facing walls), still pauses of 1-4 s (no paw or head strokes, sometimes
crouched, sometimes at a wall) and stops at a wall without rearing. All labels are 0 during them;
what tells them from the behaviours is how the posture goes on over time.

Everything is drawn from `np.random.default_rng([seed, video_index])`, so one seed always gives
the same files.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from operator import attrgetter
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import yaml

from ...core.errors import ConfigError, DataError
from ...core.files import atomic_output

__all__ = [
    "BEHAVIOURS",
    "BODY_PARTS",
    "BOUT_BEHAVIOURS",
    "REFERENCE_MEAN_BOUT_FRAMES",
    "SCORER",
    "ArenaGeometry",
    "MouseState",
    "arena_geometry",
    "default_crop_size",
    "generate",
]

# Bouts planned into the schedule, each with its own posture and movement.
BOUT_BEHAVIOURS = ("grooming", "mid_rearing", "wall_rearing")
# Locomotion is labelled wherever the mouse walks (not planned: walks lead from bout to bout). It
# is defined by movement only: pauses stop mid-stride, so one frame of a walk looks like a pause.
BEHAVIOURS = (*BOUT_BEHAVIOURS, "locomotion")
LOCOMOTION_SPEED = 0.5  # body lengths per second of the centre, mean over LOCOMOTION_WINDOW: walking
LOCOMOTION_WINDOW = 0.5  # seconds
BODY_PARTS = (
    "snout",
    "leftear",
    "rightear",
    "midbody",
    "tailbase",
    "leftforepaw",
    "rightforepaw",
    "lefthindpaw",
    "righthindpaw",
)
SCORER = "DLC_synthetic"
DATASET_NAME = "synthetic_open_field"

# Mean bout lengths of the reference open-field dataset (frames at 10 fps).
REFERENCE_MEAN_BOUT_FRAMES = {"grooming": 107, "mid_rearing": 24, "wall_rearing": 21}
_REFERENCE_FPS = 10
_MIN_BOUT_SECONDS = {"grooming": 3.0, "mid_rearing": 0.8, "wall_rearing": 0.8}
_BOUT_GAMMA_SHAPE = 5.0  # coefficient of variation ~0.45: bouts vary, but not wildly
_RATE_RANGE = (0.09, 0.14)  # share of a video's frames given to each behaviour
_MIN_WALK_SECONDS = 3.0  # long enough to cross half the arena and turn
_MAX_TURN = 3.5  # rad/s: how fast the walking body can swing round
_MAX_SPEED = 3.0  # body lengths/s: a brisk run
_WAYPOINT_MARGIN = 0.65  # body lengths between the walls and the points a walk heads for
_PATH_MARGIN = 0.52  # body lengths between the walls and the walking path (half a body + a bit)
_WALL_VISIT_CHANCE = 0.35  # long walks that stop at a wall on the way, without rearing

# Unlabelled distractors. Without them every stop would be a behaviour and every short body a rear,
# so one frame's posture and speed would all but decide the labels; with them it takes the time
# course (does the body go on rising? do the paws stroke?). Shares are of a video's frames, about
# a third to a half of one behaviour's (_RATE_RANGE), so the labelled rates stay as they were.
_STRETCH_SHARE = (0.03, 0.05)  # stretches: a rear's onset that goes no further
_STRETCH_SECONDS = (0.7, 2.0)  # about as long as the shorter rears, so length alone does not tell
_STRETCH_DEPTH = (0.35, 0.7)  # share of a rear's posture change reached: its onset, never the rear
_STRETCH_AT_WALL_CHANCE = 0.5  # half of them face a wall, like the onset of a wall rear
_PAUSE_SHARE = (0.04, 0.07)  # still pauses: a still (even crouched) mouse is not a grooming one
_PAUSE_SECONDS = (1.0, 4.0)
_PAUSE_AT_WALL_CHANCE = 0.35  # the rest pause anywhere, near walls included
_MIN_STEP_SECONDS = 1.5  # the walk before a distractor: a few steps on, no crossing needed
_DISTRACTORS = ("stretch", "pause")  # segment kinds that are never labelled

_BODY_FRACTION = 0.16  # walking snout-tailbase length as a share of the frame side
_CROP_BODY_LENGTHS = 2.2

_PART = {name: i for i, name in enumerate(BODY_PARTS)}
_FOREPAWS = [_PART["leftforepaw"], _PART["rightforepaw"]]
_HINDPAWS = [_PART["lefthindpaw"], _PART["righthindpaw"]]


# --------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArenaGeometry:
    """Where the arena floor lies in a `size` x `size` frame, and how long the mouse is (px)."""

    size: int
    outer: int  # first pixel of the wall band
    wall_width: int
    body_length: float  # snout to tailbase of a walking mouse

    @property
    def floor_lo(self) -> float:
        """Coordinate (x and y) of the floor's top/left edge."""
        return self.outer + self.wall_width - 0.5

    @property
    def floor_hi(self) -> float:
        """Coordinate (x and y) of the floor's bottom/right edge."""
        return self.size - self.outer - self.wall_width - 0.5

    def inset(self, margin: float) -> tuple[float, float]:
        """Bounds (same for x and y) of the floor shrunk by `margin` px on every side."""
        return self.floor_lo + margin, self.floor_hi - margin

    def wall_distance(self, points: np.ndarray) -> np.ndarray:
        """Distance of (..., 2) points to the nearest floor edge; negative beyond the edge."""
        p = np.asarray(points, dtype=float)
        return np.minimum(p - self.floor_lo, self.floor_hi - p).min(axis=-1)


def arena_geometry(size: int = 256) -> ArenaGeometry:
    """The arena layout `generate` draws for frames of `size` px."""
    return ArenaGeometry(
        size=size,
        outer=round(0.035 * size),
        wall_width=max(3, round(size / 64)),
        body_length=_BODY_FRACTION * size,
    )


def default_crop_size(size: int = 256) -> int:
    """Crop side written to dataset.yaml: about 2.2 body lengths, enough for any heading plus context."""
    return int(round(_CROP_BODY_LENGTHS * arena_geometry(size).body_length))


# --------------------------------------------------------------------------------------------
# Mouse state and body points
# --------------------------------------------------------------------------------------------


@dataclass
class MouseState:
    """Posture of the simulated mouse in one frame. Lengths in px, angles in rad (image axes, y down)."""

    x: float  # spine centre: the midbody before the stride sway
    y: float
    heading: float  # direction tailbase -> snout
    front: float  # centre -> snout, projected: shrinks as the mouse rears
    back: float  # centre -> tailbase, projected
    width: float  # body half-width
    head_len: float  # neck -> snout, projected
    scale: float = 1.0  # > 1 while the body is raised towards the camera
    head_yaw: float = 0.0  # head angle relative to the body axis
    sway: float = 0.0  # lateral midbody offset: the body undulates with the stride
    stride: float = 0.0  # gait phase
    gait: float = 0.0  # fore/aft paw swing amplitude
    paw_raise: float = 0.0  # 0: forepaws on the floor beside the body, 1: held up at the head
    paw_back: float = 0.0  # raised forepaws: distance behind the snout
    paw_spread: float = 0.0  # raised forepaws: half distance between them
    paw_stroke: float = 0.0  # raised forepaws: fore/aft stroke, left paw + and right paw -
    paw_tuck: float = 0.0  # forepaws on the floor drawn in under the chest: 0 beside it, 1 near the midline
    paw_step: float = 0.0  # forepaws on the floor stepped forward from beside the shoulders (px)
    tail_bend: float = 0.0  # overall tail curvature


_STATE_FIELDS = tuple(f.name for f in fields(MouseState))


def _stack_states(states: list[MouseState]) -> dict[str, np.ndarray]:
    """Per-frame states -> one float array per field, so geometry is computed for all frames at once."""
    row = attrgetter(*_STATE_FIELDS)
    table = np.array([row(s) for s in states], dtype=float)
    return {name: table[:, i] for i, name in enumerate(_STATE_FIELDS)}


def _unit(angle: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Forward unit vector and the animal's left-hand normal (seen from above, image y down)."""
    forward = np.stack([np.cos(angle), np.sin(angle)], axis=-1)
    left = np.stack([np.sin(angle), -np.cos(angle)], axis=-1)
    return forward, left


def _skeleton(st: dict[str, np.ndarray], body_length: float) -> dict[str, np.ndarray]:
    """True positions (n, 2) of the body parts plus the neck, and the body/head axes."""
    L = body_length
    centre = np.stack([st["x"], st["y"]], axis=-1)
    u, n = _unit(st["heading"])
    uh, nh = _unit(st["heading"] + st["head_yaw"])
    col = lambda a: a[:, None]  # noqa: E731 - broadcast a per-frame scalar over x, y
    neck = centre + col(st["front"] - st["head_len"]) * u
    snout = neck + col(st["head_len"]) * uh
    ear_lat = col(0.09 * L * st["scale"])
    ear_fwd = col(0.25 * st["head_len"])
    half_width = col(st["width"] * st["scale"])
    swing = col(st["gait"] * np.sin(st["stride"]))

    # Forepaws: beside the shoulders while walking (drawn in under the chest or stepped forward
    # in a stretch or a crouch), held at the head while rearing or grooming.
    floor_fore = centre + col(0.55 * st["front"] + st["paw_step"]) * u
    floor_lat = (half_width + 0.01 * L) * (1.0 - 0.65 * col(np.clip(st["paw_tuck"], 0.0, 1.0)))
    raised = snout - col(st["paw_back"]) * uh
    raise_w = col(np.clip(st["paw_raise"], 0.0, 1.0))
    fore = []
    for sign in (1.0, -1.0):  # left, right
        walking = floor_fore + sign * floor_lat * n + sign * swing * u
        held = raised + sign * col(st["paw_spread"]) * nh + sign * col(st["paw_stroke"]) * uh
        fore.append((1 - raise_w) * walking + raise_w * held)
    floor_hind = centre - col(0.55 * st["back"]) * u
    hind = [floor_hind + sign * (half_width + 0.02 * L) * n - sign * swing * u for sign in (1.0, -1.0)]
    return {
        "snout": snout,
        "leftear": neck + ear_fwd * uh + ear_lat * nh,
        "rightear": neck + ear_fwd * uh - ear_lat * nh,
        "midbody": centre + col(st["sway"]) * n,
        "tailbase": centre - col(st["back"]) * u,
        "leftforepaw": fore[0],
        "rightforepaw": fore[1],
        "lefthindpaw": hind[0],
        "righthindpaw": hind[1],
        "neck": neck,
        "u": u,
        "uh": uh,
    }


def _keypoints(skeleton: dict[str, np.ndarray]) -> np.ndarray:
    """(n, len(BODY_PARTS), 2) array of true body-part positions."""
    return np.stack([skeleton[name] for name in BODY_PARTS], axis=1)


# --------------------------------------------------------------------------------------------
# Small numeric helpers
# --------------------------------------------------------------------------------------------


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _smooth_noise(rng: np.random.Generator, n: int, corr_frames: float) -> np.ndarray:
    """Zero-mean, unit-variance noise correlated over about `corr_frames` (Gaussian-filtered white)."""
    sigma = max(corr_frames, 0.5)
    half = int(3 * sigma) + 1
    kernel = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma) ** 2)
    white = rng.standard_normal(n + 2 * half)
    return np.convolve(white, kernel, mode="valid") / math.sqrt(float((kernel**2).sum()))


def _envelope(length: int, ramp: int) -> np.ndarray:
    """0..1 weight over a bout: rises over `ramp` frames, holds, falls over `ramp` frames.

    The first and last frames already carry a small weight, so a labelled bout starts moving at once.
    """
    t = np.arange(length)
    up = (t + 1) / (ramp + 1)
    down = (length - t) / (ramp + 1)
    return _smoothstep(np.minimum(up, down))


def _lerp(a: float, b: float | np.ndarray, w: np.ndarray) -> np.ndarray:
    return a + (b - a) * w


def _angle_diff(a: float, b: float) -> float:
    """Signed smallest rotation from angle b to angle a."""
    return (a - b + math.pi) % (2 * math.pi) - math.pi


# --------------------------------------------------------------------------------------------
# Bout schedule
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Segment:
    kind: str  # "walk", a behaviour (labelled) or a distractor (never labelled)
    length: int


def _bout_lengths(rng: np.random.Generator, behaviour: str, n_frames: int, fps: int) -> list[int]:
    """Bout lengths of one behaviour in one video, from a gamma around the reference mean."""
    mean = REFERENCE_MEAN_BOUT_FRAMES[behaviour] * fps / _REFERENCE_FPS
    count = max(1, round(rng.uniform(*_RATE_RANGE) * n_frames / mean))
    longest = min(3.0 * mean, 0.3 * n_frames)
    shortest = min(_MIN_BOUT_SECONDS[behaviour] * fps, longest)
    lengths = np.clip(rng.gamma(_BOUT_GAMMA_SHAPE, mean / _BOUT_GAMMA_SHAPE, count), shortest, longest)
    # A video holds only a few bouts of each kind; keep its mean within 20 % of the reference so
    # that short datasets still have reference-like statistics.
    lengths *= np.clip(lengths.mean(), 0.8 * mean, 1.2 * mean) / lengths.mean()
    return [int(v) for v in np.round(np.clip(lengths, shortest, longest))]


def _distractor_lengths(rng: np.random.Generator, kind: str, n_frames: int, fps: int) -> list[int]:
    """Lengths of one video's unlabelled distractors of one kind, filling about their share."""
    share, seconds = {
        "stretch": (_STRETCH_SHARE, _STRETCH_SECONDS),
        "pause": (_PAUSE_SHARE, _PAUSE_SECONDS),
    }[kind]
    count = round(rng.uniform(*share) * n_frames / (np.mean(seconds) * fps))
    return [int(round(rng.uniform(*seconds) * fps)) for _ in range(count)]


def _plan_schedule(rng: np.random.Generator, n_frames: int, fps: int) -> list[_Segment]:
    """Walks, bouts and distractors covering exactly n_frames; every behaviour gets at least one bout.

    A walk of at least `_MIN_WALK_SECONDS` leads to each bout (and ends the video); a shorter one
    of `_MIN_STEP_SECONDS` is enough before a distractor.
    """
    lengths = {b: _bout_lengths(rng, b, n_frames, fps) for b in BOUT_BEHAVIOURS}
    extras = {k: _distractor_lengths(rng, k, n_frames, fps) for k in _DISTRACTORS}
    min_walk = round(_MIN_WALK_SECONDS * fps)
    min_step = round(_MIN_STEP_SECONDS * fps)

    def room() -> int:
        n_bouts = sum(len(v) for v in lengths.values())
        n_extras = sum(len(v) for v in extras.values())
        used = sum(sum(v) for v in lengths.values()) + sum(sum(v) for v in extras.values())
        return n_frames - used - min_walk * (n_bouts + 1) - min_step * n_extras

    # Too full: drop distractors first (the most frequent kind), then bouts of the most frequent
    # behaviour, never its last one; then shorten.
    while room() < 0 and any(extras.values()):
        extras[max(_DISTRACTORS, key=lambda k: len(extras[k]))].pop()
    while room() < 0 and max(len(v) for v in lengths.values()) > 1:
        most = max(BOUT_BEHAVIOURS, key=lambda b: len(lengths[b]))
        lengths[most].pop()
    while room() < 0:
        longest = max(BOUT_BEHAVIOURS, key=lambda b: max(lengths[b]))
        cut = min(-room(), lengths[longest][0] - max(4, lengths[longest][0] // 2))
        if cut <= 0:
            raise ConfigError(f"n_frames={n_frames} is too short to hold one bout of every behaviour")
        lengths[longest][0] -= cut

    bouts = [(b, n) for b in BOUT_BEHAVIOURS for n in lengths[b]]
    bouts += [(k, n) for k in _DISTRACTORS for n in extras[k]]
    bouts = [bouts[i] for i in rng.permutation(len(bouts))]
    # walks[i] leads to bout i; the last one ends the video.
    shortest = np.array([min_walk if kind in BOUT_BEHAVIOURS else min_step for kind, _ in bouts] + [min_walk])
    share = rng.dirichlet(np.full(len(bouts) + 1, 1.5)) * room()
    walks = shortest + np.floor(share).astype(int)
    walks[-1] += n_frames - sum(n for _, n in bouts) - int(walks.sum())

    schedule = []
    for (kind, n), walk in zip(bouts, walks):
        schedule += [_Segment("walk", int(walk)), _Segment(kind, n)]
    return schedule + [_Segment("walk", int(walks[-1]))]


# --------------------------------------------------------------------------------------------
# Simulation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Goal:
    """Where (and, for a wall, facing which way) a walk must end."""

    point: np.ndarray
    heading: float | None = None


def _walking_state(
    x: float, y: float, heading: float, body_length: float, vigour: float = 1.0, **extra: float
) -> MouseState:
    """Walking posture; a mouse standing still (vigour 0) hunches a little shorter."""
    L = body_length
    hunch = 1.0 - vigour
    return MouseState(
        x, y, heading, front=(0.5 - 0.05 * hunch) * L, back=(0.5 - 0.04 * hunch) * L, width=0.2 * L,
        head_len=0.2 * L, **extra,
    )


def _choose_goal(
    rng: np.random.Generator,
    arena: ArenaGeometry,
    L: float,
    next_kind: str | None,
    position: np.ndarray,
    reach: float,
) -> _Goal:
    """The place the next bout (or a wall visit) needs: the open middle, a wall, or anywhere.

    Stretches go to the open middle or face a wall, as rears do; pauses happen anywhere, facing a
    wall now and then. Goals lie within `reach` px where the arena allows, so a short walk never
    turns into a sprint.
    """
    at_wall = {"stretch": _STRETCH_AT_WALL_CHANCE, "pause": _PAUSE_AT_WALL_CHANCE}.get(next_kind)
    if at_wall is not None and rng.random() < at_wall:
        next_kind = "wall_visit"
    if next_kind in ("wall_rearing", "wall_visit"):
        return _wall_goal(rng, arena, L, position, reach)
    # Mid rearing (and a stretch in the open) happens away from the walls: at least ~a body
    # length from every side.
    margin = 1.2 * L if next_kind in ("mid_rearing", "stretch") else _WAYPOINT_MARGIN * L
    lo, hi = arena.inset(margin)
    candidates = rng.uniform(lo, hi, (8, 2))
    near = candidates[np.linalg.norm(candidates - position, axis=1) <= reach]
    if len(near):
        return _Goal(near[0])
    return _Goal(np.clip(position, lo, hi))  # the closest point of the region


def _wall_goal(
    rng: np.random.Generator, arena: ArenaGeometry, L: float, position: np.ndarray, reach: float
) -> _Goal:
    """A stop in front of a (usually near) wall, facing it, snout just short of the edge."""
    lo, hi = arena.floor_lo, arena.floor_hi
    # (axis across the wall, wall coordinate, heading that faces it)
    walls = [(0, lo, math.pi), (0, hi, 0.0), (1, lo, -math.pi / 2), (1, hi, math.pi / 2)]
    distance = np.array([abs(position[axis] - coord) for axis, coord, _ in walls])
    weights = np.exp(-(distance - distance.min()) / (1.5 * L)) * (distance <= max(reach, distance.min()))
    axis, coord, facing = walls[rng.choice(4, p=weights / weights.sum())]
    tilt = rng.uniform(-0.25, 0.25)
    point = np.empty(2)
    point[1 - axis] = np.clip(position[1 - axis] + rng.normal(0.0, L), lo + 0.6 * L, hi - 0.6 * L)
    # A walking snout (0.5 L ahead) would stop 0.05 L before the edge; the stopped mouse hunches
    # a little, so it ends up about 0.1 L short.
    point[axis] = coord - math.copysign(0.5 * L * math.cos(tilt) + 0.05 * L, coord - (lo + hi) / 2)
    return _Goal(point, facing + tilt)


def _waypoints(
    rng: np.random.Generator,
    start: np.ndarray,
    heading: float,
    goal: np.ndarray,
    budget: float,
    box: tuple[float, float],
    L: float,
) -> list[np.ndarray]:
    """Random exploration points from `start` to `goal` whose chord length roughly fills `budget`."""
    lo, hi = box
    points, direction, travelled = [start], heading, 0.0
    while travelled + np.linalg.norm(goal - points[-1]) < budget and len(points) < 64:
        step = None
        for attempt in range(12):  # widen the turn until a point inside the arena turns up
            angle = direction + rng.normal(0.0, 0.6 + 0.3 * attempt)
            length = rng.uniform(1.0, 2.5) * L
            candidate = points[-1] + length * np.array([math.cos(angle), math.sin(angle)])
            inside = bool(np.all((candidate >= lo) & (candidate <= hi)))
            if inside and travelled + length + np.linalg.norm(goal - candidate) <= budget + L:
                step = candidate
                break
        if step is None:
            break
        points.append(step)
        travelled += length
        direction = angle
    if np.linalg.norm(goal - points[-1]) > 1e-6:
        points.append(goal)
    return points


def _bezier_path(
    points: list[np.ndarray], start_dir: float, end_dir: float | None, box: tuple[float, float]
) -> np.ndarray:
    """Dense (m, 2) smooth path through `points` (cubic Hermite/Bezier pieces).

    Control points are clipped into `box`; as the arena is convex, the curve then stays inside it.
    """
    def unit(v: np.ndarray) -> np.ndarray:
        norm = np.linalg.norm(v)
        return v / norm if norm > 1e-9 else np.zeros(2)

    tangents = [np.array([math.cos(start_dir), math.sin(start_dir)])]
    for i in range(1, len(points) - 1):
        tangents.append(unit(points[i + 1] - points[i - 1]))
    if end_dir is None:
        tangents.append(unit(points[-1] - points[-2]))
    else:
        tangents.append(np.array([math.cos(end_dir), math.sin(end_dir)]))

    s = np.linspace(0.0, 1.0, 33)[:, None]
    pieces = []
    for i in range(len(points) - 1):
        a, b = points[i], points[i + 1]
        h = np.linalg.norm(b - a) / 3.0
        c1 = np.clip(a + h * tangents[i], *box)
        c2 = np.clip(b - h * tangents[i + 1], *box)
        curve = (1 - s) ** 3 * a + 3 * (1 - s) ** 2 * s * c1 + 3 * (1 - s) * s**2 * c2 + s**3 * b
        pieces.append(curve if i == 0 else curve[1:])
    return np.concatenate(pieces)


def _speed_profile(rng: np.random.Generator, n: int, fps: int) -> tuple[np.ndarray, np.ndarray]:
    """Relative per-frame speed as (variation, envelope): their product is the profile.

    The variation holds smooth speed changes and short pauses; the envelope starts from and
    comes back to rest.
    """
    t = np.arange(n)
    variation = np.exp(0.35 * _smooth_noise(rng, n, 0.8 * fps))
    for _ in range(rng.poisson(n / (6.0 * fps))):  # short stops while exploring
        centre, half = rng.uniform(0, n), rng.uniform(0.2, 0.8) * fps
        variation *= 1.0 - 0.93 * np.exp(-0.5 * ((t - centre) / half) ** 2)
    ramp = max(1, round(0.4 * fps))
    return variation, _envelope(n, min(ramp, max(1, n // 3)))


def _follow_path(
    rng: np.random.Generator, path: np.ndarray, heading: float, n: int, fps: int, body_length: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Move along `path` in exactly n frames: x, y, heading and speed (px/frame) per frame.

    The mouse slows down in tight bends, runs no faster than `_MAX_SPEED` where the time allows,
    and its body turns at most `_MAX_TURN` rad/s, so the heading never flips between frames.
    """
    steps = np.linalg.norm(np.diff(path, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(steps)])
    if arc[-1] < 1e-6:
        return np.full(n, path[0, 0]), np.full(n, path[0, 1]), np.full(n, heading), np.zeros(n)
    direction = np.gradient(path, axis=0)
    tangent = np.unwrap(np.arctan2(direction[:, 1], direction[:, 0]))
    tangent += 2 * math.pi * round((heading - tangent[0]) / (2 * math.pi))

    # Time per px of path: in a bend the mouse goes no faster than it can turn (turn per px x
    # px per frame <= the turn rate).
    bend = np.abs(np.gradient(tangent)) / np.maximum(np.gradient(arc), 1e-6)
    bend = np.convolve(bend, np.ones(9) / 9, mode="same")  # start slowing before the bend
    per_frame = arc[-1] / n
    extra = np.maximum(0.0, bend[1:] * per_frame * fps / _MAX_TURN - 1.0) * steps
    # Bends may take at most a third of the time, or the straights would turn into sprints.
    extra *= min(1.0, 0.5 * arc[-1] / max(float(extra.sum()), 1e-9))
    effort = np.concatenate([[0.0], np.cumsum(steps + extra)])
    variation, envelope = _speed_profile(rng, n, fps)
    # Flatten the variation (fewer, shallower pauses) until no frame is faster than a run.
    for flatten in np.linspace(1.0, 0.0, 6):
        profile = variation**flatten * envelope
        travelled = np.interp(np.cumsum(profile) / profile.sum() * effort[-1], effort, arc)
        if np.diff(travelled).max(initial=0.0) <= _MAX_SPEED * body_length / fps:
            break
    xs = np.interp(travelled, arc, path[:, 0])
    ys = np.interp(travelled, arc, path[:, 1])
    headings = _limit_turning(heading, np.interp(travelled, arc, tangent), _MAX_TURN / fps)
    return xs, ys, headings, np.diff(np.concatenate([[0.0], travelled]))


def _limit_turning(start: float, wanted: np.ndarray, limit: float) -> np.ndarray:
    """Follow `wanted` headings turning at most `limit` rad per frame, ending on the last one."""
    headings = np.empty(len(wanted))
    previous = start
    for i, target in enumerate(wanted):
        previous += float(np.clip(target - previous, -limit, limit))
        headings[i] = previous
    # A lag left at the end (a bend just before stopping) is made up over the last frames, so the
    # walk ends facing where the path says (a wall, for wall rearing).
    lag = float(wanted[-1] - headings[-1])
    if abs(lag) > 1e-9:
        k = min(len(wanted), math.ceil(1.5 * abs(lag) / limit) + 1)
        headings[-k:] += lag * _smoothstep(np.arange(1, k + 1) / k)
    return headings


def _turn_in_place(
    state: MouseState, target_heading: float, n: int, L: float, end: np.ndarray
) -> list[MouseState]:
    """Rotate on the spot (head leading the turn), stepping to `end`, before walking off."""
    delta = _angle_diff(target_heading, state.heading)
    begin = np.array([state.x, state.y])
    out = []
    for i in range(n):
        w = float(_smoothstep(np.array((i + 1) / n)))
        x, y = begin + (end - begin) * w
        out.append(
            _walking_state(
                float(x),
                float(y),
                state.heading + delta * w,
                L,
                vigour=0.2,
                head_yaw=0.35 * math.copysign(1.0, delta) * math.sin(math.pi * (i + 1) / n),
                stride=state.stride + 0.8 * (i + 1),
                gait=0.03 * L,
                tail_bend=state.tail_bend - 0.3 * delta * w,
            )
        )
    return out


def _walk(
    rng: np.random.Generator,
    arena: ArenaGeometry,
    start: MouseState,
    n: int,
    goal: _Goal,
    fps: int,
    L: float,
) -> list[MouseState]:
    """Walk for exactly n frames from `start` to `goal`, exploring on the way, with pauses.

    Waypoints stay `_WAYPOINT_MARGIN` body lengths from the walls and the path `_PATH_MARGIN`
    (over half a body length), so the body never crosses a wall whichever way it faces.
    """
    waypoint_box = arena.inset(_WAYPOINT_MARGIN * L)
    control_box = arena.inset(_PATH_MARGIN * L)
    p0 = np.array([start.x, start.y])
    # A bout can end closer to a wall than a walk may pass (a rear leans in): step back first.
    p_start = np.clip(p0, *control_box)
    speed = rng.uniform(0.6, 1.2) * L / fps  # mean px per frame
    # Leave time for turning on the spot, starting, stopping and slowing in bends.
    budget = speed * max(0.0, 0.7 * n - 0.5 * fps)
    points = _waypoints(rng, p_start, start.heading, goal.point, budget, waypoint_box, L)

    # Facing a wall, or the way on lies well behind: turn on the spot first.
    states: list[MouseState] = []
    heading = start.heading
    ahead = p_start + 0.5 * L * np.array([math.cos(heading), math.sin(heading)])
    blocked = bool(np.any((ahead < control_box[0]) | (ahead > control_box[1])))
    leg = points[1] - points[0] if len(points) > 1 else np.zeros(2)
    leg_dir = math.atan2(leg[1], leg[0]) if len(points) > 1 else heading
    stepped = not np.allclose(p_start, p0)
    if stepped or (len(points) > 1 and (blocked or abs(_angle_diff(leg_dir, heading)) > 0.7)):
        turn_rate = rng.uniform(2.5, 4.0) / fps  # rad per frame
        n_turn = min(max(1, math.ceil(abs(_angle_diff(leg_dir, heading)) / turn_rate)), n // 3)
        if n_turn > 0:
            states = _turn_in_place(start, leg_dir, n_turn, L, p_start)
            heading = states[-1].heading
    n_move = n - len(states)
    last = states[-1] if states else start

    if len(points) > 1:
        path = _bezier_path(points, heading, goal.heading, control_box)
        xs, ys, headings, speeds = _follow_path(rng, path, heading, n_move, fps, L)
    else:  # already at the goal: stand and look around
        xs, ys = np.full(n_move, last.x), np.full(n_move, last.y)
        headings, speeds = np.full(n_move, heading), np.zeros(n_move)

    vigour = np.clip(speeds / (0.8 * L / fps), 0.0, 1.0)  # 0 standing .. 1 brisk walk
    stride = last.stride + np.cumsum(2 * math.pi * speeds / (0.45 * L))
    # Slow head scanning, stronger when the mouse stands still.
    scan = (0.2 + 0.25 * (1 - vigour)) * _smooth_noise(rng, n_move, 0.8 * fps)
    head_yaw = np.clip(0.12 * vigour * np.sin(stride + math.pi / 2) + scan, -0.8, 0.8)
    settle = 1.0 - np.exp(-np.arange(1, n_move + 1) / fps)  # the tail drifts from its last bend
    tail_bend = last.tail_bend * (1 - settle) + 0.3 * settle * _smooth_noise(rng, n_move, 1.0 * fps)
    for i in range(n_move):
        states.append(
            _walking_state(
                float(xs[i]),
                float(ys[i]),
                float(headings[i]),
                L,
                vigour=float(vigour[i]),
                head_yaw=float(head_yaw[i]),
                sway=float(0.04 * L * vigour[i] * math.sin(stride[i])),
                stride=float(stride[i]),
                gait=float(0.08 * L * vigour[i]),
                tail_bend=float(tail_bend[i]),
            )
        )
    return states


def _groom(rng: np.random.Generator, start: MouseState, n: int, fps: int, L: float) -> list[MouseState]:
    """Sit still, body contracted, head and forepaws in fast small strokes at the snout."""
    w = _envelope(n, min(max(1, round(0.6 * fps)), max(1, n // 4)))
    front = _lerp(start.front, rng.uniform(0.28, 0.34) * L, w)
    back = _lerp(start.back, rng.uniform(0.38, 0.42) * L, w)
    # Strokes at 2-4 Hz with a jittered phase, so they are not a clean sinusoid.
    freq = rng.uniform(2.0, 4.0) * (1 + 0.15 * _smooth_noise(rng, n, fps))
    phase = np.cumsum(2 * math.pi * freq / fps + rng.normal(0.0, 0.35, n))
    # Face washing (head straight) alternates with flank licking (head turned to one side).
    episodes, t = np.zeros(n), 0
    while t < n:
        span = int(rng.uniform(1.5, 4.0) * fps)
        turned = rng.random() < 0.4
        episodes[t : t + span] = rng.choice([-1, 1]) * rng.uniform(0.6, 1.0) if turned else 0.0
        t += span
    turn = np.convolve(np.pad(episodes, fps, mode="edge"), np.ones(fps) / fps, mode="same")[fps:-fps]
    rock = 0.015 * L * w
    heading = start.heading + 0.1 * w * _smooth_noise(rng, n, 2.0 * fps)
    return [
        MouseState(
            x=start.x + float(rock[i] * math.sin(phase[i] * 0.5)),
            y=start.y + float(rock[i] * math.cos(phase[i] * 0.5)),
            heading=float(heading[i]),
            front=float(front[i]),
            back=float(back[i]),
            width=float(_lerp(start.width, 0.25 * L, w[i])),
            head_len=float(_lerp(start.head_len, 0.17 * L, w[i])),
            scale=float(_lerp(1.0, 1.04, w[i])),
            head_yaw=float(w[i] * (turn[i] + 0.12 * math.sin(phase[i]))),
            stride=start.stride,
            paw_raise=float(w[i]),
            paw_back=0.08 * L,
            paw_spread=float(0.045 * L + 0.01 * L * math.cos(phase[i])),
            paw_stroke=float(0.07 * L * w[i] * math.sin(phase[i] + rng.normal(0.0, 0.3))),
            tail_bend=start.tail_bend,
        )
        for i in range(n)
    ]


def _mid_rear(rng: np.random.Generator, start: MouseState, n: int, fps: int, L: float) -> list[MouseState]:
    """Rise on the hind legs in the open: body shortens, rounds and grows, forepaws up at the head."""
    w = _envelope(n, min(max(1, round(0.4 * fps)), max(1, n // 4)))
    height = 1 + 0.08 * _smooth_noise(rng, n, 0.5 * fps)  # the rear bobs a little
    front = _lerp(start.front, rng.uniform(0.17, 0.23) * L * height, w)
    back = _lerp(start.back, rng.uniform(0.34, 0.38) * L, w)
    # The tailbase stays planted; the raised midbody moves towards it in projection.
    u = np.array([math.cos(start.heading), math.sin(start.heading)])
    tailbase = np.array([start.x, start.y]) - start.back * u
    centre = tailbase + back[:, None] * u
    scan = 0.35 * _smooth_noise(rng, n, 0.6 * fps)
    return [
        MouseState(
            x=float(centre[i, 0]),
            y=float(centre[i, 1]),
            heading=start.heading,
            front=float(front[i]),
            back=float(back[i]),
            width=float(_lerp(start.width, 0.26 * L, w[i])),
            head_len=float(_lerp(start.head_len, 0.12 * L, w[i])),
            scale=float(_lerp(1.0, 1.13, w[i])),
            head_yaw=float(w[i] * scan[i]),
            stride=start.stride,
            paw_raise=float(w[i]),
            paw_back=0.02 * L,
            paw_spread=0.05 * L,
            tail_bend=start.tail_bend,
        )
        for i in range(n)
    ]


def _wall_rear(
    rng: np.random.Generator, arena: ArenaGeometry, start: MouseState, n: int, fps: int, L: float
) -> list[MouseState]:
    """Rear against the wall it faces: snout and forepaws at or over the wall edge."""
    w = _envelope(n, min(max(1, round(0.4 * fps)), max(1, n // 4)))
    u = np.array([math.cos(start.heading), math.sin(start.heading)])
    snout0 = np.array([start.x, start.y]) + start.front * u
    reach = _reach(arena, snout0, u)
    overhang = rng.uniform(0.03, 0.1) * L  # the raised head reaches over the edge in projection
    bob = 0.015 * L * _smooth_noise(rng, n, 0.4 * fps)
    front = _lerp(start.front, rng.uniform(0.28, 0.34) * L, w)
    back = _lerp(start.back, rng.uniform(0.40, 0.44) * L, w)
    # The walk ends facing a wall a few px away; never slide further should it not.
    reach = float(np.clip(reach, 0.0, 0.3 * L))
    snout = snout0 + ((reach + overhang) * w + bob)[:, None] * u
    centre = snout - front[:, None] * u
    return [
        MouseState(
            x=float(centre[i, 0]),
            y=float(centre[i, 1]),
            heading=start.heading,
            front=float(front[i]),
            back=float(back[i]),
            width=float(_lerp(start.width, 0.23 * L, w[i])),
            head_len=float(_lerp(start.head_len, 0.16 * L, w[i])),
            scale=float(_lerp(1.0, 1.06, w[i])),
            head_yaw=float(w[i] * 0.08 * math.sin(0.7 * i)),
            stride=start.stride,
            paw_raise=float(w[i]),
            paw_back=0.04 * L,
            paw_spread=0.12 * L,
            tail_bend=start.tail_bend,
        )
        for i in range(n)
    ]


def _reach(arena: ArenaGeometry, point: np.ndarray, u: np.ndarray) -> float:
    """Distance from `point` along the unit vector `u` to the floor edge (ray against the arena box)."""
    return min(
        ((arena.floor_hi if u[a] > 0 else arena.floor_lo) - point[a]) / u[a]
        for a in (0, 1)
        if abs(u[a]) > 1e-6
    )


def _stretch(
    rng: np.random.Generator, arena: ArenaGeometry, start: MouseState, n: int, fps: int, L: float
) -> list[MouseState]:
    """Unlabelled: stop, lift the head forward-up and draw the forepaws in, then come down again.

    The posture heads for the rear of the place (a mid rear in the open, a wall rear facing a
    wall) but gets only `_STRETCH_DEPTH` of the way, and the forepaws stay on the floor, drawn in
    under the chest instead of rising to the head. Its peak looks like a rear's onset; only what
    follows (rising on, or coming down) tells them apart. In the open the tailbase stays planted,
    as in a mid rear; facing a wall the snout reaches towards it, but never over the edge.
    """
    w = _envelope(n, min(max(1, round(0.4 * fps)), max(1, n // 3)))
    u = np.array([math.cos(start.heading), math.sin(start.heading)])
    centre0 = np.array([start.x, start.y])
    reach = _reach(arena, centre0 + start.front * u, u)
    at_wall = reach < 0.35 * L  # the walk brings the snout ~0.1 L short of the wall it faces
    # (front, back, width, head_len, scale) of the full rear of that place, in L (scale as is).
    rear = (0.31, 0.42, 0.23, 0.16, 1.06) if at_wall else (0.20, 0.36, 0.26, 0.12, 1.13)
    d = rng.uniform(*_STRETCH_DEPTH) * w
    front = _lerp(start.front, rear[0] * L, d)
    back = _lerp(start.back, rear[1] * L, d)
    if at_wall:  # the hind paws step in behind the stretching head
        snout = centre0 + start.front * u + (max(reach, 0.0) * d)[:, None] * u
        centre = snout - front[:, None] * u
    else:
        centre = (centre0 - start.back * u) + back[:, None] * u
    # Forepaws on the floor: in the open drawn in under the chest, towards where a mid rear holds
    # them; at a wall stepped forward under the head, towards where a wall rear puts them.
    tuck = rng.uniform(0.1, 0.4) if at_wall else rng.uniform(0.5, 0.9)
    step = np.maximum(0.0, front - 0.06 * L - 0.55 * front) * d if at_wall else np.zeros(n)
    sniff = 0.25 * _smooth_noise(rng, n, 0.6 * fps)  # slow head turns, no strokes
    return [
        MouseState(
            x=float(centre[i, 0]),
            y=float(centre[i, 1]),
            heading=start.heading,
            front=float(front[i]),
            back=float(back[i]),
            width=float(_lerp(start.width, rear[2] * L, d[i])),
            head_len=float(_lerp(start.head_len, rear[3] * L, d[i])),
            scale=float(_lerp(1.0, rear[4], d[i])),
            head_yaw=float(_lerp(start.head_yaw, sniff[i], w[i])),
            stride=start.stride,
            paw_tuck=float(tuck * w[i]),
            paw_step=float(step[i]),
            tail_bend=start.tail_bend,
        )
        for i in range(n)
    ]


def _pause(rng: np.random.Generator, start: MouseState, n: int, fps: int, L: float) -> list[MouseState]:
    """Unlabelled: stand still, with small slow jitter only; some pauses crouch, body contracted.

    No paw or head strokes: a still, even a short and crouched, mouse is not a grooming one. The
    mouse stops mid-stride, paws and body where a walking stride would hold them, so that one frame
    cannot tell a pause from a walk (locomotion is told by movement only).
    """
    w = _envelope(n, min(max(1, round(0.5 * fps)), max(1, n // 4)))
    crouch = rng.uniform(0.0, 1.0)
    front = _lerp(start.front, (0.46 - 0.14 * crouch) * L, w)
    back = _lerp(start.back, (0.47 - 0.07 * crouch) * L, w)
    tuck = crouch * rng.uniform(0.5, 0.9)
    jitter = 0.006 * L * np.stack([_smooth_noise(rng, n, 0.3 * fps) for _ in range(2)], axis=1)
    heading = start.heading + 0.03 * w * _smooth_noise(rng, n, 2.0 * fps)
    look = 0.2 * _smooth_noise(rng, n, 1.5 * fps)  # slow look around, no oscillation
    return [
        MouseState(
            x=start.x + float(jitter[i, 0]),
            y=start.y + float(jitter[i, 1]),
            heading=float(heading[i]),
            front=float(front[i]),
            back=float(back[i]),
            width=float(_lerp(start.width, (0.20 + 0.05 * crouch) * L, w[i])),
            head_len=float(_lerp(start.head_len, (0.20 - 0.03 * crouch) * L, w[i])),
            scale=1.0,
            head_yaw=float(_lerp(start.head_yaw, look[i], w[i])),
            stride=start.stride,
            gait=float(_lerp(start.gait, _PAUSE_GAIT * L * (1 - crouch), w[i])),
            sway=float(_lerp(start.sway, _PAUSE_GAIT / 2 * L * (1 - crouch) * math.sin(start.stride), w[i])),
            paw_tuck=float(tuck * w[i]),
            tail_bend=start.tail_bend,
        )
        for i in range(n)
    ]


_PAUSE_GAIT = 0.06  # body lengths: a walking stride's paw swing (0.08 at a brisk walk), held in a pause


def _walk_legs(
    rng: np.random.Generator, length: int, next_kind: str | None, fps: int
) -> list[tuple[int, str | None]]:
    """Split a long walk in two now and then, the first leg ending at a wall without rearing.

    Stopping to sniff at a wall keeps "snout at the wall" from giving wall rearing away.
    """
    min_leg = round(_MIN_WALK_SECONDS * fps)
    if length < 2 * min_leg or rng.random() >= _WALL_VISIT_CHANCE:
        return [(length, next_kind)]
    first = int(rng.integers(min_leg, length - min_leg + 1))
    return [(first, "wall_visit"), (length - first, next_kind)]


def _simulate(
    rng: np.random.Generator, arena: ArenaGeometry, n_frames: int, fps: int, L: float
) -> tuple[list[MouseState], np.ndarray]:
    """Per-frame mouse states and the (n_frames, len(BEHAVIOURS)) 0/1 label matrix of one video."""
    schedule = _plan_schedule(rng, n_frames, fps)
    lo, hi = arena.inset(_WAYPOINT_MARGIN * L)
    position = rng.uniform(lo, hi, 2)
    state = _walking_state(position[0], position[1], rng.uniform(-math.pi, math.pi), L)
    states: list[MouseState] = []
    labels = np.zeros((n_frames, len(BEHAVIOURS)), dtype=np.int8)
    for i, segment in enumerate(schedule):
        if segment.kind == "walk":
            next_kind = schedule[i + 1].kind if i + 1 < len(schedule) else None
            chunk = []
            for length, kind in _walk_legs(rng, segment.length, next_kind, fps):
                reach = 0.4 * _MAX_SPEED * L * length / fps
                goal = _choose_goal(rng, arena, L, kind, np.array([state.x, state.y]), reach)
                chunk += _walk(rng, arena, state, length, goal, fps, L)
                state = chunk[-1]
        elif segment.kind == "stretch":
            chunk = _stretch(rng, arena, state, segment.length, fps, L)
        elif segment.kind == "pause":
            chunk = _pause(rng, state, segment.length, fps, L)
        else:
            labels[len(states) : len(states) + segment.length, BEHAVIOURS.index(segment.kind)] = 1
            if segment.kind == "grooming":
                chunk = _groom(rng, state, segment.length, fps, L)
            elif segment.kind == "mid_rearing":
                chunk = _mid_rear(rng, state, segment.length, fps, L)
            else:
                chunk = _wall_rear(rng, arena, state, segment.length, fps, L)
        states += chunk
        state = chunk[-1] if chunk else state
    labels[:, BEHAVIOURS.index("locomotion")] = _walking(states, schedule, fps, L)
    return states, labels


def _walking(states: list[MouseState], schedule: list[_Segment], fps: int, L: float) -> np.ndarray:
    """(n,) 0/1: frames of walk segments where the centre moves at LOCOMOTION_SPEED or faster."""
    xy = np.array([(s.x, s.y) for s in states])
    step = np.r_[0.0, np.hypot(*np.diff(xy, axis=0).T)] * fps / L  # body lengths per second
    width = max(1, round(LOCOMOTION_WINDOW * fps))
    speed = np.convolve(step, np.ones(width) / width, mode="same")
    in_walk = np.concatenate([np.full(seg.length, seg.kind == "walk") for seg in schedule])
    return (in_walk & (speed >= LOCOMOTION_SPEED)).astype(np.int8)


# --------------------------------------------------------------------------------------------
# Pose observation (what a DeepLabCut model would report)
# --------------------------------------------------------------------------------------------

# Tracking-failure runs started per second, per part: paws fail most, the midbody least.
_DROPOUT_PER_SECOND = np.array([0.04, 0.03, 0.03, 0.01, 0.03, 0.06, 0.06, 0.05, 0.05])


def _observe_pose(
    rng: np.random.Generator,
    true_points: np.ndarray,
    labels: np.ndarray,
    paw_hidden: np.ndarray,
    fps: int,
    L: float,
    size: int,
) -> np.ndarray:
    """(n, parts, 3) x, y, likelihood: true positions with jitter, plus short failure runs.

    `paw_hidden` (0..1 per frame) is how far the forepaws are raised to the head or tucked under
    the chest: hidden from the camera, either way.
    """
    n, n_parts, _ = true_points.shape
    sigma = np.full(n_parts, 0.012 * L)
    sigma[_FOREPAWS + _HINDPAWS] = 0.02 * L
    xy = true_points + rng.normal(0.0, 1.0, true_points.shape) * sigma[None, :, None]
    uncertainty = rng.beta(1.5, 40.0, (n, n_parts))
    uncertainty[:, _FOREPAWS] *= 1 + 1.5 * paw_hidden[:, None]  # held-up or tucked paws are harder to see
    likelihood = np.clip(1.0 - uncertainty, 0.6, 0.9999)

    # Paws are occluded or confused while the mouse rears or grooms, or tucks them under the chest
    # (the typical DLC failure).
    hazard = np.tile(_DROPOUT_PER_SECOND / fps, (n, 1))
    rearing = labels[:, BEHAVIOURS.index("mid_rearing")] | labels[:, BEHAVIOURS.index("wall_rearing")]
    hazard[:, _FOREPAWS] *= 1 + 3 * (paw_hidden > 0.5)[:, None]
    hazard[:, _HINDPAWS] *= 1 + 2 * rearing[:, None]
    for part in range(n_parts):
        for start in np.flatnonzero(rng.random(n) < hazard[:, part]):
            stop = min(n, start + max(2, round(rng.integers(2, 9) * fps / _REFERENCE_FPS)))
            likelihood[start:stop, part] = rng.uniform(0.005, 0.29, stop - start)
            if rng.random() < 0.4:
                xy[start:stop, part] = np.nan
            else:  # locked onto a wrong blob nearby
                wrong = true_points[start, part] + rng.normal(0.0, 0.6 * L, 2)
                jitter = rng.normal(0.0, 0.02 * L, (stop - start, 2))
                xy[start:stop, part] = np.clip(wrong + jitter, 0, size - 1)
    return np.concatenate([xy, likelihood[..., None]], axis=-1)


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Look:
    """Per-video appearance: lighting, colours, sensor noise."""

    floor: float  # floor grey level under full light
    vignette: float  # fall-off of light towards the edges
    light_centre: tuple[float, float]  # brightest point, fraction of the frame
    tint: tuple[float, float, float]  # BGR multipliers of the floor
    fur: tuple[int, int, int]  # BGR
    noise_sigma: float

    @classmethod
    def sample(cls, rng: np.random.Generator) -> _Look:
        """A random look: each video is lit and coloured a little differently."""
        fur = rng.uniform(28, 50)
        return cls(
            floor=rng.uniform(200, 236),
            vignette=rng.uniform(0.04, 0.1),
            light_centre=(rng.uniform(0.35, 0.65), rng.uniform(0.35, 0.65)),
            tint=tuple(float(v) for v in 1 + rng.uniform(-0.03, 0.03, 3)),
            fur=tuple(int(round(fur + d)) for d in rng.uniform(-5, 5, 3)),
            noise_sigma=rng.uniform(1.5, 3.5),
        )


def _floor_texture(rng: np.random.Generator, size: int, L: float) -> np.ndarray:
    """(size, size) float32 around 1: a faint static floor pattern (bedding dust, scratches in the
    acrylic), blotches of about a quarter body length at a few percent of contrast. Real floors have
    one, and it is what moves in a mouse-centred crop when the mouse walks."""
    field = cv2.GaussianBlur(rng.normal(0.0, 1.0, (size, size)).astype(np.float32), (0, 0), max(1.0, 0.08 * L))
    return (1.0 + _FLOOR_CONTRAST * field / max(float(field.std()), 1e-6)).astype(np.float32)


_FLOOR_CONTRAST = 0.04  # standard deviation of the floor pattern, a fraction of the floor's brightness


def _background(arena: ArenaGeometry, look: _Look, texture: np.ndarray | None = None) -> np.ndarray:
    """Empty arena: bench outside, a dark wall band, an unevenly lit, faintly patterned floor darker along the walls."""
    size = arena.size
    img = np.empty((size, size, 3), dtype=np.float32)
    img[:] = 0.62 * look.floor
    o, w = arena.outer, arena.wall_width
    img[o : size - o, o : size - o] = 0.4 * look.floor
    coords = (np.arange(size) + 0.5) / size
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    cx, cy = look.light_centre
    light = 1.0 - look.vignette * ((xx - cx) ** 2 + (yy - cy) ** 2) / 0.5
    depth = np.minimum.reduce([xx, 1 - xx, yy, 1 - yy]) * size - (o + w)
    wall_shade = 1.0 - 0.1 * np.exp(-np.clip(depth, 0, None) / (0.06 * arena.body_length + 1.0))
    floor = look.floor * light * wall_shade * (1.0 if texture is None else texture)
    inner = slice(o + w, size - o - w)
    for c in range(3):
        img[inner, inner, c] = (floor * look.tint[c])[inner, inner]
    return np.clip(img, 0, 255).astype(np.uint8)


def _noise_bank(rng: np.random.Generator, size: int, sigma: float, count: int = 8) -> list[tuple]:
    """Precomputed sensor-noise frames (added and subtracted parts), cheap to apply per frame."""
    bank = []
    for _ in range(count):
        noise = rng.normal(0.0, sigma, (size, size, 1)).repeat(3, axis=2)
        bank.append((np.clip(noise, 0, 255).astype(np.uint8), np.clip(-noise, 0, 255).astype(np.uint8)))
    return bank


_SUBPIXEL = 4  # cv2 fixed-point bits: sub-pixel positions keep slow motion smooth


def _fix(p: np.ndarray) -> tuple[int, int]:
    return int(round(p[0] * (1 << _SUBPIXEL))), int(round(p[1] * (1 << _SUBPIXEL)))


def _ellipse(
    img: np.ndarray, centre: np.ndarray, half_len: float, half_width: float, angle: float, colour: tuple
) -> None:
    axes = (max(1, int(half_len * (1 << _SUBPIXEL))), max(1, int(half_width * (1 << _SUBPIXEL))))
    cv2.ellipse(img, _fix(centre), axes, math.degrees(angle), 0, 360, colour, -1, cv2.LINE_AA, _SUBPIXEL)


def _segment_axis(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Midpoint, half length and angle of the segment a -> b."""
    d = b - a
    return (a + b) / 2, float(np.hypot(d[0], d[1])) / 2, math.atan2(d[1], d[0])


class _Painter:
    """Draws the mouse of one video frame by frame onto its empty-arena background."""

    def __init__(self, arena: ArenaGeometry, look: _Look, L: float) -> None:
        self.arena, self.L = arena, L
        fur = np.array(look.fur, dtype=float)
        self.fur = tuple(int(v) for v in fur)
        self.tail = tuple(int(v) for v in fur * 1.5 + 10)
        self.ear = tuple(int(v) for v in fur + np.array([30, 30, 50]))
        self.paw = tuple(int(v) for v in np.array([150, 155, 195]) * look.floor / 230)
        self.shadow = tuple(int(v) for v in np.array(look.tint) * look.floor * 0.8)

    def _tail(self, img: np.ndarray, st: dict, i: int, tailbase: np.ndarray, u: np.ndarray) -> None:
        L = self.L
        angle = math.atan2(-u[1], -u[0])
        pts, p = [tailbase], tailbase
        for k in range(1, 7):
            # The tail lags the stride wave and keeps its overall bend.
            angle += st["tail_bend"][i] / 6 + 0.25 * math.sin(st["stride"][i] - 0.8 * k) * k / 6
            p = p + 0.15 * L * np.array([math.cos(angle), math.sin(angle)])
            pts.append(p)
        # Along a wall the tail bends along it instead of passing through it.
        pts = np.clip(np.array(pts), self.arena.floor_lo + 1, self.arena.floor_hi - 1)
        fixed = np.round(pts * (1 << _SUBPIXEL)).astype(np.int32)
        thick = max(1, round(0.06 * L))
        cv2.polylines(img, [fixed[:4]], False, self.tail, thick, cv2.LINE_AA, _SUBPIXEL)
        cv2.polylines(img, [fixed[3:]], False, self.tail, max(1, thick - 1), cv2.LINE_AA, _SUBPIXEL)

    def draw(self, img: np.ndarray, st: dict, sk: dict, i: int) -> None:
        """Paint frame i: shadow, tail, paws, body, head, ears.

        Paws go under the body: seen from above they show only where they reach beyond it (at
        the body's sides while walking, at the snout while grooming, on the wall while rearing).
        """
        L = self.L
        scale, width = st["scale"][i], st["width"][i]
        tailbase, mid, neck = sk["tailbase"][i], sk["midbody"][i], sk["neck"][i]
        snout, u, uh = sk["snout"][i], sk["u"][i], sk["uh"][i]

        # A raised body casts its shadow further from itself.
        centre, half, angle = _segment_axis(tailbase, neck)
        offset = (0.04 + 0.6 * (scale - 1)) * L
        _ellipse(img, centre + offset, half + 0.2 * L, width * scale * 1.15, angle, self.shadow)
        self._tail(img, st, i, tailbase, u)
        head_angle = math.atan2(uh[1], uh[0])
        fore_angle = head_angle if st["paw_raise"][i] > 0.5 else angle
        for name, paw_angle in (
            ("lefthindpaw", angle),
            ("righthindpaw", angle),
            ("leftforepaw", fore_angle),
            ("rightforepaw", fore_angle),
        ):
            _ellipse(img, sk[name][i], 0.045 * L * scale, 0.035 * L * scale, paw_angle, self.paw)

        c, half, a = _segment_axis(tailbase, mid)
        _ellipse(img, c, half + 0.13 * L, width * scale, a, self.fur)
        c, half, a = _segment_axis(mid, neck)
        _ellipse(img, c, half + 0.1 * L, 0.85 * width * scale, a, self.fur)
        c, half, _ = _segment_axis(neck, snout)
        _ellipse(img, c, half + 0.05 * L, 0.095 * L * scale, head_angle, self.fur)
        _ellipse(img, snout - 0.03 * L * uh, 0.06 * L, 0.045 * L * scale, head_angle, self.fur)
        for name in ("leftear", "rightear"):
            _ellipse(img, sk[name][i], 0.05 * L * scale, 0.04 * L * scale, head_angle, self.ear)


def _frames(
    rng: np.random.Generator, arena: ArenaGeometry, look: _Look, st: dict, sk: dict, L: float
) -> Iterator[np.ndarray]:
    """Rendered BGR frames of one video."""
    # Optics: no perfectly sharp edges. The empty arena is blurred once, each frame only around
    # the mouse (the body, its shadow and the tail all lie within a body length of a body part).
    background = cv2.GaussianBlur(_background(arena, look, _floor_texture(rng, arena.size, L)), (3, 3), 0.7)
    noise = _noise_bank(rng, arena.size, look.noise_sigma)
    n = len(st["x"])
    gain = 1.0 + 0.006 * _smooth_noise(rng, n, 5.0)  # slow lighting flicker
    noise_index = rng.integers(0, len(noise), n)
    points = _keypoints(sk)
    lo = np.clip(np.floor(np.nanmin(points, axis=1) - L), 0, arena.size).astype(int)
    hi = np.clip(np.ceil(np.nanmax(points, axis=1) + L), 0, arena.size).astype(int)
    painter = _Painter(arena, look, L)
    for i in range(n):
        frame = cv2.convertScaleAbs(background, alpha=float(gain[i]))
        painter.draw(frame, st, sk, i)
        (x0, y0), (x1, y1) = lo[i], hi[i]
        frame[y0:y1, x0:x1] = cv2.GaussianBlur(frame[y0:y1, x0:x1], (3, 3), 0.7)
        plus, minus = noise[noise_index[i]]
        cv2.add(frame, plus, dst=frame)
        cv2.subtract(frame, minus, dst=frame)
        yield frame


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


@contextmanager
def _single_threaded_cv2() -> Iterator[None]:
    """Frames are small: OpenCV's worker threads only add overhead (and contend on 2 cores)."""
    previous = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(previous)


def _write_video(path: Path, frames: Iterator[np.ndarray], fps: int, size: int) -> None:
    with atomic_output(path) as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (size, size), True)
        if not writer.isOpened():
            raise DataError(f"{path}: OpenCV cannot write mp4v video here; use an OpenCV build with FFmpeg")
        try:
            for frame in frames:
                writer.write(frame)
        finally:
            writer.release()


def _write_pose_csv(path: Path, pose: np.ndarray, scorer: str = SCORER) -> None:
    """DeepLabCut layout: 3 header rows (scorer, bodyparts, coords), frame index first."""
    columns = pd.MultiIndex.from_product(
        [[scorer], list(BODY_PARTS), ["x", "y", "likelihood"]], names=["scorer", "bodyparts", "coords"]
    )
    with atomic_output(path) as tmp:
        pd.DataFrame(pose.reshape(len(pose), -1), columns=columns).to_csv(tmp, float_format="%.4f")


# Pose file formats the generator writes (`generate(pose_format=...)`), each read back by `read_pose`
# from its content: DeepLabCut CSV, LightningPose CSV (the DeepLabCut layout, its own scorer), and
# SLEAP predictions (.slp) or analysis export (.analysis.h5), written by sleap-io itself.
POSE_FORMATS = {"dlc": ".csv", "lightning_pose": ".csv", "sleap": ".slp", "sleap_analysis": ".analysis.h5"}
LIGHTNING_POSE_SCORER = "heatmap_tracker"


def _write_pose(path: Path, pose: np.ndarray, pose_format: str, video: Path) -> None:
    if pose_format in ("dlc", "lightning_pose"):
        _write_pose_csv(path, pose, LIGHTNING_POSE_SCORER if pose_format == "lightning_pose" else SCORER)
    else:
        _write_sleap(path, pose, video, analysis=pose_format == "sleap_analysis")


def _write_sleap(path: Path, pose: np.ndarray, video: Path, analysis: bool) -> None:
    """One track ("mouse") of predicted instances, one per frame, as SLEAP writes them."""
    import sleap_io

    skeleton = sleap_io.Skeleton(list(BODY_PARTS))
    track = sleap_io.Track("mouse")
    source = sleap_io.Video(str(video), open_backend=False)
    points = pose.reshape(len(pose), len(BODY_PARTS), 3)
    frames = [
        sleap_io.LabeledFrame(video=source, frame_idx=t, instances=[sleap_io.PredictedInstance.from_numpy(
            points[t, :, :2], skeleton, point_scores=points[t, :, 2], score=float(points[t, :, 2].mean()),
            track=track)])
        for t in range(len(points))
    ]
    labels = sleap_io.Labels(labeled_frames=frames, videos=[source], skeletons=[skeleton], tracks=[track])
    with atomic_output(path) as tmp:
        if analysis:
            sleap_io.save_analysis_h5(labels, str(tmp), video=source)
        else:
            sleap_io.save_slp(labels, str(tmp), verbose=False)


def _write_labels_csv(path: Path, labels: np.ndarray) -> None:
    table = pd.DataFrame(labels.astype(int), columns=list(BEHAVIOURS))
    table.insert(0, "frame", np.arange(len(labels)))
    with atomic_output(path) as tmp:
        table.to_csv(tmp, index=False)


def _write_manifest(path: Path, manifest: dict) -> None:
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        yaml.safe_dump(manifest, fh, sort_keys=False, default_flow_style=None)


def _make_video(out: Path, video_id: str, seed: int, index: int, n_frames: int, fps: int, size: int,
                pose_format: str = "dlc") -> None:
    """Simulate, render and write the mp4, pose CSV and labels CSV of one video."""
    rng = np.random.default_rng([seed, index])
    arena = arena_geometry(size)
    L = arena.body_length * rng.uniform(0.96, 1.04)  # mice differ a little in size
    look = _Look.sample(rng)
    states, labels = _simulate(rng, arena, n_frames, fps, L)
    st = _stack_states(states)
    sk = _skeleton(st, L)
    paw_hidden = np.maximum(np.clip(st["paw_raise"], 0.0, 1.0), np.clip(st["paw_tuck"], 0.0, 1.0))
    pose = _observe_pose(rng, _keypoints(sk), labels, paw_hidden, fps, L, size)
    _write_video(out / "videos" / f"{video_id}.mp4", _frames(rng, arena, look, st, sk, L), fps, size)
    _write_pose(out / "poses" / f"{video_id}{POSE_FORMATS[pose_format]}", pose, pose_format,
                out / "videos" / f"{video_id}.mp4")
    _write_labels_csv(out / "labels" / f"{video_id}.csv", labels)


def _check_int(name: str, value: object, rule: str, ok: Callable[[int], bool], fix: str) -> None:
    """Raise ConfigError naming the parameter, the rule, the value and the fix unless `ok(value)`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not ok(value):
        raise ConfigError(f"synthetic dataset: {name} must be {rule}; got {value!r}; {fix}")


def _validate(n_videos: int, n_frames: int, seed: int, n_test: int, fps: int, size: int) -> None:
    _check_int("n_videos", n_videos, "an integer >= 2", lambda v: v >= 2, "pass --videos 2 or more")
    _check_int("n_test", n_test, f"an integer with 1 <= n_test < n_videos ({n_videos})", lambda v: 1 <= v < n_videos,
               f"pass --test between 1 and {n_videos - 1}, or more --videos")
    _check_int("fps", fps, "an integer between 5 and 30", lambda v: 5 <= v <= 30, "use an fps from 5 to 30")
    need = max(300, 30 * fps)  # 30 s: room for one bout of every behaviour and the walks between
    rule = f"an integer >= {need} (300, and at least 30 s at fps={fps})"
    _check_int("n_frames", n_frames, rule, lambda v: v >= need, f"pass --frames {need} or more")
    _check_int("seed", seed, "an integer >= 0", lambda v: v >= 0, "pass --seed 0 or more")
    _check_int("size", size, "an integer >= 96 (frame side in px)", lambda v: v >= 96, "use a size of 96 or more")


def generate(
    out_dir: str | os.PathLike,
    n_videos: int = 6,
    n_frames: int = 1500,
    seed: int = 0,
    n_test: int = 2,
    fps: int = 10,
    size: int = 256,
    pose_format: str = "dlc",
) -> Path:
    """Write a synthetic open-field dataset and return the path of its dataset.yaml.

    Writes videos/<id>.mp4 (mp4v, size x size, BGR), poses/<id>.csv (DeepLabCut CSV; `pose_format`
    one of POSE_FORMATS writes another pose format, the same points),
    labels/<id>.csv (frame + one 0/1 column per behaviour) and dataset.yaml, the last n_test
    videos in the test split. The same arguments always give the same pose and label files.

    Raises:
        ConfigError: an argument outside its valid range, or out_dir is a file.
    """
    _validate(n_videos, n_frames, seed, n_test, fps, size)
    if pose_format not in POSE_FORMATS:
        raise ConfigError(f"synthetic dataset: pose_format {pose_format!r} is not one of {', '.join(POSE_FORMATS)}; "
                          "pick one of those")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"synthetic dataset: out_dir {out} is a file; give a directory")
    for sub in ("videos", "poses", "labels"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    manifest_path = out / "dataset.yaml"
    # A manifest left from an earlier run must not describe files that are being rewritten.
    manifest_path.unlink(missing_ok=True)

    width = max(2, len(str(n_videos)))
    ids = [f"ofs{i + 1:0{width}d}" for i in range(n_videos)]
    with _single_threaded_cv2():
        for index, video_id in enumerate(ids):
            _make_video(out, video_id, int(seed), index, int(n_frames), int(fps), int(size), pose_format)

    manifest = {
        "name": DATASET_NAME,
        "behaviours": list(BEHAVIOURS),
        "crop": {
            "mode": "pose",
            "size": default_crop_size(int(size)),
            "centre": ["midbody"],
            "min_likelihood": 0.6,
        },
        "pose": {"heading": ["tailbase", "snout"]},
        "synthetic": {
            "seed": int(seed),
            "n_videos": int(n_videos),
            "n_frames": int(n_frames),
            "fps": int(fps),
        },
        "videos": [
            {
                "id": video_id,
                "video": f"videos/{video_id}.mp4",
                "pose": f"poses/{video_id}{POSE_FORMATS[pose_format]}",
                "labels": f"labels/{video_id}.csv",
                "split": "test" if index >= n_videos - n_test else "train",
                "fps": int(fps),
            }
            for index, video_id in enumerate(ids)
        ],
    }
    _write_manifest(manifest_path, manifest)
    return manifest_path
