"""Clip backbones (benchmark/backbones/clips.py): the frozen I3D stream, streamed over a video."""

from __future__ import annotations

import numpy as np
import pytest

from mbr_bench.benchmark.backbones import BACKBONES
from mbr_bench.core.errors import ConfigError

SIZE = 32


def _clip(**options):
    return BACKBONES.build("i3d_inflated_mobilenet_v2", **{"weights": "none", "input_size": SIZE, **options})


def _video(n: int, seed: int = 0) -> np.ndarray:
    """A bright square moving across a dark crop: frames that differ."""
    frames = np.full((n, SIZE, SIZE, 3), 20, np.uint8)
    for t in range(n):
        x = (3 * t + seed) % (SIZE - 8)
        frames[t, 8:16, x:x + 8] = 230
    return frames


def _embed(backbone, frames: np.ndarray, batch: int) -> np.ndarray:
    """A video's embeddings as the embedding pass collects them: every batch's rows, then the held-back ones."""
    backbone.start_video()
    rows = [backbone.embed_images(frames[i:i + batch]) for i in range(0, len(frames), batch)]
    return np.concatenate([*rows, backbone.finish_video()])


def test_batches_do_not_change_the_embedding():
    """The backbone keeps its context between batches: a video embeds the same in any batch size."""
    backbone = _clip(clip_length=4)
    frames = _video(11)
    whole = _embed(backbone, frames, 11)
    np.testing.assert_allclose(_embed(backbone, frames, 3), whole, rtol=1e-4, atol=1e-5 * np.abs(whole).max())
    np.testing.assert_allclose(_embed(backbone, frames, 1), whole, rtol=1e-4, atol=1e-5 * np.abs(whole).max())
    # MobileNetV2: the first convolution and 17 depthwise ones, each reading a frame before and after.
    assert backbone.context == (18, 18)
    assert backbone.clip_offsets == [-2, -1, 0, 1]  # the reference's clip, centred: 8 before, 7 after at 16
    backbone.start_video()
    assert len(backbone.embed_images(_video(30))) == 30 - 18 - 1  # the rest waits for the frames after them
    assert len(backbone.finish_video()) == 18 + 1


def test_a_still_video_embeds_as_the_2d_network_and_motion_changes_it(imagenet_mobilenet_v2):
    # ImageNet weights (random ones give activations near 1e-12, and another draw in each network).
    flat = BACKBONES.build("mobilenet_v2", weights="imagenet", input_size=SIZE)
    backbone = _clip(clip_length=4, clip_stride=2, weights="imagenet")
    frames = _video(6)
    still = np.repeat(frames[:1], 6, axis=0)
    expected = flat.embed_images(frames[:1])[0]
    np.testing.assert_allclose(_embed(backbone, still, 4), np.tile(expected, (6, 1)), rtol=1e-4,
                               atol=1e-4 * np.abs(expected).max())
    moving = _embed(backbone, frames, 6)
    assert np.abs(moving[-1] - flat.embed_images(frames[-1:])[0]).max() > 1e-3 * np.abs(expected).max()


def test_clip_options_are_checked_and_keyed():
    with pytest.raises(ConfigError, match="clip_length must be an integer >= 1"):
        _clip(clip_length=0)
    assert _clip(clip_length=8).describe() != _clip(clip_length=16).describe()  # another cache entry
    assert _clip().describe()["clip_length"] == 16 and _clip().describe()["clip_stride"] == 1  # the reference's


@pytest.mark.parametrize("name", ["r2plus1d_18", "i3d"])
def test_clip_networks_embed_each_frame_from_its_own_clip(name):
    """Frame t's row is the network's output on the clip around t (the video's ends standing in beyond
    it), whatever the batches the crops come in."""
    backbone = BACKBONES.build(name, weights="none", input_size=SIZE, clip_length=4)
    frames = _video(11)
    whole = _embed(backbone, frames, 11)
    assert whole.shape == (11, backbone.output_dim)
    np.testing.assert_allclose(_embed(backbone, frames, 3), whole, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_embed(backbone, frames, 1), whole, rtol=1e-5, atol=1e-6)
    network = backbone.build()
    for t, clip in ((0, [0, 0, 0, 1]), (5, [3, 4, 5, 6]), (10, [8, 9, 10, 10])):  # 2 before, 1 after
        alone = np.asarray(network(frames[clip][np.newaxis].astype(np.float32), training=False))[0]
        np.testing.assert_allclose(whole[t], alone, rtol=1e-5, atol=1e-6)
    assert np.abs(whole[5] - whole[6]).max() > 1e-6  # clips of a moving square differ


def test_clip_networks_want_a_converted_checkpoint(tmp_path):
    from mbr_bench.core.errors import WeightsError

    with pytest.raises(WeightsError, match=r"i3d: Keras ships no ImageNet or Kinetics weights for it; convert a "
                                           r"Kinetics checkpoint once \(python -m mbr_bench.benchmark.backbones."
                                           r"kinetics i3d CHECKPOINT OUT.npz\)"):
        BACKBONES.build("i3d")  # the default weights, imagenet, do not exist for it
    with pytest.raises(WeightsError, match="gone.npz: weights file not found for backbone r2plus1d_18"):
        BACKBONES.build("r2plus1d_18", weights=tmp_path / "gone.npz")
    # A file saved from the same network loads, and names the cache entry by its content.
    random = BACKBONES.build("r2plus1d_18", weights="none", input_size=SIZE, clip_length=4)
    random.build().save_weights(tmp_path / "r21d.weights.h5")
    loaded = BACKBONES.build("r2plus1d_18", weights=tmp_path / "r21d.weights.h5", input_size=SIZE, clip_length=4)
    assert loaded.weights_id.startswith("clip-v1:file:") and loaded.describe() != random.describe()
    frames = _video(6)
    np.testing.assert_allclose(_embed(loaded, frames, 6), _embed(random, frames, 6), rtol=1e-5, atol=1e-6)
