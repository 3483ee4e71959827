"""One path from a dataset to what a pair trains and scores on: embeddings, labels, identity.

The search (`mbr-bench run`), the leaderboard's refit and `mbr-bench predict` all read videos
through here, so the three see a video the same way: embedded once through the cache and
memory-mapped, labels read with the embedding's frame count, and a content hash naming the files
the numbers came from.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..core.hashing import content_hash
from .backbones.base import Backbone
from .data.labels import read_labels
from .data.manifest import Dataset
from .features.cache import EmbeddingCache
from .features.embed import cache_key, embed_dataset


@dataclass
class EmbeddedVideos:
    """The embeddings of some videos of a dataset, and what computing them cost."""

    arrays: dict[str, np.ndarray]  # video id -> (frames, dim), memory-mapped from the cache
    seconds_per_frame: float  # mean embedding cost per frame (as recorded when computed)
    cache_keys: dict[str, str]  # video id -> cache key digest (provenance)
    computed: int  # frames embedded now; 0 when every video came from the cache
    # Head parameters the backbone sets, never searched: a fused backbone's part widths (`input_blocks`,
    # the head's block weights); a clip network's crops name the network the finetune head trains.
    head_params: dict[str, Any] = field(default_factory=dict)

    def n_frames(self) -> dict[str, int]:
        return {video_id: len(array) for video_id, array in self.arrays.items()}


def embed_videos(dataset: Dataset, backbone: Backbone, cache: EmbeddingCache, video_ids: list[str],
                 batch_size: int = 32, progress: bool = True, also_track: bool = False,
                 companions: Sequence[Backbone] = ()) -> EmbeddedVideos:
    """Embed `video_ids` of `dataset` with `backbone` (or read them from `cache`), memory-mapped.

    `also_track`, `companions`: what an image backbone's crop pass also records (the tracker's path,
    other image or flow backbones; see features.embed), so that each video is decoded once.
    """
    if not video_ids:
        return EmbeddedVideos({}, 0.0, {}, 0)
    results = embed_dataset(dataset, backbone, cache, batch_size=batch_size, video_ids=video_ids,
                            progress=progress, also_track=also_track, companions=companions)
    return EmbeddedVideos(
        arrays={r.video_id: np.load(r.path, mmap_mode="r") for r in results},
        seconds_per_frame=float(np.mean([r.compute_seconds_per_frame for r in results])),
        cache_keys={v: cache_key(dataset, dataset.video(v), backbone, dataset.crop).digest for v in video_ids},
        computed=sum(r.computed for r in results),
        head_params=backbone.head_params(),
    )


def read_video_labels(dataset: Dataset, video_ids: Iterable[str], n_frames: Mapping[str, int]) -> dict[str, pd.DataFrame]:
    """Every behaviour's 0/1 labels per video, one row per embedded frame."""
    labels = {}
    for video_id in video_ids:
        entry = dataset.video(video_id)
        labels[video_id] = read_labels(entry.labels, dataset.behaviours, n_frames=n_frames[video_id], fps=entry.fps)
    return labels


def behaviour_labels(labels: Mapping[str, pd.DataFrame], behaviour: str) -> dict[str, np.ndarray]:
    """One behaviour's labels per video, as int8 arrays."""
    return {video_id: frame[behaviour].to_numpy().astype(np.int8) for video_id, frame in labels.items()}


def dataset_hash(dataset: Dataset, split: str | None = None) -> str:
    """A short hash of the manifest's behaviours, splits and file contents (of one split if given).

    The whole dataset identifies a search's data; the train part is what its results depend on,
    and the test part what a refit's test scores depend on.
    """
    record = {
        v.id: [v.split, *(content_hash(p) if p else None for p in (v.video, v.pose, v.labels))]
        for v in dataset.videos if split is None or v.split == split
    }
    payload = json.dumps({"behaviours": list(dataset.behaviours), "videos": record}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
