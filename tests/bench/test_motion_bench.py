"""Target 7: what the motion backbones cost per frame next to mobilenet_v2, on the same video.

Run by `make bench`; skipped in the normal run (pyproject's --benchmark-skip). Each backbone embeds
the same synthetic open-field video (and its pose) into a fresh cache; the per-frame cost of pose
v2, pose v1 and track (on its own, and recorded in mobilenet_v2's crop pass) is reported as a
ratio of mobilenet_v2's.
"""

from __future__ import annotations

import time

import pytest

from mbr_bench.benchmark.backbones import build_backbone
from mbr_bench.benchmark.data.manifest import load_dataset
from mbr_bench.benchmark.data.synthetic import generate
from mbr_bench.benchmark.features.cache import EmbeddingCache
from mbr_bench.benchmark.features.embed import embed_video
from mbr_bench.core import hashing as hashing_module

from .conftest import mobilenet_weights

FRAMES = 600
TARGET = 0.10  # pose v2 per frame, as a share of mobilenet_v2's


def _seconds(dataset, backbone, cache_dir, also_track: bool = False) -> float:
    hashing_module._hash_memo.clear()
    started = time.perf_counter()
    result = embed_video(dataset, dataset.videos[0], backbone, EmbeddingCache(cache_dir), progress=False,
                         also_track=also_track)
    assert result.computed == FRAMES
    return time.perf_counter() - started


@pytest.mark.benchmark(group="motion")
def test_motion_backbone_cost_per_frame(benchmark, tmp_path):
    manifest = generate(tmp_path / "data", n_videos=2, n_frames=FRAMES, seed=0, n_test=1)
    dataset = load_dataset(manifest)
    cnn = build_backbone("mobilenet_v2", dataset, weights=mobilenet_weights())
    cnn.build()
    _seconds(dataset, cnn, tmp_path / "warm")  # trace the model once, outside timing
    seconds = {"mobilenet_v2": _seconds(dataset, cnn, tmp_path / "c1"),
               "mobilenet_v2 + track path in its pass": _seconds(dataset, cnn, tmp_path / "c2", also_track=True)}
    for name in ("pose", "pose_v1", "track"):
        seconds[name] = _seconds(dataset, build_backbone(name, dataset), tmp_path / f"c_{name}")

    def pose_v2() -> float:
        return _seconds(dataset, build_backbone("pose", dataset), tmp_path / f"round{time.perf_counter_ns()}")

    benchmark.pedantic(pose_v2, rounds=3, iterations=1)
    per_frame = {name: s / FRAMES for name, s in seconds.items()}
    base = per_frame["mobilenet_v2"]
    inline_track = per_frame["mobilenet_v2 + track path in its pass"] - base
    benchmark.extra_info.update(
        target="7. pose v2 embedding cost per frame / mobilenet_v2's (same video, fresh cache)",
        ratio=round(per_frame["pose"] / base, 5),
        comparison="<=",
        target_value=TARGET,
        note=(f"{FRAMES} frames 256x256: ms/frame mobilenet_v2 {base * 1e3:.2f}, pose v2 "
              f"{per_frame['pose'] * 1e3:.3f}, pose v1 {per_frame['pose_v1'] * 1e3:.3f}, track on its own "
              f"{per_frame['track'] * 1e3:.3f} (decodes the video), track path recorded in mobilenet_v2's crop "
              f"pass +{inline_track * 1e3:.3f}"),
        ms_per_frame={name: round(v * 1e3, 4) for name, v in per_frame.items()},
    )
