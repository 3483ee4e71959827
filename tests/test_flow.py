"""Flow backbones: optical flow between consecutive crops, embedded in the same crop pass as RGB."""

from __future__ import annotations

import numpy as np
import pytest

from mbr_bench.benchmark.backbones import BACKBONES, build_backbone
from mbr_bench.benchmark.backbones.flow import CLIP_PIXELS, FlowComputer, FlowHOF, FlowMobileNetV2, tvl1_available
from mbr_bench.benchmark.data import crops as crops_module
from mbr_bench.benchmark.data.manifest import load_dataset
from mbr_bench.benchmark.features.cache import EmbeddingCache
from mbr_bench.benchmark.features.embed import cache_key, embed_dataset
from mbr_bench.core.errors import ConfigError


def _moving_square(n_frames: int, size: int, step: float, still_from: int | None = None) -> np.ndarray:
    """(n, size, size, 3) uint8: a textured square that moves `step` px right per frame (then stands)."""
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 255, (size // 2, size // 2), dtype=np.uint8)
    frames = np.full((n_frames, size, size, 3), 40, np.uint8)
    x = 4.0
    for t in range(n_frames):
        if still_from is None or t < still_from:
            x = 4.0 + step * t
        left = int(round(x))
        frames[t, size // 4 : size // 4 + size // 2, left : left + size // 2] = texture[..., None]
    return frames


@pytest.mark.parametrize("method", ["dis", *(["tvl1"] if tvl1_available() else [])])
def test_flow_measures_a_known_shift_and_is_clipped_and_scaled(method):
    flow = FlowComputer(method)
    frames = _moving_square(2, 64, 3.0)
    grey = frames[..., 0]
    field = flow(grey[0], grey[1])
    assert field.shape == (64, 64, 2) and field.dtype == np.float32
    inside = field[24:40, 16:28]  # inside the square, away from its edges
    assert np.median(inside[..., 0]) * CLIP_PIXELS == pytest.approx(3.0, abs=0.5)
    assert abs(np.median(inside[..., 1])) * CLIP_PIXELS < 0.5
    assert np.abs(field).max() <= 1.0


def test_tvl1_is_available_from_the_packaged_opencv():
    # The dependency is OpenCV's contrib wheel for this: the reference's flow method must work.
    assert tvl1_available()


def test_flow_hof_sees_motion_that_one_frame_cannot():
    backbone = FlowHOF(stack=3)
    moving = _moving_square(12, 64, 2.0)
    still_after = _moving_square(12, 64, 2.0, still_from=6)
    backbone.start_video()
    a = backbone.embed_images(moving)
    backbone.start_video()
    b = backbone.embed_images(still_after)
    assert a.shape == (12, backbone.output_dim) and np.isfinite(a).all()
    assert np.allclose(a[0], 0.0)  # the first frame has no previous one: no motion
    magnitude = backbone.grid ** 2 * backbone.bins + 2  # the mean magnitude column of the frame part
    assert a[1:, magnitude].min() > 3 * b[8:, magnitude].max()  # moving vs standing still
    # Frames 6.. of the still video look exactly like frame 6 of it: only flow tells them apart.
    np.testing.assert_array_equal(still_after[7], still_after[11])


def test_flow_hof_turns_the_mean_flow_into_the_animals_frame():
    """A square moving right: facing right it moves forward, facing down (+y) it moves to its left
    (lateral < 0 with lateral = -x sin + y cos), with no heading those columns stay 0; a frame whose
    heading is unknown (NaN) keeps the last known one."""
    backbone = FlowHOF(stack=1)
    frames = _moving_square(6, 64, 2.0)
    forward, lateral = backbone.frame_dim - 2, backbone.frame_dim - 1
    mean_x = backbone.frame_dim - 7

    def embed(heading):
        backbone.start_video(heading)
        return backbone.embed_images(frames)

    plain = embed(None)
    assert np.all(plain[:, [forward, lateral]] == 0) and plain[1:, mean_x].min() > 0
    right = embed(np.zeros(6))
    np.testing.assert_allclose(right[:, forward], plain[:, mean_x], atol=1e-6)
    assert np.abs(right[:, lateral]).max() < 0.2 * right[1:, forward].min()
    down = embed(np.array([np.pi / 2, np.nan, np.nan, np.pi / 2, np.pi / 2, np.pi / 2]))
    np.testing.assert_allclose(down[1:, lateral], -plain[1:, mean_x], atol=1e-6)
    assert np.abs(down[:, forward]).max() < 0.2 * plain[1:, mean_x].min()
    assert backbone.output_dim == 2 * (4 * 4 * 8 + 7)


def test_the_embedding_pass_gives_flow_the_pose_heading(synthetic, tmp_path):
    dataset = load_dataset(synthetic)
    flow = build_backbone("flow_hof", dataset)
    result = embed_dataset(dataset, flow, EmbeddingCache(tmp_path / "c"), progress=False)[0]
    features = np.load(result.path)
    forward = flow.frame_dim - 2
    assert dataset.crop.mode == "pose" and np.abs(features[:, forward]).max() > 0
    key = cache_key(dataset, dataset.videos[0], flow, dataset.crop)
    assert key.fields["heading"] == list(dataset.heading)


def test_flow_backbones_carry_state_across_batches_of_one_video_only():
    backbone = FlowHOF()
    frames = _moving_square(10, 64, 2.0)
    backbone.start_video()
    whole = backbone.embed_images(frames)
    backbone.start_video()
    in_parts = np.concatenate([backbone.embed_images(frames[:3]), backbone.embed_images(frames[3:])])
    np.testing.assert_allclose(in_parts, whole, rtol=1e-6, atol=1e-7)
    backbone.start_video()  # a new video: its first frame does not follow the last one
    np.testing.assert_array_equal(backbone.embed_images(frames[5:6])[0], np.zeros(backbone.output_dim, np.float32))


def test_cross_modality_initialisation_averages_the_first_kernel_over_rgb():
    rgb = build_backbone("mobilenet_v2", weights="imagenet")
    flow = FlowMobileNetV2(stack=2, input_size=96, weights="imagenet")
    model, source = flow.build(), rgb.build()
    kernel, rgb_kernel = model.get_layer("Conv1").get_weights()[0], source.get_layer("Conv1").get_weights()[0]
    assert kernel.shape == (3, 3, 4, 32)
    for channel in range(4):
        np.testing.assert_allclose(kernel[:, :, channel], rgb_kernel.mean(axis=2), rtol=1e-6)
    # Every later layer is the ImageNet one.
    np.testing.assert_array_equal(model.get_layer("block_1_expand").get_weights()[0],
                                  source.get_layer("block_1_expand").get_weights()[0])
    frames = _moving_square(4, 96, 2.0)
    flow.start_video()
    embeddings = flow.embed_images(frames)
    assert embeddings.shape == (4, 1280) and np.isfinite(embeddings).all()
    assert np.abs(embeddings[3] - embeddings[0]).max() > 1e-3


def test_flow_options_are_checked():
    with pytest.raises(ConfigError, match="use one of dis, tvl1"):
        FlowHOF(method="farneback")
    with pytest.raises(ConfigError, match="stack must be an integer >= 1"):
        FlowHOF(stack=0)
    with pytest.raises(ConfigError, match="grid must be an integer"):
        FlowHOF(grid=0)
    assert BACKBONES.kind_of("flow_hof") == BACKBONES.kind_of("flow_mobilenet_v2") == "flow"


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from mbr_bench.benchmark.data.synthetic import generate

    return generate(tmp_path_factory.mktemp("flow"), n_videos=2, n_frames=300, seed=5, n_test=1)


def test_rgb_and_flow_backbones_share_one_decode_pass_and_match_their_own(synthetic, tmp_path, monkeypatch):
    dataset = load_dataset(synthetic)
    passes: list[str] = []
    original = crops_module.iter_frames
    monkeypatch.setattr(crops_module, "iter_frames", lambda path, *a, **k: passes.append(str(path)) or original(path, *a, **k))
    shared = EmbeddingCache(tmp_path / "shared")
    rgb = build_backbone("mobilenet_v2", dataset, weights="none", input_size=64)
    flow = build_backbone("flow_hof", dataset)
    embed_dataset(dataset, rgb, shared, progress=False, companions=[rgb, flow])
    assert len(passes) == len(dataset.videos)  # one pass per video for both backbones
    results = embed_dataset(dataset, flow, shared, progress=False)
    assert all(r.computed == 0 for r in results) and len(passes) == len(dataset.videos)  # flow: cache hits
    assert all(r.compute_seconds_per_frame > 0 for r in results)
    # The same flow embedding as a pass of its own.
    alone = EmbeddingCache(tmp_path / "alone")
    embed_dataset(dataset, build_backbone("flow_hof", dataset), alone, progress=False)
    for entry in dataset.videos:
        key = cache_key(dataset, entry, flow, dataset.crop)
        np.testing.assert_array_equal(np.asarray(shared.load(key)), np.asarray(alone.load(key)))


@pytest.mark.slow
def test_movement_is_seen_by_flow_and_the_two_stream_row_fuses_it(tmp_path, capsys):
    """Locomotion (defined by movement only) through a real search and board: flow_hof clearly above
    mobilenet_v2 with the same head, and the default two-stream row at least as good as its best member."""
    import pandas as pd

    from mbr_bench.benchmark.cli import main
    from mbr_bench.benchmark.data.synthetic import generate

    from mbr_bench.benchmark.backbones.keras_apps import keras_models_dir

    offline = keras_models_dir() / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
    manifest = generate(tmp_path / "data", n_videos=5, n_frames=400, seed=2, n_test=1)
    space = tmp_path / "space.yaml"
    space.write_text("frame_mlp: {units: {choices: [32]}, sequence_length: 100, max_epochs: 10,"
                     " learning_rate: {fixed: 0.003}}\n")
    common = ["--workdir", str(tmp_path / "work"), "--cache-dir", str(tmp_path / "shared_cache"), "--no-progress"]
    assert main(["run", "--study", "locomotion", "--dataset", str(manifest), "--backbones", "mobilenet_v2", "flow_hof",
                 "--heads", "frame_mlp", "--n-trials", "1", "--search-space", str(space),
                 "--weights", "imagenet" if offline.is_file() else "none", *common]) == 0
    assert main(["leaderboard", "--study", "locomotion", "--refit-seeds", "1", "--out", str(tmp_path / "board"),
                 *common]) == 0
    printed = capsys.readouterr().out
    board = pd.read_csv(tmp_path / "board" / "leaderboard.csv")
    rows = {(row["backbone"], row["head"]): row for _, row in board.iterrows()}
    rgb, flow = rows["mobilenet_v2", "frame_mlp"], rows["flow_hof", "frame_mlp"]
    two_stream = rows["mobilenet_v2+frame_mlp & flow_hof+frame_mlp", "ensemble"]
    assert flow["cv_pr_auc_mean"] > rgb["cv_pr_auc_mean"] + 0.1, (flow["cv_pr_auc_mean"], rgb["cv_pr_auc_mean"])
    assert two_stream["cv_pr_auc_mean"] >= max(rgb["cv_pr_auc_mean"], flow["cv_pr_auc_mean"]) - 0.02
    assert two_stream["embedding_seconds_per_frame"] == pytest.approx(
        rgb["embedding_seconds_per_frame"] + flow["embedding_seconds_per_frame"], rel=1e-3)
    assert not (tmp_path / "work" / "cache").exists()  # run and leaderboard both used --cache-dir
    assert "test set evaluated 3 times" in printed  # two refits and the ensemble, each once
