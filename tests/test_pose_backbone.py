"""The `pose` backbone: shape, determinism, invariances, fps scaling, errors, registry."""

from pathlib import Path

import numpy as np
import pytest

from mbr_bench.benchmark.backbones.base import BACKBONES
from mbr_bench.benchmark.backbones.pose import PoseFeaturesV1 as PoseFeatures
from mbr_bench.benchmark.data.pose import Pose, read_pose
from mbr_bench.core.errors import ConfigError, DataError

PARTS = (
    "snout", "leftear", "rightear", "midbody", "tailbase",
    "leftforepaw", "rightforepaw", "lefthindpaw", "righthindpaw",
)
SKELETON = np.array(
    [[24, 0], [14, -5], [14, 5], [0, 0], [-22, 0], [10, -7], [10, 7], [-12, -8], [-12, 8]], dtype=float
)


def _pose(n_frames=60, seed=0, likelihood=0.97):
    """A mouse walking and turning: a rigid skeleton plus jitter, rotated and moved per frame."""
    rng = np.random.default_rng(seed)
    angle = np.cumsum(rng.normal(0, 0.15, n_frames))
    centre = np.cumsum(rng.normal(0, 2.0, (n_frames, 2)), axis=0) + 300
    cos, sin = np.cos(angle), np.sin(angle)
    rot = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)  # (T, 2, 2)
    body = SKELETON[None] + rng.normal(0, 1.0, (n_frames, len(PARTS), 2))
    xy = np.einsum("tij,tpj->tpi", rot, body) + centre[:, None, :]
    like = np.clip(rng.normal(likelihood, 0.02, (n_frames, len(PARTS))), 0, 1)
    return Pose(Path("synthetic.csv"), PARTS, xy, like)


def _with_xy(pose, xy):
    return Pose(pose.path, pose.bodyparts, xy, pose.likelihood)


def _layout(backbone, parts):
    """Column slices of each feature block, following the documented order."""
    p = len(parts)
    n_pairs = p * (p - 1) // 2
    n_segments = (backbone.output_dim_for(parts) - 4 * p - n_pairs - 2) // 2
    edges = np.cumsum([0, 2 * p, n_pairs, p, 1, 1, 2 * n_segments, p])
    names = ["positions", "distances", "part_speeds", "centre_speed", "turn", "segments", "likelihood"]
    return {name: slice(int(a), int(b)) for name, a, b in zip(names, edges[:-1], edges[1:])}


@pytest.fixture
def backbone():
    return PoseFeatures(centre=("midbody",), heading=("tailbase", "snout"))


def test_shape_dtype_finite_and_deterministic(backbone):
    pose = _pose()
    features = backbone.embed_pose(pose, fps=25.0)
    assert backbone.output_dim_for(PARTS) == 82
    assert features.shape == (pose.n_frames, 82)
    assert features.dtype == np.float32 and np.isfinite(features).all()
    np.testing.assert_array_equal(features, backbone.embed_pose(pose, fps=25.0))
    assert np.abs(features).max() <= 10.0
    layout = _layout(backbone, PARTS)
    assert layout["likelihood"].stop == 82
    np.testing.assert_allclose(features[:, layout["likelihood"]], pose.likelihood, atol=1e-6)


def test_rigid_motion_and_scale_leave_shape_features_unchanged(backbone):
    pose = _pose()
    base = backbone.embed_pose(pose, fps=30.0)
    theta = 0.7
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    moved = pose.xy @ rot.T + np.array([-150.0, 80.0])
    scaled = pose.xy * 2.0
    layout = _layout(backbone, PARTS)
    for xy in (moved, scaled):
        other = backbone.embed_pose(_with_xy(pose, xy), fps=30.0)
        # Positions, distances and angles, and (body lengths per second) speeds too.
        for block in ("positions", "distances", "segments", "part_speeds", "centre_speed", "turn"):
            np.testing.assert_allclose(other[:, layout[block]], base[:, layout[block]], atol=1e-5, err_msg=block)
    # Sanity: the features do see posture: bending the snout sideways changes the positions.
    bent = pose.xy.copy()
    bent[:, 0] += 5.0
    assert not np.allclose(backbone.embed_pose(_with_xy(pose, bent), fps=30.0)[:, layout["positions"]],
                           base[:, layout["positions"]], atol=1e-3)


