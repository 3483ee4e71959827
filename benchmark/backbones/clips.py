"""Clip backbones: a 3D CNN reads each frame together with the frames around it (the second reference's
I3D and R(2+1)D streams). Two modes: frozen (this module: clip embeddings are cached like frame
embeddings, then any head) and finetune (`heads/finetune.py`: the network and a classification layer
trained end to end per fold, on the crops `ClipCrops` caches).

`i3d` (Inception-v1 inflated, `i3d.py`) and `r2plus1d_18` (`r2plus1d.py`) are the reference's networks,
with their temporal strides: each frame's embedding is the network's pooled output on its own clip
(`ClipNetworkBackbone`), so a frame costs one clip's forward pass. No ImageNet or Kinetics weights ship
with Keras for them: a Kinetics checkpoint is converted once (`kinetics.py`) and passed as --weights.

`i3d_inflated_mobilenet_v2` is MobileNetV2 with its ImageNet weights inflated to 3D (`inflate.py`: every
3 x 3 kernel repeated over 3 frames and divided by 3). No layer strides over time, so the network is a
temporal convolution over the whole video: frame t's pooled feature map depends on frames t - R .. t + R,
R its reach in frames (18 for MobileNetV2), and a frame goes through the network once, not once per
clip it belongs to (16 times at the reference's 16-frame clips). The embedding of frame t is its clip's:
the mean of the pooled feature maps of the `clip_length` frames around t, every `clip_stride`-th (the
reference's 16: 8 before t, t, 7 after; the temporal kernels are dilated by the stride, so the network
sees those frames only). Beyond a video's ends its first and last frames stand in, so on a clip of one
repeated frame the embedding is the 2D network's (the inflation's fixed point).

A centred clip needs frames after t: the crops arrive in order (the embedding pass calls `start_video`
before each video and `finish_video` after it), a batch returns the embeddings of the frames whose
clip it completes, and `finish_video` the rest. Between batches the backbone keeps the crops the next
frames' maps need and the pooled maps their clips need.

Why centred: causal clips (frames up to t only) lag the behaviour by ~2.5 s at 10 fps, and a wall-rearing
LSTM on them scored CV PR-AUC 0.37 on the synthetic open field against 0.97 centred.
"""

from __future__ import annotations

import functools
import os
from abc import abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ...core.errors import ConfigError, DataError, WeightsError
from ...core.hashing import file_sha256
from .base import BACKBONES, FlowBackbone, ImageBackbone
from .i3d import OUTPUT_DIM as I3D_DIM
from .inflate import DEFAULT_TEMPORAL, inflate
from .keras_apps import MobileNetV2
from .kinetics import convert_command
from .r2plus1d import OUTPUT_DIM as R2PLUS1D_DIM

CLIP_VERSION = "clip-v1"
CROPS_VERSION = "crops-v1"


def centred_offsets(clip_length: int, clip_stride: int) -> list[int]:
    """A clip relative to its frame t: 8 frames before t and 7 after at 16 frames, as the reference."""
    back = clip_length // 2
    return [(k - back) * clip_stride for k in range(clip_length)]


def gather_clips(frames: np.ndarray, centres: np.ndarray, offsets: list[int], first: int = 0,
                 end: int | None = None) -> np.ndarray:
    """(N, L, ...) clips of `frames` around each centre (video frame numbers; `frames[0]` is video frame
    `first`); frames beyond the video's ends (0 and `end`, its last frame) are its first and last frame."""
    last = first + len(frames) - 1 if end is None else end
    index = np.clip(np.asarray(centres)[:, np.newaxis] + np.asarray(offsets)[np.newaxis], 0, last) - first
    return frames[index]


class ClipStream(FlowBackbone):
    """What every clip backbone shares: crops in video order, each frame embedded from its centred clip of
    `clip_length` frames `clip_stride` apart, the network's input crops for the finetune head (`crops`)."""

    kind = "clip"
    default_input_size: ClassVar[int]
    min_input_size = 32

    def _set_shape(self, clip_length: int, clip_stride: int, input_size: int | None, **more: int) -> None:
        """Check and set the clip length, stride and crop size (ConfigError naming the option)."""
        for option, value in (("clip_length", clip_length), ("clip_stride", clip_stride), *more.items()):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"backbone {self.name}: {option} must be an integer >= 1, got {value!r}")
        self.clip_length, self.clip_stride = clip_length, clip_stride
        self.input_size = int(input_size or self.default_input_size)
        if self.input_size < self.min_input_size:
            raise ConfigError(f"backbone {self.name}: input_size must be >= {self.min_input_size}, "
                              f"got {self.input_size}; pass {self.min_input_size} or more")

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "clip_length": self.clip_length, "clip_stride": self.clip_stride}

    @functools.cached_property
    def clip_offsets(self) -> list[int]:
        """The clip of frame t, relative to t: 8 frames before it and 7 after at 16 frames, as the reference."""
        return centred_offsets(self.clip_length, self.clip_stride)

    def crops(self) -> ClipCrops:
        """The backbone whose rows are this network's input crops (what the finetune head trains on)."""
        return ClipCrops(self)

    @abstractmethod
    def build(self) -> Any:
        """The frozen mode's Keras model, built once."""

    @abstractmethod
    def network(self, clip_length: int | None = None, pretrained: bool = True) -> Any:
        """The finetune mode's network: (batch, clip_length, size, size, 3) pixels in [0, 255] -> (batch,
        features). `pretrained`: start from the weights (else random: the caller loads a fine-tuned model's own)."""

    def parameter_count(self) -> int:
        return int(self.build().count_params())


