"""The backbone contract: something that turns each frame of a video into a 1-D embedding.

Four families exist. An `ImageBackbone` sees mouse-centred crops (uint8 RGB, square, `input_size`
pixels) in batches. A `FlowBackbone` sees the same crops, in order, and embeds the optical flow
between consecutive ones (`flow.py`), or, as a clip backbone, each crop with the crops before it
through a 3D CNN (`clips.py`). A `PoseBackbone` sees the whole pose track of a video at once, because its
features (speeds, heading changes) need neighbouring frames. A `TrackBackbone` sees the whole path
of the built-in tracker's blob (for videos without pose), for the same reason. A fused backbone
(`fused.py`, named like `mobilenet_v2+track`) joins the embeddings of registered ones.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ...core.registry import Registry

if TYPE_CHECKING:
    from ..data.manifest import VideoGeometry
    from ..data.pose import Pose


class Backbone(ABC):
    """Common part: a registry name, an output size and an identity for the cache key."""

    name: ClassVar[str]  # set by BACKBONES.register
    kind: ClassVar[str]  # "image", "flow", "clip", "pose", "track" (or "fused"); BACKBONES.kind_of(name) reads it
    # False: computed features, which a run's --weights value passes by. True: `weights` (imagenet, none
    # or a file) is what `build_backbone(..., weights=)` rebuilds it from.
    has_weights: ClassVar[bool] = True

    @property
    @abstractmethod
    def weights_id(self) -> str:
        """Identifies the weights (or feature definition) so that a change invalidates the cache."""

    def describe(self) -> dict[str, Any]:
        """Everything about this backbone that changes its output; part of the cache key."""
        return {"backbone": self.name, "weights": self.weights_id}

    def head_params(self) -> dict[str, Any]:
        """Head parameters that follow from this backbone's output, set by the pipeline and never searched
        (a fused backbone's `input_blocks`; the clip network a finetune head trains)."""
        return {}


class ImageBackbone(Backbone):
    kind = "image"
    input_size: int  # square side in pixels that embed_images expects
    output_dim: int
    cache_dtype: ClassVar[Any] = np.float32  # what the cache stores its rows as (uint8: a clip network's crops)

    @abstractmethod
    def embed_images(self, images: np.ndarray) -> np.ndarray:
        """(B, input_size, input_size, 3) uint8 RGB -> (B, output_dim) float32."""

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "input_size": self.input_size}

    def check_images(self, images: np.ndarray) -> None:
        """ValueError unless `images` is a batch of this backbone's crops."""
        if images.ndim != 4 or images.shape[1:] != (self.input_size, self.input_size, 3):
            raise ValueError(f"{self.name} expects (B, {self.input_size}, {self.input_size}, 3) images, "
                             f"got {images.shape}")

    def start_video(self, heading: np.ndarray | None = None) -> None:
        """Called before the first batch of each video; a backbone that looks across frames resets here.
        `heading`: the animal's direction per frame (radians, image axes; `data.pose.heading_track`)
        when the crops are centred on pose that has the heading parts, else None."""

    def finish_video(self) -> np.ndarray:
        """Called after the last batch of each video: the embeddings still held back. `embed_images`
        returns one row per image, except for a backbone that reads frames after each one (a centred
        clip), whose last frames wait for later batches; the rows of a video, in order, are always
        its frames, in order."""
        return np.empty((0, self.output_dim), np.float32)


class FlowBackbone(ImageBackbone):
    """Crops in, in video order: each frame's embedding depends on the crops before it, so batches
    of one video must come in order, after `start_video`."""

    kind = "flow"

    @abstractmethod
    def start_video(self, heading: np.ndarray | None = None) -> None:
        """Forget the previous video's crops; keep this video's `heading` (see ImageBackbone)."""


class PoseBackbone(Backbone):
    kind = "pose"
    has_weights = False

    @abstractmethod
    def output_dim_for(self, bodyparts: tuple[str, ...]) -> int:
        """Embedding size for a pose file with these body parts."""

    @abstractmethod
    def embed_pose(self, pose: Pose, fps: float, geometry: VideoGeometry | None = None) -> np.ndarray:
        """A whole video's pose -> (n_frames, output_dim_for(pose.bodyparts)) float32.

        `geometry` is what the manifest says of the video's camera (px_per_cm, arena walls).
        """


class TrackBackbone(Backbone):
    kind = "track"
    has_weights = False
    output_dim: int

    @abstractmethod
    def embed_track(self, blobs: np.ndarray, fps: float, geometry: VideoGeometry | None = None) -> np.ndarray:
        """A whole video's tracker blobs ((T, len(BLOB_COLUMNS)), NaN rows where the tracker found
        nothing) -> (T, output_dim) float32."""


BACKBONES: Registry[Backbone] = Registry("backbone")
