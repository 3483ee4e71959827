"""ImageNet CNN backbones from keras.applications, with global average pooling (as the reference).

TensorFlow is imported only when a model is built, so listing backbones stays fast.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .base import BACKBONES, ImageBackbone
from ...core.hashing import file_sha256
from ...core.errors import ConfigError, WeightsError


def keras_models_dir() -> Path:
    """Where Keras looks for (and downloads) application weights.

    Keras fixes this when it is imported ($KERAS_HOME, else ~/.keras), so ask it once it is loaded.
    """
    import sys

    if "keras" in sys.modules:
        from keras.src.backend.config import keras_home

        return Path(keras_home()) / "models"
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"


class KerasApplicationBackbone(ImageBackbone):
    """A keras.applications CNN without its classifier, pooled to one vector per image.

    Args:
        weights: "imagenet" (Keras downloads and caches the file), "none" (random init, for
            tests and timing) or a path to a weights file saved from the same architecture.
        input_size: square input side in pixels; ImageNet weights exist for `default_input_size`.
        batch_size: frames per forward pass.
    """

    application: ClassVar[str]  # class name in keras.applications
    preprocess_module: ClassVar[str]  # keras.applications submodule whose preprocess_input to use
    preprocessing: ClassVar[str]  # human-readable, shown by `mbr-bench backbones`
    default_input_size: ClassVar[int]
    min_input_size: ClassVar[int]
    output_dim: int

    def __init__(self, weights: str | os.PathLike | None = "imagenet", input_size: int | None = None) -> None:
        self.input_size = int(input_size or self.default_input_size)
        if self.input_size < self.min_input_size:
            raise ConfigError(
                f"backbone {self.name}: input_size must be >= {self.min_input_size}, got {self.input_size}"
            )
        self.weights = self._normalise_weights(weights)
        self._weights_id = (
            f"file:{file_sha256(self.weights)[:16]}" if self.weights not in ("imagenet", "none") else self.weights
        )
        self._model: Any = None
        self._forward: Any = None

    def _normalise_weights(self, weights: str | os.PathLike | None) -> str:
        if weights is None or str(weights).lower() == "none":
            return "none"
        if str(weights).lower() == "imagenet":
            return "imagenet"
        path = Path(weights)
        if not path.is_file():
            raise WeightsError(
                f"{path}: weights file not found for backbone {self.name}; "
                "pass --weights imagenet, --weights none, or the path of a saved weights file"
            )
        return str(path)

    @property
    def weights_id(self) -> str:
        return self._weights_id

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "preprocessing": self.preprocessing}

    def build(self) -> Any:
        """Create the Keras model once (downloads ImageNet weights on first use)."""
        if self._model is not None:
            return self._model
        from ..tf_runtime import import_tensorflow

        tf = import_tensorflow()
        import keras

        constructor = getattr(keras.applications, self.application)
        preprocess = getattr(keras.applications, self.preprocess_module).preprocess_input
        shape = (self.input_size, self.input_size, 3)
        try:
            model = constructor(
                include_top=False,
                weights="imagenet" if self.weights == "imagenet" else None,
                input_shape=shape,
                pooling="avg",
            )
        except Exception as error:  # keras raises bare Exception for URL fetch failures
            if self.weights != "imagenet":
                raise
            raise WeightsError(
                f"{self.name}: could not get ImageNet weights ({str(error).splitlines()[0][:160]}); "
                f"connect to the internet once so Keras can cache them in {keras_models_dir()}, "
                "or copy the weights file there (set KERAS_HOME to use another folder), "
                "or pass --weights none / --weights PATH"
            ) from error
        if self.weights not in ("imagenet", "none"):
            try:
                model.load_weights(self.weights)
            except Exception as error:
                raise WeightsError(
                    f"{self.weights}: cannot load into {self.name} ({str(error).splitlines()[0][:160]}); "
                    f"the file must hold weights of keras.applications.{self.application}(include_top=False)"
                ) from error

        # Preprocessing lives inside the traced function so that callers hand over uint8 crops.
        @tf.function(
            input_signature=[tf.TensorSpec([None, *shape], tf.uint8)],
            reduce_retracing=True,
        )
        def forward(images: Any) -> Any:
            return model(preprocess(tf.cast(images, tf.float32)), training=False)

        self._model, self._forward = model, forward
        return model

    def embed_images(self, images: np.ndarray) -> np.ndarray:
        self.check_images(images)
        self.build()
        return self._forward(np.ascontiguousarray(images, dtype=np.uint8)).numpy().astype(np.float32, copy=False)

    def parameter_count(self) -> int:
        return int(self.build().count_params())


@BACKBONES.register("resnet50v2")
class ResNet50V2(KerasApplicationBackbone):
    application = "ResNet50V2"
    preprocess_module = "resnet_v2"
    preprocessing = "scale to [-1, 1] (x / 127.5 - 1)"
    default_input_size = 224
    min_input_size = 32
    output_dim = 2048


@BACKBONES.register("inception_resnet_v2")
class InceptionResNetV2(KerasApplicationBackbone):
    application = "InceptionResNetV2"
    preprocess_module = "inception_resnet_v2"
    preprocessing = "scale to [-1, 1] (x / 127.5 - 1)"
    default_input_size = 299
    min_input_size = 75
    output_dim = 1536


@BACKBONES.register("mobilenet_v2")
class MobileNetV2(KerasApplicationBackbone):
    application = "MobileNetV2"
    preprocess_module = "mobilenet_v2"
    preprocessing = "scale to [-1, 1] (x / 127.5 - 1)"
    default_input_size = 224
    min_input_size = 32
    output_dim = 1280
