"""How large the mouse is in a video's pixels.

`crop.size` is in pixels, so a model trained on one camera sees another camera's mouse at another
scale: at twice the resolution its crop holds half the animal. The training videos' size of the
mouse is saved with the model, and `predict` scales each new video's crop by the ratio of the two,
so that the backbone sees the animal as it did in training.

A size is measured the way the crops are centred: with pose, the median distance between the two
`pose.heading` parts (back to front); with the built-in tracker, the median major axis of the blob.
Full-frame crops need no size: the whole frame is resized to the backbone's input either way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data.crops import BLOB_COLUMNS
from ..data.manifest import Dataset, VideoEntry
from ..data.pose import clean_pose, require_parts
from .cache import EmbeddingCache
from .embed import tracked_blobs

# Below this change a crop keeps its size: pose and blob sizes vary by a few percent between videos
# of one camera, and such a change does not alter what a backbone sees.
RESCALE_ABOVE = 0.10


@dataclass(frozen=True)
class AnimalSize:
    length_px: float  # median body length in the video's pixels
    measured_by: str  # e.g. "pose tailbase->snout" or "tracker blob major axis"

    def to_dict(self) -> dict[str, float | str]:
        return {"length_px": self.length_px, "measured_by": self.measured_by}


def measure_animal(dataset: Dataset, entry: VideoEntry, cache: EmbeddingCache) -> AnimalSize | None:
    """The mouse's length in `entry`'s pixels, measured as its crops are centred; None for full-frame crops
    or when nothing in the video measures it (no tracked heading part, no blob found)."""
    crop = dataset.crop
    if crop.mode == "full":
        return None
    if crop.mode == "pose":
        if entry.pose is None:
            return None
        pose = clean_pose(dataset.read_pose(entry), crop.min_likelihood)
        back, front = require_parts(pose, dataset.heading, "pose.heading")
        lengths = np.linalg.norm(pose.xy[:, front] - pose.xy[:, back], axis=1)
        how = f"pose {dataset.heading[0]}->{dataset.heading[1]}"
    else:
        if entry.video is None:
            return None
        lengths = tracked_blobs(dataset, entry, cache)[:, BLOB_COLUMNS.index("major")]
        how = "tracker blob major axis"
    lengths = lengths[np.isfinite(lengths) & (lengths > 0)]
    return AnimalSize(float(np.median(lengths)), how) if len(lengths) else None


def typical_size(sizes: list[AnimalSize | None]) -> AnimalSize | None:
    """The median over training videos, or None unless every video was measured the same way."""
    if not sizes or any(size is None for size in sizes) or len({s.measured_by for s in sizes}) != 1:
        return None
    return AnimalSize(float(np.median([s.length_px for s in sizes])), sizes[0].measured_by)
