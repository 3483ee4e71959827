"""Flow backbones: what moves inside the mouse crop, from optical flow between consecutive crops.

The second reference method gets its accuracy from two streams, RGB appearance and TV-L1 optical
flow. A flow backbone sees the same mouse-centred crops as an image backbone, in order, and embeds
each frame t from the flow between crops t-1 and t (zero for a video's first frame):

* the flow is computed on grey crops of `input_size` pixels, by DIS (OpenCV's fast CPU method, the
  default) or TV-L1 (the reference's; OpenCV contrib), chosen with `method`;
* each component is clipped to [-CLIP_PIXELS, CLIP_PIXELS] pixels per frame and divided by
  CLIP_PIXELS, as the I3D/two-stream recipe that the reference follows truncates to [-20, 20] and
  rescales to [-1, 1];
* `flow_hof`: histograms of flow orientation weighted by magnitude over a grid of the crop, plus the
  mean flow (in image axes, and in the animal's frame, forward and lateral, when the crops are
  centred on pose with the heading parts), and magnitude statistics, for frame t and averaged over
  the `stack` frames up to t; training-free and cheap;
* `flow_mobilenet_v2`: the last `stack` flow fields stacked as 2 x `stack` channels through
  MobileNetV2, its first convolution's ImageNet kernel averaged over the RGB channels and repeated
  for each flow channel (cross-modality initialisation, as the two-stream papers do).

The crop follows the mouse, so the flow shows limbs, head and body moving relative to it (gait,
grooming strokes, rearing) rather than the walk across the arena; the tracker's path (`track`) and
pose dynamics (`pose`) carry that. A flow backbone keeps the previous crop between batches of one
video: `start_video` resets it, and the embedding pass calls it before each video.
"""

from __future__ import annotations

import os
import warnings
from collections import deque
from typing import Any, ClassVar

import cv2
import numpy as np

from ...core.errors import ConfigError, DataError
from .base import BACKBONES, FlowBackbone
from .keras_apps import MobileNetV2

CLIP_PIXELS = 20.0  # the two-stream recipe's truncation of flow, in pixels per frame
FLOW_METHODS = ("dis", "tvl1")
DEFAULT_METHOD = "dis"
FLOW_VERSION = "flow-v2"  # v2: flow_hof's mean flow in the animal's frame


def tvl1_available() -> bool:
    """Whether this OpenCV build has TV-L1 (the contrib modules)."""
    return hasattr(cv2, "optflow") and hasattr(cv2.optflow, "DualTVL1OpticalFlow_create")


class FlowComputer:
    """Dense flow between two grey uint8 images of one size, by `method` ('dis' or 'tvl1')."""

    def __init__(self, method: str = DEFAULT_METHOD) -> None:
        if method not in FLOW_METHODS:
            raise ConfigError(f"flow method {method!r}: use one of {', '.join(FLOW_METHODS)}")
        if method == "tvl1" and not tvl1_available():
            raise ConfigError("flow method 'tvl1' needs OpenCV's contrib modules (cv2.optflow), which this OpenCV "
                              "lacks; install opencv-contrib-python-headless in place of opencv-python-headless, "
                              "or use method 'dis'")
        self.method = method
        if method == "dis":
            self._engine = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        else:
            self._engine = cv2.optflow.DualTVL1OpticalFlow_create()

    def __call__(self, previous: np.ndarray, current: np.ndarray) -> np.ndarray:
        """(H, W) uint8 twice -> (H, W, 2) float32 flow in [-1, 1] (pixels per frame / CLIP_PIXELS)."""
        flow = self._engine.calc(previous, current, None)
        return np.clip(flow, -CLIP_PIXELS, CLIP_PIXELS, out=flow) / np.float32(CLIP_PIXELS)


def grey(images: np.ndarray) -> np.ndarray:
    """(B, H, W, 3) uint8 RGB -> (B, H, W) uint8 luminance."""
    return np.stack([cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY) for image in images])


def _held(angles: np.ndarray | None) -> np.ndarray | None:
    """Per-frame angles with each NaN replaced by the last known one (the first known before it);
    None when no angle is known."""
    if angles is None:
        return None
    angles = np.asarray(angles, np.float64)
    known = np.flatnonzero(np.isfinite(angles))
    if not len(known):
        return None
    last = np.maximum.accumulate(np.where(np.isfinite(angles), np.arange(len(angles)), -1))
    return angles[np.where(last < 0, known[0], last)]


