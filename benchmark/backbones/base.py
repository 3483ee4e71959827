"""The backbone contract: something that turns each frame of a video into a 1-D embedding.

Two families exist. An `ImageBackbone` sees mouse-centred crops (uint8 RGB, square, `input_size`
pixels) in batches. A `PoseBackbone` sees the whole pose track of a video at once, because its
features (speeds, heading changes) need neighbouring frames.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ...core.registry import Registry

if TYPE_CHECKING:
    from ..data.pose import Pose


class Backbone(ABC):
    """Common part: a registry name, an output size and an identity for the cache key."""

    name: ClassVar[str]  # set by BACKBONES.register
    kind: ClassVar[str]  # "image" or "pose"; BACKBONES.kind_of(name) reads it

    @property
    @abstractmethod
    def weights_id(self) -> str:
        """Identifies the weights (or feature definition) so that a change invalidates the cache."""

    def describe(self) -> dict[str, Any]:
        """Everything about this backbone that changes its output; part of the cache key."""
        return {"backbone": self.name, "weights": self.weights_id}


class ImageBackbone(Backbone):
    kind = "image"
    input_size: int  # square side in pixels that embed_images expects
    output_dim: int

    @abstractmethod
    def embed_images(self, images: np.ndarray) -> np.ndarray:
        """(B, input_size, input_size, 3) uint8 RGB -> (B, output_dim) float32."""

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "input_size": self.input_size}


class PoseBackbone(Backbone):
    kind = "pose"

    @abstractmethod
    def output_dim_for(self, bodyparts: tuple[str, ...]) -> int:
        """Embedding size for a pose file with these body parts."""

    @abstractmethod
    def embed_pose(self, pose: Pose, fps: float) -> np.ndarray:
        """A whole video's pose -> (n_frames, output_dim_for(pose.bodyparts)) float32."""


BACKBONES: Registry[Backbone] = Registry("backbone")