class ClipBackbone(ClipStream):
    """A 2D ImageNet CNN inflated to a 3D one, embedding each frame from its centred clip."""

    default_input_size = 224
    output_dim = MobileNetV2.output_dim
    preprocessing = "scale to [-1, 1]; inflated 3D network over the video; mean over each frame's centred clip"

    def __init__(self, clip_length: int = 16, clip_stride: int = 1, temporal: int = DEFAULT_TEMPORAL,
                 input_size: int | None = None, weights: str | os.PathLike | None = "imagenet") -> None:
        self._set_shape(clip_length, clip_stride, input_size, temporal=temporal)
        self.temporal = temporal
        # The 2D network whose weights are inflated: ImageNet's, none, or a file (its errors are its own).
        self._flat = MobileNetV2(weights=weights if weights is not None else "none", input_size=self.input_size)
        self._model: Any = None
        self._forward: Any = None
        self.start_video()

    @property
    def weights_id(self) -> str:
        return f"{CLIP_VERSION}:{self._flat.weights_id}"

    @property
    def weights(self) -> str:
        return self._flat.weights

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "temporal": self.temporal}

    def start_video(self, heading: np.ndarray | None = None) -> None:
        self._crops: np.ndarray | None = None  # preprocessed crops still needed, from video frame _crops_start
        self._crops_start = 0
        self._received = 0  # frames of this video handed in so far
        self._pooled: list[np.ndarray] = []  # the network's pooled features, from video frame _pooled_start
        self._pooled_start = 0
        self._emitted = 0  # frames whose embedding was returned

    def build(self) -> Any:
        """The inflated network, once: (1, frames, size, size, 3) in [-1, 1] -> (1, frames, 1280)."""
        if self._model is not None:
            return self._model
        from ..tf_runtime import import_tensorflow

        tf = import_tensorflow()
        flat = self._flat.build()
        model = inflate(flat, temporal=self.temporal, time_dilation=self.clip_stride, pool_time=False)
        self._flat._model = self._flat._forward = None  # only its weights were needed
        size = self.input_size

        @tf.function(input_signature=[tf.TensorSpec([1, None, size, size, 3], tf.float32)], reduce_retracing=True)
        def forward(frames: Any) -> Any:
            return model(frames, training=False)

        self._model, self._forward = model, forward
        return model

    @functools.cached_property
    def context(self) -> tuple[int, int]:
        """Frames the network reads before and after a frame (its receptive field; centred kernels)."""
        layers = [layer for layer in self.build().layers if hasattr(layer, "temporal")]
        before = sum((layer.temporal - 1) // 2 * layer.time_dilation for layer in layers)
        return before, sum((layer.temporal - 1) * layer.time_dilation for layer in layers) - before

    def network(self, clip_length: int | None = None, pretrained: bool = True) -> Any:
        """The finetune mode's network: (batch, clip_length, size, size, 3) pixels in [0, 255] -> (batch, 1280),
        MobileNetV2 inflated with its scaling in front and pooled over the clip's frames and space.
        `pretrained`: start from the weights (else random: the caller loads a fine-tuned model's own)."""
        from ..tf_runtime import import_tensorflow

        import_tensorflow()
        import keras

        flat = MobileNetV2(weights=self._flat.weights if pretrained else "none", input_size=self.input_size).build()
        inflated = inflate(flat, clip_length=clip_length, temporal=self.temporal, pool_time=True)
        clip = keras.Input((clip_length, self.input_size, self.input_size, 3), name="clip_pixels")
        scaled = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="scale")(clip)
        return keras.Model(clip, inflated(scaled), name=f"{self.name}_network")

    def embed_images(self, images: np.ndarray) -> np.ndarray:
        """The embeddings of the frames whose clip is complete: a frame's clip and receptive field reach
        frames after it, so the last ones of a batch wait for the next batch (or `finish_video`)."""
        self.check_images(images)
        before, after = self.context
        frames = images.astype(np.float32) / np.float32(127.5) - np.float32(1.0)  # MobileNetV2's input scaling
        if self._crops is None:  # a video's start: its first frame stands in for the frames before it
            self._crops, self._crops_start = np.repeat(frames[:1], before, axis=0), -before
        self._crops = np.concatenate([self._crops, frames])
        self._received += len(frames)
        self._pool(self._received - 1 - after)
        return self._emit(self._pooled_start + len(self._pooled) - 1 - max(self.clip_offsets))

    def finish_video(self) -> np.ndarray:
        """The last frames' embeddings, the video's last frame standing in for the frames after it."""
        if self._crops is None:
            return np.empty((0, self.output_dim), np.float32)
        _, after = self.context
        self._crops = np.concatenate([self._crops, np.repeat(self._crops[-1:], after, axis=0)])
        self._pool(self._received - 1)
        out = self._emit(self._received - 1)
        self.start_video()
        return out

    def _pool(self, last: int) -> None:
        """The network's pooled features of frames up to `last`, from the crops held."""
        first = self._pooled_start + len(self._pooled)
        if last < first:
            return
        before, after = self.context
        lo, hi = first - before - self._crops_start, last + after - self._crops_start + 1
        pooled = self._forward(self._crops[lo:hi][np.newaxis]).numpy()[0, before:before + last - first + 1]
        self._pooled.extend(pooled)
        keep = last + 1 - before - self._crops_start  # the next frame's context onward
        self._crops, self._crops_start = self._crops[keep:], self._crops_start + keep

    def _emit(self, last: int) -> np.ndarray:
        """Embeddings of frames `_emitted`..`last`: each the mean of its clip's pooled features (the
        video's first and last frames standing in beyond its ends)."""
        out = np.empty((max(last - self._emitted + 1, 0), self.output_dim), np.float32)
        end = self._pooled_start + len(self._pooled) - 1
        for row, t in enumerate(range(self._emitted, last + 1)):
            picks = [min(max(t + offset, 0), end) - self._pooled_start for offset in self.clip_offsets]
            out[row] = np.mean([self._pooled[k] for k in picks], axis=0)
        self._emitted = last + 1 if len(out) else self._emitted
        drop = max(self._emitted + min(self.clip_offsets), 0) - self._pooled_start
        if drop > 0:
            del self._pooled[:drop]
            self._pooled_start += drop
        if not np.isfinite(out).all():
            raise DataError(f"{self.name}: non-finite embeddings; check the weights file")
        return out


