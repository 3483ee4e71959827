"""Fixtures for the performance suite (`make bench`); the normal run skips these benchmarks.

Every benchmark measures a product path and its bare baseline side by side in the same process and
records their RATIO in `benchmark.extra_info` (absolute timings on a shared CI machine are noise):

    extra_info = {"target": ..., "ratio": measured, "comparison": ">=" | "<=", "target_value": ...,
                  "note": ..., **raw numbers}

`tests/bench/report.py` turns the saved pytest-benchmark JSON into a Markdown table from that alone.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import pytest

# 640x480-ish frames, so that decoding costs what it costs on real open-field recordings.
FRAME_W, FRAME_H = 640, 480


def write_bench_video(path: Path, n_frames: int, width: int = FRAME_W, height: int = FRAME_H, fps: float = 25.0) -> None:
    """A textured arena floor with a dark 'mouse' ellipse wandering over it (mp4v, BGR)."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    floor = rng.integers(150, 235, size=(height // 8, width // 8, 3), dtype=np.uint8)
    floor = cv2.resize(floor, (width, height), interpolation=cv2.INTER_LINEAR)
    floor = cv2.GaussianBlur(floor, (0, 0), 2)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    try:
        for i in range(n_frames):
            frame = floor.copy()
            x = int(width / 2 + width / 3 * np.cos(i / 23))
            y = int(height / 2 + height / 3 * np.sin(i / 17))
            cv2.ellipse(frame, (x, y), (38, 18), (i * 3) % 180, 0, 360, (40, 35, 30), -1)
            cv2.circle(frame, (x + 30, y), 7, (60, 50, 50), -1)
            writer.write(frame)
    finally:
        writer.release()


def write_bench_dataset(folder: Path, n_frames: int, video_id: str = "v1") -> Path:
    """A one-video dataset.yaml (crop mode full: decode + pad + resize, no pose file needed)."""
    import yaml

    (folder / "videos").mkdir(parents=True, exist_ok=True)
    write_bench_video(folder / "videos" / f"{video_id}.mp4", n_frames)
    manifest = {
        "name": f"bench_{n_frames}",
        "behaviours": ["rearing"],
        "crop": {"mode": "full"},
        "videos": [{"id": video_id, "video": f"videos/{video_id}.mp4"}],
    }
    path = folder / "dataset.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def bench_dataset(tmp_path_factory):
    """Factory (memoised per length): n_frames -> path of a one-video 640x480 dataset.yaml."""
    made: dict[int, Path] = {}

    def make(n_frames: int) -> Path:
        if n_frames not in made:
            made[n_frames] = write_bench_dataset(tmp_path_factory.mktemp(f"bench{n_frames}"), n_frames)
        return made[n_frames]

    return make


def mobilenet_weights() -> str:
    """"imagenet" where the offline weights file exists, else "none" (timing does not depend on weights)."""
    from mbr_bench.benchmark.backbones.keras_apps import keras_models_dir

    name = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
    return "imagenet" if (keras_models_dir() / name).is_file() else "none"


def _proc_value(path: str, key: str) -> str:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def pytest_benchmark_update_machine_info(config, machine_info):
    """CPU model, cores, RAM and library versions go into the JSON, so the report needs nothing else."""
    machine_info["cpu_model"] = _proc_value("/proc/cpuinfo", "model name")
    machine_info["cpu_count"] = os.cpu_count()
    try:
        machine_info["cpu_affinity"] = len(os.sched_getaffinity(0))
    except AttributeError:
        machine_info["cpu_affinity"] = os.cpu_count()
    machine_info["mem_total"] = _proc_value("/proc/meminfo", "MemTotal")
    machine_info["loadavg"] = Path("/proc/loadavg").read_text().strip() if Path("/proc/loadavg").exists() else "unknown"
    machine_info["python_version"] = platform.python_version()
    versions = {}
    for module in ("tensorflow", "keras", "numpy", "cv2"):
        try:
            versions[module] = __import__(module).__version__
        except Exception:  # noqa: BLE001 - a missing library is reported, not fatal
            versions[module] = "not installed"
    machine_info["versions"] = versions