class _FlowStream(FlowBackbone):
    """The part every flow backbone shares: the previous crop kept across batches, and the flow."""

    default_input_size: ClassVar[int]
    min_input_size: ClassVar[int] = 16

    def __init__(self, method: str = DEFAULT_METHOD, stack: int = 5, input_size: int | None = None) -> None:
        if isinstance(stack, bool) or not isinstance(stack, int) or stack < 1:
            raise ConfigError(f"backbone {self.name}: stack must be an integer >= 1 (frames of flow), got {stack!r}")
        self.input_size = int(input_size or self.default_input_size)
        if self.input_size < self.min_input_size:
            raise ConfigError(f"backbone {self.name}: input_size must be >= {self.min_input_size}, got {self.input_size}")
        self.flow = FlowComputer(method)
        self.method = method
        self.stack = stack
        self.start_video()

    def start_video(self, heading: np.ndarray | None = None) -> None:
        self._previous: np.ndarray | None = None
        self._recent: deque[Any] = deque(maxlen=self.stack)
        self._heading = _held(heading)
        self._frame = 0  # this video's frames embedded so far

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "method": self.method, "stack": self.stack, "clip_pixels": CLIP_PIXELS}

    def _flows(self, images: np.ndarray) -> np.ndarray:
        """(B, S, S, 3) uint8 crops, the next of this video -> (B, S, S, 2) float32 flow into each."""
        self.check_images(images)
        flows = np.zeros((*images.shape[:3], 2), np.float32)
        for index, current in enumerate(grey(images)):
            if self._previous is not None:
                flows[index] = self.flow(self._previous, current)
            self._previous = current
        return flows


@BACKBONES.register("flow_hof")
class FlowHOF(_FlowStream):
    """Histograms of flow orientation weighted by magnitude, on a `grid` x `grid` partition of the crop.

    Per frame: for each cell, `bins` orientation bins (the magnitude falling in each, averaged over
    the cell's pixels); then the mean flow (x, y), the mean, standard deviation and 90th percentile
    of the magnitude over the crop, and the mean flow in the animal's frame (forward, lateral; 0
    when no heading is known). Those per-frame values, then their mean over the last `stack` frames
    (fewer at a video's start). No weights, no TensorFlow.
    """

    default_input_size = 64
    has_weights = False
    preprocessing = "grey crop -> flow from the previous crop (clip +-20 px, / 20) -> orientation histograms"

    def __init__(self, method: str = DEFAULT_METHOD, stack: int = 5, grid: int = 4, bins: int = 8,
                 input_size: int | None = None, weights: str | None = "none") -> None:
        if weights is not None and str(weights).lower() not in ("none", "imagenet"):
            raise ConfigError(f"backbone 'flow_hof' got weights={weights!r}; it has no weights, leave weights unset")
        for option, value in (("grid", grid), ("bins", bins)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"backbone flow_hof: {option} must be an integer >= 1, got {value!r}")
        self.grid, self.bins = grid, bins
        super().__init__(method, stack, input_size)
        if self.input_size < grid:
            raise ConfigError(f"backbone flow_hof: input_size {self.input_size} is smaller than grid {grid}")
        self.frame_dim = grid * grid * bins + 7
        self.output_dim = 2 * self.frame_dim

    @property
    def weights_id(self) -> str:
        return FLOW_VERSION

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "grid": self.grid, "bins": self.bins}

    def embed_images(self, images: np.ndarray) -> np.ndarray:
        flows = self._flows(images)
        out = np.empty((len(images), self.output_dim), np.float32)
        for index, flow in enumerate(flows):
            features = self._frame_features(flow)
            if self._heading is not None and self._frame < len(self._heading):
                angle = self._heading[self._frame]
                mean_x, mean_y = features[-7], features[-6]
                features[-2] = mean_x * np.cos(angle) + mean_y * np.sin(angle)  # forward
                features[-1] = -mean_x * np.sin(angle) + mean_y * np.cos(angle)  # lateral
            self._frame += 1
            self._recent.append(features)
            out[index, : self.frame_dim] = features
            out[index, self.frame_dim :] = np.mean(self._recent, axis=0)
        return out

    def _frame_features(self, flow: np.ndarray) -> np.ndarray:
        magnitude, angle = cv2.cartToPolar(np.ascontiguousarray(flow[..., 0]), np.ascontiguousarray(flow[..., 1]))
        size = flow.shape[0]
        edges = np.linspace(0, size, self.grid + 1).round().astype(int)
        cell_row = np.searchsorted(edges, np.arange(size), side="right") - 1
        which_bin = np.minimum((angle * (self.bins / (2 * np.pi))).astype(int), self.bins - 1)
        index = (cell_row[:, None] * self.grid + cell_row[None, :]) * self.bins + which_bin
        hist = np.bincount(index.ravel(), weights=magnitude.ravel(), minlength=self.grid * self.grid * self.bins)
        cell_pixels = np.bincount((cell_row[:, None] * self.grid + cell_row[None, :]).ravel(),
                                  minlength=self.grid * self.grid)
        hist = hist / np.repeat(cell_pixels, self.bins)
        summary = [flow[..., 0].mean(), flow[..., 1].mean(), magnitude.mean(), magnitude.std(),
                   np.percentile(magnitude, 90), 0.0, 0.0]  # the last two: forward, lateral (embed_images)
        return np.concatenate([hist, summary]).astype(np.float32)