def test_speeds_scale_with_fps(backbone):
    pose = _pose()
    layout = _layout(backbone, PARTS)
    slow = backbone.embed_pose(pose, fps=5.0)
    fast = backbone.embed_pose(pose, fps=10.0)
    for block in ("part_speeds", "centre_speed", "turn"):
        assert np.abs(slow[:, layout[block]]).max() > 0.01
        # Below the clip range, doubling fps doubles speeds and turning rates.
        keep = np.abs(fast[:, layout[block]]) < 9.9
        np.testing.assert_allclose(fast[:, layout[block]][keep], 2 * slow[:, layout[block]][keep], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(slow[:, layout["positions"]], fast[:, layout["positions"]])


def test_first_frame_uses_forward_difference(backbone):
    pose = _pose(n_frames=5)
    layout = _layout(backbone, PARTS)
    features = backbone.embed_pose(pose, fps=10.0)
    np.testing.assert_array_equal(features[0, layout["part_speeds"]], features[1, layout["part_speeds"]])


def test_low_likelihood_outlier_is_interpolated_and_clipped(backbone):
    pose = _pose()
    xy = pose.xy.copy()
    like = pose.likelihood.copy()
    xy[30, 0] = [1e6, -1e6]  # a wild snout detection...
    like[30, 0] = 0.01  # ...that DeepLabCut itself doubts
    features = backbone.embed_pose(Pose(pose.path, PARTS, xy, like), fps=30.0)
    assert np.isfinite(features).all() and np.abs(features).max() <= 10.0
    clean = backbone.embed_pose(pose, fps=30.0)
    layout = _layout(backbone, PARTS)
    # Far from the outlier, the features do not move.
    np.testing.assert_allclose(features[:25, layout["positions"]], clean[:25, layout["positions"]], atol=1e-6)


def test_missing_heading_and_centre_parts(backbone):
    pose = _pose()
    with pytest.raises(DataError, match=r"body part 'tail_base' not found; available: snout, .*; set pose\.heading"):
        PoseFeatures(centre=("midbody",), heading=("tail_base", "snout")).embed_pose(pose, fps=30.0)
    # The centre is the manifest's crop.centre (there is no pose.centre key): the message names that.
    with pytest.raises(DataError, match=r"body part 'centroid' not found; .*set crop\.centre in dataset\.yaml"):
        PoseFeatures(centre=("centroid",)).embed_pose(pose, fps=30.0)
    like = pose.likelihood.copy()
    like[:, PARTS.index("snout")] = 0.1
    with pytest.raises(DataError, match=r"'snout' is all-NaN / below likelihood 0\.6 everywhere"):
        backbone.embed_pose(Pose(pose.path, PARTS, pose.xy, like), fps=30.0)


def test_settings_validation_and_describe():
    with pytest.raises(ConfigError, match="pose features have no weights"):
        PoseFeatures(weights="imagenet")
    with pytest.raises(ConfigError, match="pose.heading"):
        PoseFeatures(heading=("snout",))
    with pytest.raises(ConfigError, match=r"crop\.min_likelihood is 1\.5"):
        PoseFeatures(min_likelihood=1.5)
    with pytest.raises(ConfigError, match=r"crop\.centre is \[\]"):
        PoseFeatures(centre=[])
    assert PoseFeatures(weights=None).weights_id == PoseFeatures(weights="none").weights_id == "pose-features-v1"
    described = PoseFeatures(centre=("leftear", "rightear"), min_likelihood=0.3).describe()
    assert described == {
        "backbone": "pose_v1", "weights": "pose-features-v1",
        "centre": ["leftear", "rightear"], "heading": ["tailbase", "snout"], "min_likelihood": 0.3,
    }


def test_real_openfield_file(openfield_pose):
    pose = read_pose(openfield_pose)
    backbone = PoseFeatures(centre=("leftear", "rightear", "tailbase"))
    features = backbone.embed_pose(pose, fps=30.0)
    assert backbone.output_dim_for(pose.bodyparts) == 28
    assert features.shape == (2330, 28) and features.dtype == np.float32
    assert np.isfinite(features).all()
    assert features.std(axis=0).min() > 0  # no dead feature


def test_registry_builds_pose_backbone():
    import mbr_bench.benchmark.backbones.pose  # noqa: F401  (registers 'pose')

    assert "pose" in BACKBONES
    from mbr_bench.benchmark.backbones.pose import PoseFeatures as PoseFeaturesV2

    built = BACKBONES.build("pose", centre=("leftear", "rightear", "tailbase"))
    assert isinstance(built, PoseFeaturesV2) and built.centre == ("leftear", "rightear", "tailbase")
