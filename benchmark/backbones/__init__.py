"""Backbones: frame -> embedding. Importing this package registers every built-in backbone."""

from . import keras_apps, pose  # noqa: F401  (registration side effect)
from .base import BACKBONES, Backbone, ImageBackbone, PoseBackbone

__all__ = ["BACKBONES", "Backbone", "ImageBackbone", "PoseBackbone"]


def build_backbone(name: str, dataset=None, weights: str | None = None, **params):  # noqa: ANN001, ANN201
    """Build a registered backbone, taking pose settings (centre, heading) from `dataset` if given."""
    factory = BACKBONES.get(name)
    if dataset is not None and BACKBONES.kind_of(name) == "pose":
        params.setdefault("centre", dataset.crop.centre)
        params.setdefault("heading", dataset.heading)
        params.setdefault("min_likelihood", dataset.crop.min_likelihood)
    if weights is not None:
        params["weights"] = weights
    return factory(**params)


__all__ += ["build_backbone"]
