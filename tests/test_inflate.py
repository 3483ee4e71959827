"""I3D inflation of a 2D Keras CNN (benchmark/backbones/inflate.py): the paper's fixed point, on the
ImageNet MobileNetV2 where its weights are available offline, else on a small random one."""

from __future__ import annotations

import numpy as np
import pytest

from mbr_bench.benchmark.backbones.inflate import inflate, inflated_kernel
from mbr_bench.core.errors import ConfigError


def _mobilenet(size: int, weights: str | None):
    import keras

    return keras.applications.MobileNetV2(include_top=False, weights=weights, input_shape=(size, size, 3),
                                          pooling="avg")


def _frames(size: int, n: int = 2) -> np.ndarray:
    """Smooth random images in [-1, 1] (MobileNetV2's input range), unlike each other."""
    import cv2

    rng = np.random.default_rng(0)
    small = rng.uniform(-1, 1, (n, size // 8, size // 8, 3)).astype(np.float32)
    return np.stack([cv2.resize(image, (size, size), interpolation=cv2.INTER_CUBIC).clip(-1, 1) for image in small])


def _check_fixed_point(model_2d, size: int, clip_length: int = 4) -> None:
    model_3d = inflate(model_2d, clip_length=clip_length)
    frames = _frames(size)
    flat = model_2d.predict(frames, verbose=0)
    assert np.abs(flat[0] - flat[1]).max() > 0.1 * np.abs(flat).max()  # the frames give different features
    # A clip of one repeated frame: the inflated network's pooled output is the 2D network's.
    repeated = model_3d.predict(np.repeat(frames[:, None], clip_length, axis=1), verbose=0)
    np.testing.assert_allclose(repeated, flat, rtol=1e-4, atol=1e-4 * np.abs(flat).max())
    # A clip that changes over time is not any one of its frames: the kernels mix time.
    moving = model_3d.predict(np.stack([frames[0], frames[1]] * (clip_length // 2))[None], verbose=0)[0]
    assert min(np.abs(moving - flat[0]).max(), np.abs(moving - flat[1]).max()) > 1e-2 * np.abs(flat).max()
    # Every k x k kernel got a time axis; 1 x 1 kernels did not.
    temporal = {layer.name: layer.temporal for layer in model_3d.layers if hasattr(layer, "temporal")}
    assert temporal["Conv1"] == 3 and temporal["expanded_conv_depthwise"] == 3 and temporal["block_1_expand"] == 1


@pytest.mark.slow
def test_inflated_imagenet_mobilenet_v2_reproduces_the_2d_network_on_a_repeated_frame(imagenet_mobilenet_v2):
    _check_fixed_point(_mobilenet(224, "imagenet"), 224)


def test_inflation_keeps_the_2d_output_on_a_repeated_frame():
    model = _mobilenet(64, None)
    rng = np.random.default_rng(1)
    for layer in model.layers:  # statistics a trained network would have, so that features vary with the image
        if type(layer).__name__ == "BatchNormalization":
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([np.full_like(gamma, 1.0), rng.normal(0, 0.05, beta.shape), np.zeros_like(mean),
                               np.full_like(var, 0.05)])
    _check_fixed_point(model, 64)


def test_kernel_inflation_repeats_over_time_and_divides():
    kernel = np.arange(2 * 2 * 3 * 4, dtype=np.float32).reshape(2, 2, 3, 4)
    inflated = inflated_kernel(kernel, 3)
    assert inflated.shape == (3, 2, 2, 3, 4)
    np.testing.assert_allclose(inflated.sum(axis=0), kernel)
    np.testing.assert_allclose(inflated[1], kernel / 3)


def test_a_layer_without_a_3d_counterpart_is_named():
    import keras

    inputs = keras.Input((16, 16, 3))
    model = keras.Model(inputs, keras.layers.LSTM(4)(keras.layers.Reshape((16, 48))(inputs)))
    with pytest.raises(ConfigError, match=r"cannot inflate layer .* \(Reshape\)"):
        inflate(model, clip_length=2)