@BACKBONES.register("flow_mobilenet_v2")
class FlowMobileNetV2(_FlowStream):
    """MobileNetV2 on the last `stack` flow fields (2 x `stack` channels), globally average-pooled.

    weights: "imagenet" (cross-modality initialisation from the ImageNet RGB weights: the first
    convolution's kernel averaged over its 3 input channels and repeated for each flow channel),
    "none" (random), or a file of RGB MobileNetV2 weights, converted the same way.
    """

    default_input_size = 112
    min_input_size = 32
    output_dim = MobileNetV2.output_dim
    preprocessing = "grey crop -> flow from the previous crop (clip +-20 px, / 20), last `stack` stacked as channels"

    def __init__(self, method: str = DEFAULT_METHOD, stack: int = 5, input_size: int | None = None,
                 weights: str | os.PathLike | None = "imagenet") -> None:
        super().__init__(method, stack, input_size)
        # Convolution weights do not depend on the input size: take them from the 224-px ImageNet model
        # (the one whose weights Keras always has), whatever size the flow is embedded at.
        self._rgb = MobileNetV2(weights=weights if weights is not None else "none")
        self._model: Any = None
        self._forward: Any = None

    @property
    def weights(self) -> str:
        return self._rgb.weights

    @property
    def weights_id(self) -> str:
        return f"{FLOW_VERSION}:{self._rgb.weights_id}"

    def build(self) -> Any:
        """The flow network, once: MobileNetV2 with 2 x `stack` input channels."""
        if self._model is not None:
            return self._model
        from ..tf_runtime import import_tensorflow

        tf = import_tensorflow()
        import keras

        channels = 2 * self.stack
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "usually expects 1 or 3 input channels": flow has 2 per frame
            model = keras.applications.MobileNetV2(include_top=False, weights=None, pooling="avg",
                                                   input_shape=(self.input_size, self.input_size, channels))
        if self._rgb.weights != "none":
            rgb = self._rgb.build()
            for layer, source in zip(model.layers, rgb.layers, strict=True):
                weights = source.get_weights()
                if layer.name == "Conv1":  # (3, 3, 3, 32) -> (3, 3, channels, 32): mean over RGB, repeated
                    kernel = weights[0].mean(axis=2, keepdims=True)
                    weights = [np.repeat(kernel, channels, axis=2), *weights[1:]]
                layer.set_weights(weights)
            self._rgb._model = self._rgb._forward = None  # only its weights were needed

        @tf.function(input_signature=[tf.TensorSpec([None, self.input_size, self.input_size, channels], tf.float32)],
                     reduce_retracing=True)
        def forward(stacks: Any) -> Any:
            return model(stacks, training=False)  # flow is already in [-1, 1], MobileNetV2's input range

        self._model, self._forward = model, forward
        return model

    def embed_images(self, images: np.ndarray) -> np.ndarray:
        flows = self._flows(images)
        stacks = np.zeros((len(images), self.input_size, self.input_size, 2 * self.stack), np.float32)
        for index, flow in enumerate(flows):
            self._recent.append(flow)
            recent = list(self._recent)
            # Oldest first; at a video's start the missing older fields are zero (no motion seen yet).
            for slot, field in enumerate(recent, start=self.stack - len(recent)):
                stacks[index, :, :, 2 * slot : 2 * slot + 2] = field
        self.build()
        embeddings = self._forward(stacks).numpy().astype(np.float32, copy=False)
        if not np.isfinite(embeddings).all():
            raise DataError(f"{self.name}: non-finite embeddings; check the weights file")
        return embeddings

    def parameter_count(self) -> int:
        return int(self.build().count_params())
