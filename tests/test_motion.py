"""Motion features: window statistics, speed signals, arena features, pose v2 and the track backbone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mbr_bench.benchmark.backbones import BACKBONES, build_backbone
from mbr_bench.benchmark.backbones.motion import (
    Arena,
    MotionSettings,
    arena_features,
    displacement_signals,
    span_speed,
    speed_signals,
    window_frames,
    window_stats,
)
from mbr_bench.benchmark.backbones.pose import PoseFeatures, PoseFeaturesV1
from mbr_bench.benchmark.backbones.track import TrackFeatures
from mbr_bench.benchmark.data.crops import BLOB_COLUMNS
from mbr_bench.benchmark.data.manifest import VideoGeometry
from mbr_bench.benchmark.data.pose import Pose
from mbr_bench.core.errors import ConfigError

PARTS = ("midbody", "snout", "tailbase")


def _naive(x: np.ndarray, size: int, causal: bool) -> np.ndarray:
    """Window stats by loops, edges repeating the first/last value."""
    n = len(x)
    out = np.empty((n, 4))
    for t in range(n):
        lo = t - (size - 1) if causal else t - size // 2
        idx = np.clip(np.arange(lo, lo + size), 0, n - 1)
        w = x[idx]
        out[t] = [w.mean(), w.std(), w.min(), w.max()]
    return out


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("seconds", [0.2, 0.5, 0.7])
def test_window_stats_match_a_loop(causal: bool, seconds: float) -> None:
    x = np.random.default_rng(0).normal(size=(200, 1))
    settings = MotionSettings((seconds,), causal)
    got = window_stats(x, 10.0, settings)
    want = _naive(x[:, 0], window_frames(seconds, 10.0), causal)
    np.testing.assert_allclose(got, want, atol=1e-9)


def test_causal_windows_never_see_the_future() -> None:
    x = np.zeros((100, 1))
    x[60:] = 1.0  # a step at frame 60
    causal = window_stats(x, 10.0, MotionSettings((1.0,), causal=True))
    centred = window_stats(x, 10.0, MotionSettings((1.0,), causal=False))
    assert causal[:60].max() == 0.0  # nothing before the step knows of it
    assert centred[56:60, 3].min() == 1.0  # a centred 1 s max (frames t-5..t+4) sees it coming


def test_bad_windows_are_refused() -> None:
    with pytest.raises(ConfigError, match="positive seconds"):
        MotionSettings((0.5, -1.0))


def test_immobility_ignores_jitter_but_not_walking() -> None:
    rng = np.random.default_rng(1)
    fps, body = 50.0, 100.0
    still = np.full((500, 1, 2), 200.0) + rng.normal(0, 1.0, size=(500, 1, 2))  # 1 px jitter
    walk = np.cumsum(np.full((500, 1, 2), 2.0), axis=0)  # 2 px/frame: 1.4 body lengths/s
    immobile_still = speed_signals(still, fps, 1 / body, body)[:, 2]
    immobile_walk = speed_signals(walk, fps, 1 / body, body)[:, 2]
    assert immobile_still.mean() > 0.9
    assert immobile_walk.max() == 0.0


def test_span_speed_measures_net_movement_not_jitter() -> None:
    rng = np.random.default_rng(2)
    fps = 50.0
    still = np.full((500, 1, 2), 200.0) + rng.normal(0, 1.0, size=(500, 1, 2))  # 1 px jitter
    walk = np.cumsum(np.full((500, 1, 2), 0.6), axis=0)  # 0.6 px/frame each way: 42.4 px/s
    one_frame = np.hypot(*np.diff(still[:, 0], axis=0).T) * fps  # jitter alone reads ~90 px/s
    assert np.median(one_frame) > 50.0
    for seconds in (0.2, 1.0, 2.0):
        assert np.median(span_speed(still, fps, seconds)) < 15.0 / seconds  # falls as the window grows
        inside = span_speed(walk, fps, seconds)[100:-100]  # the ends repeat the first and last positions
        np.testing.assert_allclose(inside, 0.6 * np.sqrt(2) * fps, rtol=1e-6)


def test_span_speed_matches_a_loop_centred_and_causal() -> None:
    x = np.random.default_rng(4).normal(size=(60, 2, 2)).cumsum(axis=0)
    fps, seconds, half = 10.0, 0.8, 4  # halves of 4 frames

    def ending_at(t: int) -> np.ndarray:  # mean of frames t-3..t, the first frame standing in before the video
        return x[np.clip(np.arange(t - half + 1, t + 1), 0, None)].mean(axis=0)

    for causal in (False, True):
        got = span_speed(x, fps, seconds, causal)
        for t in range(len(x)):
            if causal:  # frames t-3..t against the 4 before them (the first frame's before there are 8)
                earlier, later = ending_at(max(t - half, 0)), ending_at(t)
            else:  # frames t+1..t+4 against t-3..t (the last full measure near the end)
                s = min(t, len(x) - 1 - half)
                earlier, later = ending_at(s), ending_at(s + half)
            np.testing.assert_allclose(got[t], np.hypot(*(later - earlier).T) * fps / half, atol=1e-9)


def test_causal_displacement_never_sees_the_future() -> None:
    x = np.zeros((100, 1, 2))
    x[60:, 0, 0] = 50.0  # a jump at frame 60
    causal = displacement_signals(x, 10.0, 1.0, MotionSettings((1.0,), causal=True))
    centred = displacement_signals(x, 10.0, 1.0, MotionSettings((1.0,), causal=False))
    assert causal[:60].max() == 0.0 and causal[60:65].min() > 0.0
    assert centred[55:60].min() > 0.0  # a centred window sees it coming
    immobile = speed_signals(x, 10.0, 1.0, body=10.0, causal=True)[:, 2]
    assert immobile[:60].min() == 1.0  # causal immobility, too, knows nothing of the jump before it


def test_arena_features_find_walls_and_corners() -> None:
    arena = Arena(0, 0, 100, 100)
    centre = np.array([[50.0, 50.0], [5.0, 50.0], [5.0, 5.0]])
    front = centre + np.array([[10.0, 0.0], [-3.0, 0.0], [3.0, 0.0]])
    f = arena_features(centre, front, arena, body=10.0)
    np.testing.assert_allclose(f[:, 0], [5.0, 0.5, 0.5])  # nearest wall, body lengths
    np.testing.assert_allclose(f[:, 1], [5.0, 5.0, 0.5])  # corner: only the last is near two walls
    assert f[1, 3] == pytest.approx(1.0)  # facing the left wall it is next to
    assert f[2, 3] == pytest.approx(-1.0)  # nearest wall is the left one (tie broken by order), facing away


def test_arena_estimated_from_the_track_ignores_rare_outliers() -> None:
    rng = np.random.default_rng(2)
    centre = rng.uniform([10, 20], [110, 220], size=(5000, 2))
    centre[0] = [5000, 5000]  # one tracking glitch
    arena = Arena.from_track(centre)
    assert arena.x0 == pytest.approx(10, abs=2) and arena.x1 == pytest.approx(110, abs=2)
    assert arena.y0 == pytest.approx(20, abs=3) and arena.y1 == pytest.approx(220, abs=3)


def _walking_pose(n: int = 300, fps: float = 25.0, seed: int = 0, parts: tuple[str, ...] = PARTS) -> Pose:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / fps
    centre = np.stack([200 + 80 * np.cos(t), 200 + 80 * np.sin(t)], axis=1)
    heading = np.stack([-np.sin(t), np.cos(t)], axis=1)
    offsets = {"midbody": 0.0, "snout": 30.0, "tailbase": -30.0, "leftear": 20.0}
    xy = np.stack([centre + offsets[p] * heading for p in parts], axis=1) + rng.normal(0, 0.5, (n, len(parts), 2))
    return Pose(Path("walk.csv"), parts, xy, np.ones((n, len(parts))))


def _first_column(groups: dict[str, int], name: str) -> int:
    names = list(groups)
    return sum(groups[k] for k in names[: names.index(name)])


def test_pose_v2_shape_groups_and_determinism() -> None:
    pose = _walking_pose()
    backbone = PoseFeatures()
    features = backbone.embed_pose(pose, 25.0)
    groups = backbone.groups(pose.bodyparts)
    assert features.shape == (pose.n_frames, backbone.output_dim_for(pose.bodyparts)) == (300, sum(groups.values()))
    assert features.dtype == np.float32 and np.isfinite(features).all()
    np.testing.assert_array_equal(features, backbone.embed_pose(pose, 25.0))
    # 4 windows x 4 statistics of every motion signal
    assert groups["multiscale"] == groups["motion"] * 16
    assert PoseFeatures(arena="none").groups(pose.bodyparts)["arena"] == 0


def test_pose_v1_is_still_reachable_and_unchanged_in_size() -> None:
    assert BACKBONES.get("pose_v1") is PoseFeaturesV1
    backbone = PoseFeaturesV1()
    # positions and speeds (4P), distances, centre speed and turning, 2 segments (midbody-snout, tailbase-midbody)
    assert backbone.output_dim_for(PARTS) == 4 * 3 + 3 + 2 + 2 * 2
    assert backbone.describe()["weights"] == "pose-features-v1"
    assert PoseFeatures().describe()["weights"] == "pose-features-v2.1"


def test_pose_v2_speeds_follow_px_per_cm() -> None:
    pose = _walking_pose()
    backbone = PoseFeatures(arena="none")
    plain = backbone.embed_pose(pose, 25.0)
    cm = backbone.embed_pose(pose, 25.0, VideoGeometry(px_per_cm=2.0))
    start = backbone.groups(PARTS)["posture"]
    speeds = slice(start, start + len(PARTS) + 1)
    # body = 60 px: body lengths/s * 60 / 2 = cm/s
    np.testing.assert_allclose(np.expm1(cm[:, speeds]), np.expm1(plain[:, speeds]) * 30.0, rtol=0.05)


def test_pose_v2_motion_is_multiscale_and_separates_still_from_moving() -> None:
    moving = _walking_pose()
    xy = np.repeat(moving.xy[:1], moving.n_frames, axis=0) + np.random.default_rng(3).normal(0, 0.5, moving.xy.shape)
    still = Pose(moving.path, moving.bodyparts, xy, moving.likelihood)
    backbone = PoseFeatures(arena="none")
    groups = backbone.groups(PARTS)
    start = groups["posture"] + groups["motion"]
    n_signals = groups["motion"]
    # the 2 s window mean of the centre's log speed (signal index P = 3)
    col = start + 3 * 4 * n_signals + 0 * n_signals + len(PARTS)
    assert backbone.embed_pose(moving, 25.0)[:, col].min() > backbone.embed_pose(still, 25.0)[:, col].max()
    # displacement: the centre's net speed over every window, 0.2 s included, where one-frame jitter
    # (0.5 px per frame at 25 fps) is as fast as the walk's slowest moments
    start = _first_column(groups, "displacement")
    assert groups["displacement"] == 4 * (len(PARTS) + 1)
    for w in range(4):
        col = start + w * (len(PARTS) + 1) + len(PARTS)
        assert backbone.embed_pose(moving, 25.0)[:, col].min() > backbone.embed_pose(still, 25.0)[:, col].max()


def test_pose_v2_uses_the_manifest_arena() -> None:
    pose = _walking_pose()
    backbone = PoseFeatures()
    estimated = backbone.embed_pose(pose, 25.0)
    given = backbone.embed_pose(pose, 25.0, VideoGeometry(arena=(0.0, 0.0, 1000.0, 1000.0)))
    groups = backbone.groups(PARTS)
    assert not np.allclose(estimated, given)
    # walls 100+ px away from a circle of radius 80 round (200, 200) in a 1000 px box: >= 1.5 body lengths
    wall = _first_column(groups, "arena")
    assert given[:, wall].min() > 1.5
    assert estimated[:, wall].min() < 0.2  # the estimated box is the path's own extent


def test_track_backbone_from_blobs() -> None:
    n, fps = 400, 25.0
    t = np.arange(n) / fps
    blobs = np.zeros((n, len(BLOB_COLUMNS)))
    blobs[:, 0], blobs[:, 1] = 200 + 80 * np.cos(t), 200 + 80 * np.sin(t)
    blobs[:, 2], blobs[:, 3], blobs[:, 4], blobs[:, 5] = 900.0, 60.0, 20.0, t % np.pi
    blobs[200:] = blobs[199]  # it stops
    blobs[50:55] = np.nan  # the tracker lost it for a moment
    backbone = TrackFeatures()
    features = backbone.embed_track(blobs, fps)
    assert features.shape == (n, backbone.output_dim) and np.isfinite(features).all()
    assert features[20:180, 0].min() > features[220:, 0].max()  # log speed: moving > still
    assert features[220:, 2].min() == 1.0  # immobile once stopped
    assert build_backbone("track").describe() == backbone.describe()
