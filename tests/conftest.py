"""Shared fixtures. `../shared` (real video, DLC pose, offline ImageNet weights) is optional."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MBR_SHARED_DIR", REPO_ROOT.parent / "shared"))

# Keep TensorFlow quiet and deterministic enough for contract tests.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
# Keras reads KERAS_HOME once, at import: point it at the offline ImageNet weights before any test
# imports Keras, where they exist.
if (SHARED / "keras_home" / "models").is_dir():
    os.environ.setdefault("KERAS_HOME", str(SHARED / "keras_home"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent: real-data tests need the shared material beside the checkout")
    return SHARED


@pytest.fixture(scope="session")
def openfield_video(shared_dir: Path) -> Path:
    path = shared_dir / "data" / "openfield" / "m3v1.mp4"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path


@pytest.fixture(scope="session")
def openfield_pose(shared_dir: Path) -> Path:
    path = shared_dir / "data" / "openfield" / "m3v1_dlc.csv"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path


@pytest.fixture(scope="session")
def imagenet_mobilenet_v2() -> Path:
    """The MobileNetV2 ImageNet weights file where Keras will look for it, or skip."""
    from mbr_bench.benchmark.backbones.keras_apps import keras_models_dir

    path = keras_models_dir() / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
    if not path.is_file():
        pytest.skip(f"{path} is absent: no offline ImageNet weights (set KERAS_HOME)")
    return path


def write_tiny_video(path: Path, n_frames: int, size: int = 64, fps: float = 10.0) -> list[tuple[float, float]]:
    """A dark disc wandering on a white floor; returns its centre per frame."""
    import cv2
    import numpy as np

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (size, size))
    centres = []
    for i in range(n_frames):
        frame = np.full((size, size, 3), 235, np.uint8)
        x = size / 2 + size / 4 * np.cos(i / 7)
        y = size / 2 + size / 4 * np.sin(i / 5)
        cv2.circle(frame, (int(round(x)), int(round(y))), max(size // 10, 3), (30, 30, 30), -1)
        writer.write(frame)
        centres.append((x, y))
    writer.release()
    return centres


def write_dlc_csv(path: Path, centres, parts=("snout", "midbody", "tailbase"), scorer="DLC_tiny") -> None:
    """A 3-row-header DeepLabCut CSV whose parts sit in a line through each centre."""
    lines = [
        ",".join(["scorer"] + [scorer] * 3 * len(parts)),
        ",".join(["bodyparts"] + [p for p in parts for _ in range(3)]),
        ",".join(["coords"] + ["x", "y", "likelihood"] * len(parts)),
    ]
    for i, (x, y) in enumerate(centres):
        cells = [str(i)]
        for k in range(len(parts)):
            cells += [f"{x + 4 * (1 - k):.3f}", f"{y:.3f}", "0.99"]
        lines.append(",".join(cells))
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def tiny_dataset(tmp_path: Path):
    """Factory: a labelled 3-video dataset (2 train, 1 test) of `n_frames` frames; returns dataset.yaml."""
    import numpy as np
    import yaml

    def make(n_frames: int = 40, behaviours=("rearing",), split=("train", "train", "test"), labels=True, **overrides):
        for folder in ("videos", "poses", "labels"):
            (tmp_path / folder).mkdir(exist_ok=True)
        videos = []
        for index, video_split in enumerate(split):
            video_id = f"t{index}"
            centres = write_tiny_video(tmp_path / "videos" / f"{video_id}.mp4", n_frames)
            write_dlc_csv(tmp_path / "poses" / f"{video_id}.csv", centres)
            entry = {"id": video_id, "video": f"videos/{video_id}.mp4", "pose": f"poses/{video_id}.csv"}
            if labels:
                y = np.zeros(n_frames, int)
                y[5 + index : 15 + index] = 1
                y[25:28] = 1
                columns = {b: y for b in behaviours}
                header = "frame," + ",".join(columns)
                rows = [",".join([str(i)] + [str(columns[b][i]) for b in columns]) for i in range(n_frames)]
                (tmp_path / "labels" / f"{video_id}.csv").write_text("\n".join([header, *rows]) + "\n")
                entry.update(labels=f"labels/{video_id}.csv", split=video_split)
            videos.append(entry)
        manifest = {
            "name": "tiny",
            "behaviours": list(behaviours),
            "crop": {"mode": "pose", "size": 32, "centre": ["midbody"]},
            "videos": videos,
            **overrides,
        }
        path = tmp_path / "dataset.yaml"
        path.write_text(yaml.safe_dump(manifest, sort_keys=False))
        return path

    return make
