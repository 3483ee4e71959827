"""Fused backbones: `mobilenet_v2+track`, `pose+mobilenet_v2`: registered backbones joined per frame.

Appearance and movement see different things; a head given both can use either. Each part is
embedded (and cached) on its own, exactly as when it runs alone, and the parts are joined per frame
as they are. How much each part counts is the head's business (`Head(input_blocks=...,
fusion_balance=...)`: the same total variance per part after the head's own input scaling, then a
searched balance), so that at the balance's ends a fused head is exactly its part's head. A fused
row's embedding cost is the sum of its parts'.

Models saved before the head weighed the parts z-scored each part with the training videos' column
statistics inside the join; their bundles keep them (`state`), and `load_state` makes the join
scale new videos as those models were trained.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from ...core.errors import ConfigError
from .base import Backbone

SEPARATOR = "+"


class FusedBackbone(Backbone):
    """Two or more registered backbones, embedded separately and joined per frame."""

    kind: ClassVar[str] = "fused"

    def __init__(self, parts: Sequence[Backbone]) -> None:
        if len(parts) < 2:
            raise ConfigError("a fused backbone joins two or more backbones, e.g. mobilenet_v2+track")
        self.parts = list(parts)
        self.name = SEPARATOR.join(part.name for part in self.parts)  # type: ignore[misc]
        # Per part: column mean, std; only for a model saved with a z-scoring join (see the module doc).
        self.scaling: list[tuple[np.ndarray, np.ndarray]] | None = None
        self.widths: tuple[int, ...] | None = None  # each part's columns, known once embedded

    @property
    def weights(self) -> str:
        """Each part's weights as a --weights value (`mobilenet_v2=imagenet`): what rebuilds this backbone."""
        return ",".join(f"{part.name}={part.weights}" for part in self.parts if part.has_weights) or "none"

    @property
    def weights_id(self) -> str:
        return SEPARATOR.join(part.weights_id for part in self.parts)

    def describe(self) -> dict[str, Any]:
        return {"backbone": self.name, "parts": [part.describe() for part in self.parts],
                "scaling": self.scaling_digest()}

    # -- the per-part scaling -----------------------------------------------------------------

    def head_params(self) -> dict[str, Any]:
        return {"input_blocks": self.part_widths()}

    def part_widths(self) -> tuple[int, ...]:
        """Each part's number of columns in the joined embedding (known once a video was joined)."""
        if self.widths is None:
            raise RuntimeError("join a video first")
        return self.widths

    def scaling_digest(self) -> str | None:
        if self.scaling is None:
            return None
        digest = hashlib.sha256()
        for mean, std in self.scaling:
            digest.update(np.ascontiguousarray(mean).tobytes())
            digest.update(np.ascontiguousarray(std).tobytes())
        return digest.hexdigest()[:16]

    def join(self, arrays: Sequence[np.ndarray], out: np.ndarray, chunk: int = 4096) -> None:
        """Write the parts of one video side by side into `out` (frames, sum of dims), in chunks;
        z-scored only with the scaling of a model saved so (see the module doc)."""
        n_frames = len(out)
        for start in range(0, n_frames, chunk):
            stop = min(start + chunk, n_frames)
            column = 0
            for k, array in enumerate(arrays):
                width = array.shape[1]
                values = np.asarray(array[start:stop])
                if self.scaling is not None:
                    mean, std = self.scaling[k]
                    values = (values - mean) / std
                out[start:stop, column : column + width] = values
                column += width

    def state(self) -> dict[str, np.ndarray]:
        """What a trained model must keep to embed new videos as the training videos were."""
        if self.scaling is None:
            return {}
        return {f"{kind}_{k}": values for k, (mean, std) in enumerate(self.scaling)
                for kind, values in (("mean", mean), ("std", std))}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.scaling = [(np.asarray(state[f"mean_{k}"], np.float32), np.asarray(state[f"std_{k}"], np.float32))
                        for k in range(len(self.parts))]


def part_names(name: str) -> list[str]:
    """`mobilenet_v2+track` -> ['mobilenet_v2', 'track']; a plain name -> [name]."""
    return name.split(SEPARATOR)
