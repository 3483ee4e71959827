"""Temporal heads: frame embeddings -> per-frame behaviour probability. Importing registers them all.

TensorFlow is not imported here; it loads when a head builds or fits its model.
"""

from . import finetune, frame_mlp, lstm, tcn  # noqa: F401  (registration side effect)
from .base import HEADS, Head, load_head, with_pipeline_params

__all__ = ["HEADS", "Head", "load_head", "with_pipeline_params"]