@BACKBONES.register("i3d_inflated_mobilenet_v2")
class InflatedMobileNetV2(ClipBackbone):
    """MobileNetV2's ImageNet weights inflated to 3D (I3D recipe); 16-frame clips at stride 1, as the reference."""


class ClipNetworkBackbone(ClipStream):
    """A 3D CNN built for clips (strides over time): frame t's embedding is the network's pooled output on
    the `clip_length` frames around t, every `clip_stride`-th (beyond the video's ends, its first and last
    frames stand in). Crops arrive in order; a batch returns the frames whose clip it completes, and
    `finish_video` the rest, as `ClipBackbone`."""

    builder: ClassVar[str]  # "module:function" building the network (input_size, clip_length) -> keras.Model
    clips_per_batch = 8  # clips per forward pass: bounds memory at 16 x 224 x 224 x 3 per clip

    def __init__(self, clip_length: int = 16, clip_stride: int = 1, input_size: int | None = None,
                 weights: str | os.PathLike | None = "imagenet") -> None:
        self._set_shape(clip_length, clip_stride, input_size)
        self.weights = self._normalise_weights(weights)
        self._weights_id = self.weights if self.weights == "none" else f"file:{file_sha256(self.weights)[:16]}"
        self._model: Any = None
        self._forward: Any = None
        self.start_video()

    @property
    def convert_hint(self) -> str:
        """The conversion command of its Kinetics checkpoint, for error messages."""
        return convert_command(self.name, source="CHECKPOINT")

    def _normalise_weights(self, weights: str | os.PathLike | None) -> str:
        if weights is None or str(weights).lower() == "none":
            return "none"
        if str(weights).lower() == "imagenet":
            raise WeightsError(
                f"{self.name}: Keras ships no ImageNet or Kinetics weights for it; convert a Kinetics checkpoint "
                f"once ({self.convert_hint}) and pass --weights OUT.npz, or --weights none for a random start")
        path = Path(weights)
        if not path.is_file():
            raise WeightsError(f"{path}: weights file not found for backbone {self.name}; pass a file converted "
                               f"with {self.convert_hint}, or --weights none")
        return str(path)

    @property
    def weights_id(self) -> str:
        return f"{CLIP_VERSION}:{self._weights_id}"

    def network(self, clip_length: int | None = None, pretrained: bool = True) -> Any:
        """(batch, clip_length, size, size, 3) pixels in [0, 255] -> (batch, features), with the weights file
        loaded when `pretrained` (else a random start: the caller loads a fine-tuned model's own)."""
        import importlib

        module, function = self.builder.split(":")
        model = getattr(importlib.import_module(module, __package__), function)(self.input_size, clip_length)
        if pretrained and self.weights != "none":
            from .kinetics import load_weights_file

            load_weights_file(model, self.weights)
        return model

    def build(self) -> Any:
        if self._model is not None:
            return self._model
        from ..tf_runtime import import_tensorflow

        tf = import_tensorflow()
        model = self.network(self.clip_length)
        shape = [None, self.clip_length, self.input_size, self.input_size, 3]

        @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32)], reduce_retracing=True)
        def forward(clips: Any) -> Any:
            return model(clips, training=False)

        self._model, self._forward = model, forward
        return model

    def start_video(self, heading: np.ndarray | None = None) -> None:
        self._frames: np.ndarray | None = None  # crops still needed, from video frame _first
        self._first = 0
        self._received = 0
        self._emitted = 0

    def embed_images(self, images: np.ndarray) -> np.ndarray:
        self.check_images(images)
        self._frames = images.copy() if self._frames is None else np.concatenate([self._frames, images])
        self._received += len(images)
        return self._emit(self._received - 1 - max(self.clip_offsets))

    def finish_video(self) -> np.ndarray:
        if self._frames is None:
            return np.empty((0, self.output_dim), np.float32)
        out = self._emit(self._received - 1)
        self.start_video()
        return out

    def _emit(self, last: int) -> np.ndarray:
        """Embeddings of frames `_emitted`..`last`, each from its clip: a clip reaches past the frames
        received only once the video has ended (`finish_video`), where its last frame stands in."""
        self.build()
        centres = np.arange(self._emitted, last + 1)
        rows = [np.empty((0, self.output_dim), np.float32)]
        for start in range(0, len(centres), self.clips_per_batch):
            clips = gather_clips(self._frames, centres[start:start + self.clips_per_batch], self.clip_offsets,
                                 self._first, self._received - 1)
            rows.append(self._forward(clips.astype(np.float32)).numpy())
        out = np.concatenate(rows).astype(np.float32, copy=False)
        self._emitted = max(self._emitted, last + 1)
        drop = max(self._emitted + min(self.clip_offsets), 0) - self._first  # frames no clip needs any more
        if drop > 0:
            self._frames, self._first = self._frames[drop:], self._first + drop
        if not np.isfinite(out).all():
            raise DataError(f"{self.name}: non-finite embeddings; check the weights file")
        return out


