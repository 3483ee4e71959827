"""Target 8: what the flow stream costs per frame next to the RGB stream, and that a cached rerun computes no flow.

Run by `make bench`; skipped in the normal run (pyproject's --benchmark-skip). Each backbone embeds
the same synthetic open-field video into a fresh cache (decode, crop and its own compute): mobilenet_v2
(RGB), flow_hof with DIS (the CPU default) and with TV-L1 (the reference's method), flow_mobilenet_v2
(DIS); then the flow_hof entry is embedded again from the cache.
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

FRAMES = 300
TARGET = 1.0  # flow_hof (DIS) per frame, as a share of mobilenet_v2's: the motion stream costs no more than RGB


def _seconds(dataset, backbone, cache_dir) -> tuple[float, int]:
    hashing_module._hash_memo.clear()
    started = time.perf_counter()
    result = embed_video(dataset, dataset.videos[0], backbone, EmbeddingCache(cache_dir), progress=False)
    return time.perf_counter() - started, result.computed


@pytest.mark.benchmark(group="flow")
def test_flow_cost_per_frame(benchmark, tmp_path):
    manifest = generate(tmp_path / "data", n_videos=2, n_frames=FRAMES, seed=0, n_test=1)
    dataset = load_dataset(manifest)
    cnn = build_backbone("mobilenet_v2", dataset, weights=mobilenet_weights())
    flow_cnn = build_backbone("flow_mobilenet_v2", dataset, weights=mobilenet_weights())
    _seconds(dataset, cnn, tmp_path / "warm")  # trace the models once, outside timing
    _seconds(dataset, flow_cnn, tmp_path / "warm")
    backbones = {"mobilenet_v2": cnn, "flow_hof (DIS)": build_backbone("flow_hof", dataset),
                 "flow_hof (TV-L1)": build_backbone("flow_hof", dataset, method="tvl1"),
                 "flow_mobilenet_v2 (DIS)": flow_cnn}
    seconds = {}
    for k, (name, backbone) in enumerate(backbones.items()):
        seconds[name], computed = _seconds(dataset, backbone, tmp_path / f"c{k}")
        assert computed == FRAMES
    rerun, computed = _seconds(dataset, backbones["flow_hof (DIS)"], tmp_path / "c1")
    assert computed == 0  # the cached rerun computes no flow

    def flow_hof() -> float:
        return _seconds(dataset, build_backbone("flow_hof", dataset), tmp_path / f"round{time.perf_counter_ns()}")[0]

    benchmark.pedantic(flow_hof, rounds=3, iterations=1)
    per_frame = {name: s / FRAMES for name, s in seconds.items()}
    base = per_frame["mobilenet_v2"]
    benchmark.extra_info.update(
        target="8. flow_hof (DIS) embedding cost per frame / mobilenet_v2's (same video, fresh cache)",
        ratio=round(per_frame["flow_hof (DIS)"] / base, 4),
        comparison="<=",
        target_value=TARGET,
        note=(f"{FRAMES} frames 256x256, ms/frame incl. decode and crop: "
              + ", ".join(f"{name} {v * 1e3:.2f}" for name, v in per_frame.items())
              + f"; cached rerun of flow_hof {rerun * 1e3 / FRAMES:.3f} ms/frame, 0 frames computed"),
        ms_per_frame={name: round(v * 1e3, 4) for name, v in per_frame.items()},
    )
