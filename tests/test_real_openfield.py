"""The real open-field recording from ../shared: crops, ImageNet embeddings, a label-free manifest."""

import numpy as np
import pytest
import yaml

from mbr_bench.benchmark.cli import main

CENTRE = ("leftear", "rightear", "tailbase")  # this file has no midbody point
N_FRAMES = 2330


def _confident_frames(pose_path, count):
    from mbr_bench.benchmark.data.pose import read_pose

    pose = read_pose(pose_path)
    indices = [pose.part(p) for p in CENTRE]
    confident = np.flatnonzero((pose.likelihood[:, indices] > 0.95).all(axis=1))
    return confident[np.linspace(0, len(confident) - 1, count).astype(int)]


@pytest.fixture(scope="module")
def real_manifest(tmp_path_factory, openfield_video, openfield_pose):
    folder = tmp_path_factory.mktemp("openfield")
    path = folder / "dataset.yaml"
    path.write_text(yaml.safe_dump({
        "name": "openfield_m3v1",
        "crop": {"mode": "pose", "size": 200, "centre": list(CENTRE)},
        "pose": {"heading": ["tailbase", "snout"]},
        "videos": [{"id": "m3v1", "video": str(openfield_video), "pose": str(openfield_pose)}],
    }))
    return path


def _cosine_distance(a, b):
    return 1.0 - float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_imagenet_embeddings_tell_a_mouse_from_an_empty_arena(openfield_video, openfield_pose, imagenet_mobilenet_v2):
    from mbr_bench.benchmark.backbones import BACKBONES
    from mbr_bench.benchmark.data.crops import crop_square
    from mbr_bench.benchmark.data.pose import centre_track, read_pose
    from mbr_bench.benchmark.data.video import read_frame

    import cv2

    centres = centre_track(read_pose(openfield_pose), CENTRE)
    frames = _confident_frames(openfield_pose, 6)
    # Empty-floor points inside the arena, each far from the mouse in its own frame.
    floor = np.array([(x, y) for x in range(140, 520, 40) for y in range(140, 360, 40)], float)
    mouse_crops, empty_crops = [], []
    for index in frames:
        frame = read_frame(openfield_video, int(index))
        mouse_crops.append(crop_square(frame, centres[index], 200))
        far = floor[np.argmax(np.linalg.norm(floor - centres[index], axis=1))]
        assert np.linalg.norm(far - centres[index]) > 200
        empty_crops.append(crop_square(frame, far, 200))
    resize = lambda crops: np.stack([cv2.resize(c, (224, 224), interpolation=cv2.INTER_AREA) for c in crops])
    backbone = BACKBONES.build("mobilenet_v2", weights="imagenet")
    mouse = backbone.embed_images(resize(mouse_crops))
    empty = backbone.embed_images(resize(empty_crops))
    for i in range(len(frames) - 1):
        same_mouse = _cosine_distance(mouse[i], mouse[i + 1])
        mouse_vs_empty = _cosine_distance(mouse[i], empty[i])
        assert same_mouse < mouse_vs_empty, (frames[i], same_mouse, mouse_vs_empty)


def test_label_free_manifest_checks_and_embeds_with_pose(real_manifest, capsys, tmp_path):
    assert main(["dataset", "check", str(real_manifest)]) == 0
    out = capsys.readouterr().out
    assert "note: no labels" in out and "2330" in out and "640x480" in out
    assert main(["embed", "--dataset", str(real_manifest), "--backbone", "pose", "--json",
                 "--workdir", str(tmp_path)]) == 0
    import json

    row = json.loads(capsys.readouterr().out)["videos"][0]
    assert row["frames"] == N_FRAMES and row["computed"] == N_FRAMES and row["dim"] > 20
    array = np.load(row["path"])
    assert array.shape == (N_FRAMES, row["dim"]) and np.isfinite(array).all()


@pytest.mark.slow
def test_real_video_embeds_to_2330_by_1280_with_imagenet_mobilenet(real_manifest, capsys, tmp_path, imagenet_mobilenet_v2):
    argv = ["embed", "--dataset", str(real_manifest), "--backbone", "mobilenet_v2", "--json",
            "--workdir", str(tmp_path)]
    assert main(argv) == 0
    import json

    row = json.loads(capsys.readouterr().out)["videos"][0]
    assert (row["frames"], row["dim"], row["computed"]) == (N_FRAMES, 1280, N_FRAMES)
    array = np.load(row["path"], mmap_mode="r")
    assert array.shape == (N_FRAMES, 1280)
    # Consecutive frames of one mouse look alike; frames a minute apart less so.
    near = np.mean([_cosine_distance(array[i], array[i + 1]) for i in range(0, 2300, 100)])
    far = np.mean([_cosine_distance(array[i], array[(i + 1165) % N_FRAMES]) for i in range(0, 2300, 100)])
    assert near < far
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["videos"][0]["computed"] == 0

    # A model bundle on these embeddings labels the real video through the same cache (the video id is
    # its file stem there too); the CSV has one row per frame and the head's exact outputs.
    from mbr_bench.benchmark.backbones import build_backbone
    from mbr_bench.benchmark.bundle import ModelBundle
    from mbr_bench.benchmark.data.manifest import load_dataset
    from mbr_bench.benchmark.features.sequences import sample_weights
    from mbr_bench.benchmark.heads import HEADS
    from mbr_bench.benchmark.postprocess import PostProcess

    dataset = load_dataset(real_manifest)
    y = (np.arange(N_FRAMES) % 200 < 50).astype(np.int8)  # any labels: this checks plumbing, not learning
    head = HEADS.build("frame_mlp", units=8, sequence_length=100, max_epochs=1).fit([array], [y], sample_weights([y]))
    ModelBundle(
        behaviour="rearing", backbone="mobilenet_v2", weights="imagenet",
        backbone_config=build_backbone("mobilenet_v2", dataset, weights="imagenet").describe(), crop=dataset.crop,
        heading=dataset.heading, individual=dataset.individual, heads=[head], threshold=0.5, threshold_rule="max_f1",
        postprocess=PostProcess(closing=3),
    ).save(tmp_path / "model")
    video = dataset.videos[0]
    assert main(["predict", "--model", str(tmp_path / "model"), str(video.video), "--pose", str(video.pose),
                 "--out", str(tmp_path / "labels"), "--workdir", str(tmp_path), "--no-progress"]) == 0
    import pandas as pd

    table = pd.read_csv(tmp_path / "labels" / f"{video.video.stem}.csv")
    assert len(table) == N_FRAMES and list(table.columns) == ["frame", "time_s", "rearing_probability",
                                                              "rearing_label"]
    np.testing.assert_array_equal(table["rearing_probability"].to_numpy(np.float32), head.predict_proba(array))
    assert table["time_s"].iloc[-1] == pytest.approx((N_FRAMES - 1) / 30.0, abs=1e-3)