@BACKBONES.register("i3d")
class I3D(ClipNetworkBackbone):
    """I3D (Inception-v1 inflated, Carreira and Zisserman 2017), as the second reference: 224 px, 16-frame clips."""

    default_input_size = 224
    output_dim = I3D_DIM
    builder = ".i3d:build_i3d"
    preprocessing = "scale to [-1, 1]; I3D on each frame's centred clip, pooled over time and space"


@BACKBONES.register("r2plus1d_18")
class R2Plus1D18(ClipNetworkBackbone):
    """R(2+1)D-18 (Tran et al. 2018; torchvision's layout), as the second reference: 112 px, 16-frame clips."""

    default_input_size = 112
    output_dim = R2PLUS1D_DIM
    builder = ".r2plus1d:build_r2plus1d_18"
    preprocessing = "Kinetics mean and std; R(2+1)D-18 on each frame's centred clip, pooled over time and space"


class ClipCrops(ImageBackbone):
    """A clip backbone's input crops, as they are (uint8, flattened): what the finetune head trains the
    network on. Its cache entry is the crops at the network's input size, 4x smaller than float32."""

    cache_dtype = np.uint8

    def __init__(self, clip: ClipStream) -> None:
        self.clip = clip
        self.name = f"{clip.name}-crops"  # type: ignore[misc]  (not registered; a folder name of the cache)
        self.input_size = clip.input_size
        self.output_dim = clip.input_size * clip.input_size * 3

    @property
    def weights_id(self) -> str:
        return CROPS_VERSION

    @property
    def weights(self) -> str:
        """The network's weights (where fine-tuning starts), so a bundle rebuilds the same pair."""
        return self.clip.weights

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "network": self.clip.name}

    def embed_images(self, images: np.ndarray) -> np.ndarray:
        self.check_images(images)
        return np.ascontiguousarray(images, np.uint8).reshape(len(images), -1)

    def head_params(self) -> dict[str, Any]:
        """What the finetune head needs to build the network it trains: set by the pipeline, not searched."""
        return {"network": self.clip.name, "network_weights": self.clip.weights, "input_size": self.input_size}
