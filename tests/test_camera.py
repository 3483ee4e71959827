"""A model used on another camera: the same recording at 2x and 0.5x the training resolution.

`crop.size` is in pixels, so without matching a 2x video's crop holds half the mouse and the model
labels nothing. The bundle records the training videos' mouse length; predict scales each video's
crop to it and says so in one line.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from mbr_bench.benchmark.backbones import build_backbone
from mbr_bench.benchmark.bundle import ModelBundle, load_bundle
from mbr_bench.benchmark.data.manifest import load_dataset
from mbr_bench.benchmark.features.animal_size import measure_animal
from mbr_bench.benchmark.features.cache import EmbeddingCache
from mbr_bench.benchmark.features.sequences import sample_weights
from mbr_bench.benchmark.heads import HEADS
from mbr_bench.benchmark.pair_inputs import behaviour_labels, embed_videos, read_video_labels
from mbr_bench.benchmark.postprocess import PostProcess
from mbr_bench.benchmark.predict import PredictOptions, _Job, matched_crop, predict_videos
from mbr_bench.core.errors import DataError

BEHAVIOUR = "wall_rearing"


def _rescaled_copy(video: Path, pose: Path, factor: float, folder: Path) -> Path:
    """`video` resized by `factor` and its pose file's x, y scaled alike, as `folder/clip.{mp4,csv}`."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    capture = cv2.VideoCapture(str(video))
    fps, frames = capture.get(cv2.CAP_PROP_FPS), []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.resize(frame, None, fx=factor, fy=factor,
                                 interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR))
    capture.release()
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(folder / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for frame in frames:
        writer.write(frame)
    writer.release()
    lines = pose.read_text().splitlines()
    rows = []
    for line in lines[3:]:  # DeepLabCut: 3 header rows, then frame, (x, y, likelihood) per part
        cells = line.split(",")
        rows.append(",".join([cells[0]] + [str(float(c) * factor) if c and k % 3 < 2 else c
                                           for k, c in enumerate(cells[1:])]))
    (folder / "clip.csv").write_text("\n".join(lines[:3] + rows) + "\n")
    return folder / "clip.mp4"


@pytest.fixture(scope="module")
def camera(tmp_path_factory, imagenet_mobilenet_v2):
    from mbr_bench.benchmark.data.synthetic import generate

    root = tmp_path_factory.mktemp("camera")
    dataset = load_dataset(generate(root / "data", n_videos=2, n_frames=300, seed=4, n_test=1))
    dataset = replace(dataset, crop=replace(dataset.crop, size=96))
    train, test = dataset.split("train")[0], dataset.split("test")[0]
    backbone = build_backbone("mobilenet_v2", dataset)
    cache = EmbeddingCache(root / "cache")
    embedded = embed_videos(dataset, backbone, cache, [train.id])
    y = behaviour_labels(read_video_labels(dataset, [train.id], embedded.n_frames()), BEHAVIOUR)[train.id]
    head = HEADS.build("frame_mlp", units=32, sequence_length=30, max_epochs=30, patience=30, learning_rate=3e-3,
                       batch_size=8, feature_norm="none", seed=0)
    head.fit([np.asarray(embedded.arrays[train.id])], [y], sample_weights([y]))
    size = measure_animal(dataset, train, cache)
    bundle = ModelBundle(
        behaviour=BEHAVIOUR, backbone="mobilenet_v2", weights="imagenet", backbone_config=backbone.describe(),
        crop=dataset.crop, heading=dataset.heading, individual=None, heads=[head], threshold=0.5,
        threshold_rule="max_f1", postprocess=PostProcess(), animal={**size.to_dict(), "resolution": [256, 256]},
    )
    bundle = load_bundle(bundle.save(root / "model"))  # what predict reads: the record survives saving
    return SimpleNamespace(root=root, test=test, bundle=bundle, cache=cache, size=size)


def _labels(camera, factor: float, capfd) -> tuple[pd.DataFrame, str]:
    video = _rescaled_copy(camera.test.video, camera.test.pose, factor, camera.root / f"x{factor}")
    capfd.readouterr()
    predict_videos(PredictOptions(bundles=[camera.bundle], inputs=[video], out_dir=camera.root / f"out{factor}",
                                  cache=camera.cache, progress=False))
    return pd.read_csv(camera.root / f"out{factor}" / "clip.csv"), capfd.readouterr().err


def _f1(truth: np.ndarray, guess: np.ndarray) -> float:
    both = int(np.sum(truth & guess))
    return 2 * both / max(int(truth.sum() + guess.sum()), 1)


@pytest.mark.slow
def test_a_2x_and_a_half_size_video_are_labelled_as_the_original(camera, capfd):
    assert camera.bundle.animal["length_px"] == pytest.approx(camera.size.length_px)
    original, said = _labels(camera, 1, capfd)
    assert "crops of" not in said  # the training camera: nothing to match
    labels = original[f"{BEHAVIOUR}_label"].to_numpy().astype(bool)
    assert labels.sum() >= 5, "the model labels nothing at 1x: the test would prove nothing"
    for factor, crop in ((2, range(170, 200)), (0.5, range(40, 55))):
        other, said = _labels(camera, factor, capfd)
        lines = [line for line in said.splitlines() if "crops of" in line]
        assert len(lines) == 1 and f"x{factor}/clip.mp4: the mouse is" in lines[0], said
        assert int(lines[0].split("crops of ")[1].split(" px")[0]) in crop, lines[0]
        p0, p1 = original[f"{BEHAVIOUR}_probability"], other[f"{BEHAVIOUR}_probability"]
        assert np.corrcoef(p0, p1)[0, 1] > 0.8, factor
        assert _f1(labels, other[f"{BEHAVIOUR}_label"].to_numpy().astype(bool)) >= 0.6, factor


def test_a_video_whose_mouse_cannot_be_measured_is_refused_at_another_resolution(camera, monkeypatch):
    import mbr_bench.benchmark.predict as predict

    monkeypatch.setattr(predict, "measure_animal", lambda *args: None)
    job = _Job(camera.test, 300, 10.0, camera.root / "x.csv", (512, 512))
    with pytest.raises(DataError, match=r"512x512 video, the model's training videos were 256x256.*resize"):
        matched_crop(camera.bundle, job, camera.cache)
    same = _Job(camera.test, 300, 10.0, camera.root / "x.csv", (256, 256))
    assert matched_crop(camera.bundle, same, camera.cache) == (camera.bundle.crop, None)


def test_a_mouse_too_far_from_the_training_size_is_refused(camera, monkeypatch):
    import mbr_bench.benchmark.predict as predict
    from mbr_bench.benchmark.features.animal_size import AnimalSize

    monkeypatch.setattr(predict, "measure_animal", lambda *args: AnimalSize(camera.size.length_px * 8,
                                                                             camera.size.measured_by))
    job = _Job(camera.test, 300, 10.0, camera.root / "x.csv", (2048, 2048))
    with pytest.raises(DataError, match=r"8\.00x the training videos'.*too far to match"):
        matched_crop(camera.bundle, job, camera.cache)
