"""Contract every registered backbone must meet (weights=None, tiny inputs)."""

from pathlib import Path

import numpy as np
import pytest

from mbr_bench.benchmark.backbones import (
    BACKBONES,
    FlowBackbone,
    ImageBackbone,
    PoseBackbone,
    TrackBackbone,
    build_backbone,
)
from mbr_bench.core.errors import WeightsError

# Reference output sizes (global average pooling), from the method's chapter 4.
REFERENCE_DIMS = {"resnet50v2": 2048, "inception_resnet_v2": 1536, "mobilenet_v2": 1280}


def _tiny(name):
    if BACKBONES.kind_of(name) in ("image", "flow", "clip"):
        return BACKBONES.build(name, weights="none", input_size=BACKBONES.get(name).min_input_size)
    if BACKBONES.kind_of(name) == "track":
        return BACKBONES.build(name)
    return BACKBONES.build(name, centre=("midbody",), heading=("tailbase", "snout"))


def _pose(n_frames=30, seed=0):
    from mbr_bench.benchmark.data.pose import Pose

    rng = np.random.default_rng(seed)
    parts = ("snout", "leftear", "rightear", "midbody", "tailbase")
    base = np.array([[20, 0], [12, -4], [12, 4], [0, 0], [-20, 0]], float)
    drift = np.cumsum(rng.normal(0, 1, (n_frames, 1, 2)), axis=0) + 100
    xy = base[None] + drift + rng.normal(0, 0.5, (n_frames, len(parts), 2))
    return Pose(Path("toy.csv"), parts, xy, np.full((n_frames, len(parts)), 0.99))


@pytest.mark.parametrize("name", BACKBONES.list())
def test_backbone_contract(name):
    backbone = _tiny(name)
    assert backbone.name == name
    assert backbone.kind == BACKBONES.kind_of(name) in ("image", "flow", "clip", "pose", "track")
    kinds = {"image": ImageBackbone, "flow": FlowBackbone, "clip": FlowBackbone, "pose": PoseBackbone,
             "track": TrackBackbone}
    assert isinstance(backbone, kinds[backbone.kind])
    assert isinstance(backbone.weights_id, str) and backbone.weights_id
    description = backbone.describe()
    assert description["backbone"] == name and description["weights"] == backbone.weights_id
    if isinstance(backbone, FlowBackbone):
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (4, backbone.input_size, backbone.input_size, 3), dtype=np.uint8)

        def whole_video():  # what the embedding pass collects: each batch's rows, then those held back
            backbone.start_video()
            return np.concatenate([backbone.embed_images(images), backbone.finish_video()])

        first = whole_video()
        assert first.shape == (4, backbone.output_dim) and first.dtype == np.float32 and np.isfinite(first).all()
        np.testing.assert_array_equal(first, whole_video())  # deterministic from a video's start
        assert np.abs(first[2] - first[1]).max() > 0  # frames that move differently embed differently
        with pytest.raises(ValueError, match="expects"):
            backbone.embed_images(images[:, :-1])
    elif isinstance(backbone, ImageBackbone):
        assert backbone.output_dim == REFERENCE_DIMS[name]
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (3, backbone.input_size, backbone.input_size, 3), dtype=np.uint8)
        first = backbone.embed_images(images)
        assert first.shape == (3, backbone.output_dim) and first.dtype == np.float32
        assert np.isfinite(first).all()
        np.testing.assert_array_equal(first, backbone.embed_images(images))  # deterministic
        # Different frames, different embeddings (relative: random-init activations can be tiny).
        assert np.abs(first[0] - first[1]).max() > 1e-3 * np.abs(first).max()
        # A frame's embedding does not depend on its batch neighbours.
        np.testing.assert_allclose(backbone.embed_images(images[:1])[0], first[0], rtol=1e-4, atol=1e-5)
        with pytest.raises(ValueError, match="expects"):
            backbone.embed_images(images[:, :-1])
    elif isinstance(backbone, TrackBackbone):
        blobs = np.column_stack([_pose().xy[:, 0, :], np.full((len(_pose().xy), 4), [500.0, 40.0, 15.0, 0.3])])
        features = backbone.embed_track(blobs, fps=10.0)
        assert features.shape == (len(blobs), backbone.output_dim)
        assert features.dtype == np.float32 and np.isfinite(features).all()
        np.testing.assert_array_equal(features, backbone.embed_track(blobs, fps=10.0))
        other = np.column_stack([_pose(seed=1).xy[:, 0, :], blobs[:, 2:]])
        assert not np.allclose(features, backbone.embed_track(other, fps=10.0))
    else:
        assert isinstance(backbone, PoseBackbone)
        pose = _pose()
        features = backbone.embed_pose(pose, fps=10.0)
        assert features.shape == (pose.n_frames, backbone.output_dim_for(pose.bodyparts))
        assert features.dtype == np.float32 and np.isfinite(features).all()
        np.testing.assert_array_equal(features, backbone.embed_pose(pose, fps=10.0))
        assert not np.allclose(features, backbone.embed_pose(_pose(seed=1), fps=10.0))


def test_weights_options(tmp_path):
    assert BACKBONES.build("mobilenet_v2", weights="none").weights_id == "none"
    assert BACKBONES.build("mobilenet_v2").weights_id == "imagenet"
    with pytest.raises(WeightsError, match="weights file not found"):
        BACKBONES.build("resnet50v2", weights=str(tmp_path / "missing.h5"))

    # A weights file saved from the same architecture loads, and its id follows its content.
    source = BACKBONES.build("mobilenet_v2", weights="none", input_size=32)
    saved = tmp_path / "mine.weights.h5"
    source.build().save_weights(saved)
    loaded = BACKBONES.build("mobilenet_v2", weights=str(saved), input_size=32)
    assert loaded.weights_id.startswith("file:")
    images = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_allclose(loaded.embed_images(images), source.embed_images(images), rtol=1e-5, atol=1e-6)

    garbage = tmp_path / "garbage.weights.h5"
    garbage.write_bytes(b"not weights")
    with pytest.raises(WeightsError, match="cannot load into mobilenet_v2"):
        BACKBONES.build("mobilenet_v2", weights=str(garbage), input_size=32).build()


def test_failed_imagenet_download_says_what_to_do(monkeypatch):
    import keras

    from mbr_bench.benchmark.backbones.keras_apps import keras_models_dir

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://example.invalid/weights.h5: None -- [Errno -3] no network")

    monkeypatch.setattr(keras.src.utils.file_utils, "get_file", offline)
    backbone = BACKBONES.build("resnet50v2", weights="imagenet", input_size=32)
    with pytest.raises(WeightsError) as info:
        backbone.build()
    message = str(info.value)
    assert "\n" not in message
    assert "could not get ImageNet weights" in message
    assert str(keras_models_dir()) in message and "KERAS_HOME" in message
    assert "--weights none" in message


def test_build_backbone_takes_pose_settings_from_the_dataset(tiny_dataset):
    from mbr_bench.benchmark.data.manifest import load_dataset

    dataset = load_dataset(tiny_dataset())
    backbone = build_backbone("pose", dataset)
    assert backbone.describe()["centre"] in (("midbody",), ["midbody"])
    assert build_backbone("mobilenet_v2", dataset, weights="none").weights_id == "none"
