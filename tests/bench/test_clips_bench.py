"""Target 10: clips per second of the clip backbones, frozen (embedding) and finetune (training), and that a
training step costs what backpropagation should: at most 4x an inference pass of the same clips.

Run by `make bench`; skipped in the normal run. Each network runs in a child process (`clips_child.py`:
TensorFlow's default kernels, which the test session turns off). On a CPU the clips are tiny (64 px,
8 frames) so the suite stays minutes long; on a GPU they are the reference's, 16 frames at 224 px (I3D,
inflated MobileNetV2) and 112 px (R(2+1)D-18), in mixed precision where the GPU supports it. Random
weights: the arithmetic of a checkpoint's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

NETWORKS = ("i3d", "r2plus1d_18", "i3d_inflated_mobilenet_v2")
TARGET = 4.0  # seconds per trained clip / seconds per embedded clip, r2plus1d_18
CHILD = Path(__file__).with_name("clips_child.py")


def _measure(name: str) -> dict:
    env = {key: value for key, value in os.environ.items() if key != "TF_ENABLE_ONEDNN_OPTS"}
    result = subprocess.run([sys.executable, str(CHILD), name], capture_output=True, text=True, env=env, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.benchmark(group="clips")
def test_clips_per_second(benchmark):
    measured = {name: _measure(name) for name in NETWORKS}
    benchmark.pedantic(lambda: _measure("r2plus1d_18"), rounds=1, iterations=1)
    r21d = measured["r2plus1d_18"]
    benchmark.extra_info.update(
        target="10. r2plus1d_18: seconds per fine-tuned clip / seconds per embedded clip",
        ratio=round(r21d["frozen"] / r21d["finetune"], 3),
        comparison="<=",
        target_value=TARGET,
        note=(f"{r21d['device']}, random weights; clips/s frozen (embedding) / finetune (training, batch 8): "
              + ", ".join(f"{name} {m['frozen']:.1f} / {m['finetune']:.1f} ({m['clip_length']} x {m['input_size']} "
                          f"px, {m['n_params'] / 1e6:.1f} M params)" for name, m in measured.items())),
        frozen_clips_per_second={name: round(m["frozen"], 2) for name, m in measured.items()},
        finetune_clips_per_second={name: round(m["finetune"], 2) for name, m in measured.items()},
    )
