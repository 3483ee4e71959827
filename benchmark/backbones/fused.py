"""Fused backbones: `mobilenet_v2+track`, `pose+mobilenet_v2`: registered backbones joined per frame.

Appearance and movement see different things; a head given both can use either. Each part is
embedded (and cached) on its own, exactly as when it runs alone, then z-scored per column with
the mean and standard deviation of the dataset's training videos, so that no part dominates by
its scale, and the parts are concatenated. The scaling uses no labels; it is fitted once per
dataset (training videos only), kept with a trained model, and is part of the fused embedding's
cache key. A fused row's embedding cost is the sum of its parts'.
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
        self.scaling: list[tuple[np.ndarray, np.ndarray]] | None = None  # per part: column mean, std

    @property
    def weights_id(self) -> str:
        return SEPARATOR.join(part.weights_id for part in self.parts)

    def describe(self) -> dict[str, Any]:
        return {"backbone": self.name, "parts": [part.describe() for part in self.parts],
                "scaling": self.scaling_digest()}

    # -- the per-part scaling -----------------------------------------------------------------

    def fit_scaling(self, part_arrays: Sequence[Sequence[np.ndarray]]) -> None:
        """Column mean and std of each part over the training videos (`part_arrays[k]`: part k's videos)."""
        scaling = []
        for arrays in part_arrays:
            count = sum(len(a) for a in arrays)
            total = sum(np.asarray(a, dtype=np.float64).sum(axis=0) for a in arrays)
            mean = total / count
            square = sum(((np.asarray(a, dtype=np.float64) - mean) ** 2).sum(axis=0) for a in arrays)
            std = np.sqrt(square / count)
            std[~(std > 1e-8)] = 1.0  # a constant column stays constant (0), never divides by ~0
            scaling.append((mean.astype(np.float32), std.astype(np.float32)))
        self.scaling = scaling

    def part_widths(self) -> tuple[int, ...]:
        """Each part's number of columns in the joined embedding (known once the scaling is fitted or loaded)."""
        if self.scaling is None:
            raise RuntimeError("fit_scaling first")
        return tuple(len(mean) for mean, _ in self.scaling)

    def scaling_digest(self) -> str | None:
        if self.scaling is None:
            return None
        digest = hashlib.sha256()
        for mean, std in self.scaling:
            digest.update(np.ascontiguousarray(mean).tobytes())
            digest.update(np.ascontiguousarray(std).tobytes())
        return digest.hexdigest()[:16]

    def join(self, arrays: Sequence[np.ndarray], out: np.ndarray, chunk: int = 4096) -> None:
        """Write the scaled parts of one video side by side into `out` (frames, sum of dims), in chunks."""
        if self.scaling is None:
            raise RuntimeError("fit_scaling first")
        n_frames = len(out)
        for start in range(0, n_frames, chunk):
            stop = min(start + chunk, n_frames)
            column = 0
            for array, (mean, std) in zip(arrays, self.scaling):
                width = array.shape[1]
                out[start:stop, column : column + width] = (np.asarray(array[start:stop]) - mean) / std
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
