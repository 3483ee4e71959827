"""Target 3: peak RSS embedding a 4x longer video stays within 1.2x of the 1x video's.

Each length runs in a fresh subprocess (`embed_child.py`), mobilenet_v2, the same batch size.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

MEMORY_TARGET = 1.2
SHORT_FRAMES = 192
BATCH = 32
CHILD = Path(__file__).with_name("embed_child.py")


def _run_child(dataset: Path, cache: Path) -> dict:
    done = subprocess.run(
        [sys.executable, str(CHILD), str(dataset), str(cache), str(BATCH)],
        capture_output=True, text=True, timeout=540, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_peak_rss_4x_video(benchmark, bench_dataset, tmp_path):
    short_path, long_path = bench_dataset(SHORT_FRAMES), bench_dataset(4 * SHORT_FRAMES)
    runs: dict[str, dict] = {}

    def both():
        runs["1x"] = _run_child(short_path, tmp_path / "cache1x")
        runs["4x"] = _run_child(long_path, tmp_path / "cache4x")

    benchmark.pedantic(both, rounds=1, iterations=1)
    short, long = runs["1x"], runs["4x"]
    assert (short["computed"], long["computed"]) == (SHORT_FRAMES, 4 * SHORT_FRAMES)

    ratio = long["vmhwm_kb"] / short["vmhwm_kb"]
    growth_short = short["vmhwm_kb"] - short["vmhwm_kb_before"]
    growth_long = long["vmhwm_kb"] - long["vmhwm_kb_before"]
    benchmark.extra_info.update(
        target="3. peak RSS, 4x longer video / 1x video (mobilenet_v2, fresh processes)",
        ratio=round(ratio, 4),
        comparison="<=",
        target_value=MEMORY_TARGET,
        note=(f"{SHORT_FRAMES} vs {4 * SHORT_FRAMES} frames 640x480, batch {BATCH}; VmHWM "
              f"{short['vmhwm_kb'] / 1024:.0f} MiB vs {long['vmhwm_kb'] / 1024:.0f} MiB; growth during "
              f"embed_video (after model build + trace) {growth_short / 1024:.0f} MiB vs {growth_long / 1024:.0f} MiB"),
        short=short,
        long=long,
    )
