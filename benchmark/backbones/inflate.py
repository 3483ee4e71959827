"""I3D inflation: a 2D Keras ImageNet CNN turned into a 3D one that reads a clip (Carreira and
Zisserman 2017, "Quo Vadis, Action Recognition?", section 2.4).

Every k x k convolution (k > 1) becomes a t x k x k one whose kernel is the 2D kernel repeated t times
along time and divided by t; a depthwise convolution becomes a grouped 3D one the same way; a 1 x 1
convolution stays 1 x 1 x 1. Every other layer (normalisation, activation, addition, padding, pooling)
acts on each frame. Time is never strided, and is padded by repeating the clip's first and last frames
(zeros would change the border frames), so that on a clip of one repeated frame every 3D layer computes
what its 2D original computes on that frame: the inflated network, pooled over time and space, gives
the 2D network's output (the paper's "boring video" fixed point), and ImageNet features are where
training or a frozen embedding starts.

A t x k x k convolution is computed as t 2D convolutions of time-shifted frames, summed (`TemporalConv`):
the same arithmetic as Conv3D, and a depthwise one this way runs at 2D speed where TensorFlow's grouped
3D convolution on a CPU does not.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...core.errors import ConfigError

DEFAULT_TEMPORAL = 3  # I3D inflates N x N kernels to N x N x N; the 3 x 3 convolutions get 3 frames


def _keras() -> Any:
    import keras

    return keras


def _layer_classes() -> Any:
    keras = _keras()
    ops = keras.ops

    @keras.saving.register_keras_serializable(package="mbr_bench")
    class TemporalConv(keras.layers.Layer):
        """A t x k x k convolution (or depthwise convolution) over clips, computed as the sum of t 2D
        convolutions of time-shifted frames: TensorFlow's CPU kernels for grouped 3D convolutions are
        ~50x slower than this. Time is padded by repeating the edge frames; the output keeps every frame."""

        def __init__(self, filters: int, kernel_size: tuple[int, int], temporal: int, strides: tuple[int, int],
                     padding: str, dilation_rate: tuple[int, int] = (1, 1), depthwise: bool = False,
                     use_bias: bool = True, activation: Any = None, causal: bool = False, time_dilation: int = 1,
                     **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.filters, self.kernel_size, self.temporal = int(filters), tuple(kernel_size), int(temporal)
            self.causal, self.time_dilation = bool(causal), int(time_dilation)
            self.strides, self.padding, self.dilation_rate = tuple(strides), str(padding), tuple(dilation_rate)
            self.depthwise, self.use_bias = bool(depthwise), bool(use_bias)
            self.activation = keras.activations.get(activation)

        def build(self, input_shape: Any) -> None:
            channels = int(input_shape[-1])
            out = self.filters // channels if self.depthwise else self.filters  # depthwise: the multiplier
            self.kernel = self.add_weight(name="kernel", shape=(self.temporal, *self.kernel_size, channels, out))
            self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros") \
                if self.use_bias else None

        def call(self, inputs: Any) -> Any:
            height, width, channels = inputs.shape[2:]
            frames = ops.shape(inputs)[1]
            span = (self.temporal - 1) * self.time_dilation
            before = span if self.causal else (self.temporal - 1) // 2 * self.time_dilation
            after = span - before
            parts = [ops.repeat(inputs[:, :1], before, axis=1)] if before else []
            parts.append(inputs)
            if after:
                parts.append(ops.repeat(inputs[:, -1:], after, axis=1))
            padded = ops.concatenate(parts, axis=1) if len(parts) > 1 else inputs
            total = None
            for j in range(self.temporal):
                start = j * self.time_dilation
                shifted = ops.reshape(padded[:, start:start + frames], (-1, height, width, channels))
                if self.depthwise:
                    y = ops.depthwise_conv(shifted, self.kernel[j], self.strides, self.padding,
                                           dilation_rate=self.dilation_rate)
                else:
                    y = ops.conv(shifted, self.kernel[j], self.strides, self.padding, dilation_rate=self.dilation_rate)
                total = y if total is None else total + y
            if self.bias is not None:
                total = total + self.bias
            total = self.activation(total)
            return ops.reshape(total, (ops.shape(inputs)[0], frames, *total.shape[1:]))

        def compute_output_shape(self, input_shape: Any) -> Any:
            batch, frames, height, width, _ = input_shape
            spatial = []
            for size, k, stride, dilation in zip((height, width), self.kernel_size, self.strides, self.dilation_rate):
                if size is None:
                    spatial.append(None)
                elif self.padding == "same":
                    spatial.append(-(-size // stride))
                else:
                    spatial.append((size - dilation * (k - 1) - 1) // stride + 1)
            return (batch, frames, *spatial, self.filters)

        def get_config(self) -> dict:
            return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                    "temporal": self.temporal, "strides": self.strides, "padding": self.padding,
                    "dilation_rate": self.dilation_rate, "depthwise": self.depthwise, "use_bias": self.use_bias,
                    "activation": keras.activations.serialize(self.activation), "causal": self.causal,
                    "time_dilation": self.time_dilation}

    @keras.saving.register_keras_serializable(package="mbr_bench")
    class FramePooling(keras.layers.Layer):
        """Global pooling over each frame's space: (batch, frames, h, w, c) -> (batch, frames, c)."""

        def __init__(self, pooling: str = "average", **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.pooling = pooling

        def call(self, inputs: Any) -> Any:
            return ops.mean(inputs, axis=(2, 3)) if self.pooling == "average" else ops.max(inputs, axis=(2, 3))

        def compute_output_shape(self, input_shape: Any) -> Any:
            return (input_shape[0], input_shape[1], input_shape[-1])

        def get_config(self) -> dict:
            return {**super().get_config(), "pooling": self.pooling}

    return {"TemporalConv": TemporalConv, "FramePooling": FramePooling}


_LAYERS: dict[str, Any] = {}


def _layer(class_name: str, **config: Any) -> Any:
    """A new layer of one of the classes above (defined once Keras is imported)."""
    if not _LAYERS:
        _LAYERS.update(_layer_classes())
    return _LAYERS[class_name](**config)


def _conv_config(layer: Any, filters: int, depthwise: bool, time: dict) -> dict:
    config = layer.get_config()
    kernel = tuple(config["kernel_size"])
    return {"name": layer.name, "filters": filters, "kernel_size": kernel,
            "temporal": time["temporal"] if max(kernel) > 1 else 1, "strides": tuple(config["strides"]),
            "padding": config["padding"], "dilation_rate": tuple(config.get("dilation_rate", (1, 1))),
            "depthwise": depthwise, "use_bias": config["use_bias"], "activation": config.get("activation"),
            "causal": time["causal"], "time_dilation": time["time_dilation"]}


def inflate_layer(layer: Any, time: dict) -> Any:
    """The 3D counterpart of one 2D layer (unbuilt; `copy_inflated_weights` fills its weights). `time`:
    temporal (kernel frames), causal, time_dilation, pool_time (see `inflate`)."""
    keras = _keras()
    layers = keras.layers
    kind = type(layer).__name__
    config = layer.get_config()
    if kind == "Conv2D":
        return _layer("TemporalConv", **_conv_config(layer, config["filters"], False, time))
    if kind == "DepthwiseConv2D":
        channels = int(layer.kernel.shape[2])
        return _layer("TemporalConv", **_conv_config(layer, channels * config["depth_multiplier"], True, time))
    if kind == "BatchNormalization":
        return layers.BatchNormalization.from_config({**config, "axis": -1})
    if kind == "ZeroPadding2D":
        return layers.ZeroPadding3D(((0, 0), *[tuple(p) for p in config["padding"]]), name=layer.name)
    if kind in ("MaxPooling2D", "AveragePooling2D"):
        pool = getattr(layers, kind.replace("2D", "3D"))
        return pool(pool_size=(1, *config["pool_size"]), strides=(1, *config["strides"]),
                    padding=config["padding"], name=layer.name)
    if kind in ("GlobalAveragePooling2D", "GlobalMaxPooling2D"):
        if not time["pool_time"]:  # one vector per frame
            return _layer("FramePooling", pooling="average" if "Average" in kind else "max", name=layer.name)
        return getattr(layers, kind.replace("2D", "3D"))(name=layer.name)
    if kind in ("ReLU", "Activation", "Add", "Multiply", "Concatenate", "Dropout", "Rescaling", "Normalization",
                "Subtract", "Average", "Maximum", "LeakyReLU", "ELU", "Softmax"):
        return type(layer).from_config(config)
    raise ConfigError(f"cannot inflate layer {layer.name} ({kind}) to 3D: only convolutions, depthwise "
                      "convolutions, normalisation, padding, pooling and element-wise layers are supported")


def inflated_kernel(kernel: np.ndarray, temporal: int) -> np.ndarray:
    """A 2D kernel (kh, kw, in, out), or a depthwise one (kh, kw, channels, multiplier), repeated t times
    along a new leading time axis and divided by t."""
    return np.repeat(kernel[np.newaxis], temporal, axis=0) / temporal


def copy_inflated_weights(model_2d: Any, model_3d: Any) -> None:
    """Fill every inflated layer from its 2D original, matched by name."""
    by_name = {layer.name: layer for layer in model_3d.layers}
    for layer in model_2d.layers:
        weights = layer.get_weights()
        if not weights or layer.name not in by_name:
            continue
        target = by_name[layer.name]
        kind = type(layer).__name__
        if kind in ("Conv2D", "DepthwiseConv2D"):
            target.set_weights([inflated_kernel(weights[0], target.temporal), *weights[1:]])
        else:
            target.set_weights(weights)


def inflate(model_2d: Any, clip_length: int | None = None, temporal: int = DEFAULT_TEMPORAL, causal: bool = False,
            time_dilation: int = 1, pool_time: bool = True) -> Any:
    """A Keras 3D model reading (batch, frames, height, width, channels) clips, inflated from `model_2d`
    (a functional model on (height, width, channels) images) with its weights.

    `temporal`: frames of each inflated k x k kernel (k > 1). `causal`: each frame's output from it and the
    frames before it only (else centred). `time_dilation`: the kernels' frames are that many apart.
    `pool_time`: a final global pooling pools over time too (one vector per clip), else one per frame.
    """
    keras = _keras()
    for option, value in (("temporal", temporal), ("time_dilation", time_dilation)):
        if value < 1:
            raise ConfigError(f"inflation: {option} must be >= 1, got {value}")
    time = {"temporal": temporal, "causal": causal, "time_dilation": time_dilation, "pool_time": pool_time}
    height, width, channels = model_2d.input_shape[1:]
    clip = keras.Input(shape=(clip_length, height, width, channels), name="clip")
    model_3d = keras.models.clone_model(model_2d, input_tensors=clip,
                                        clone_function=lambda layer: inflate_layer(layer, time))
    copy_inflated_weights(model_2d, model_3d)
    return model_3d
