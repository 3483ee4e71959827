"""The embedding pipeline end to end: manifest -> crops -> backbone -> cache, and back."""

import json
import os

import numpy as np
import pytest
import yaml

from mbr_bench.benchmark.backbones import BACKBONES, build_backbone
from mbr_bench.benchmark.cli import main
from mbr_bench.benchmark.data.manifest import load_dataset
from mbr_bench.core.errors import DataError
from mbr_bench.benchmark.features.cache import EmbeddingCache
from mbr_bench.benchmark.features.embed import embed_dataset, load_embeddings


class RecordingBackbone:
    """Wraps a real image backbone and keeps every batch it was given."""

    def __init__(self, inner):
        self.inner, self.batches = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_pose_backbone_embeds_every_frame_once(tiny_dataset, tmp_path):
    dataset = load_dataset(tiny_dataset(n_frames=40))
    cache = EmbeddingCache(tmp_path / "cache")
    backbone = build_backbone("pose", dataset)
    first = embed_dataset(dataset, backbone, cache, progress=False)
    dim = backbone.output_dim_for(("snout", "midbody", "tailbase"))
    assert [(r.frames, r.dim, r.computed) for r in first] == [(40, dim, 40)] * 3
    second = embed_dataset(dataset, backbone, cache, progress=False)
    assert [r.computed for r in second] == [0, 0, 0]
    assert [r.path for r in second] == [r.path for r in first]
    # A hit reports what computing the entry cost (the leaderboard's embedding cost), not zero.
    assert all(r.compute_seconds_per_frame > 0 for r in first)
    assert [r.compute_seconds_per_frame for r in second] == pytest.approx([r.compute_seconds_per_frame for r in first])
    array = load_embeddings(dataset, dataset.videos[0], backbone, cache)
    np.testing.assert_array_equal(array, backbone.embed_pose(
        __import__("mbr_bench.benchmark.data.pose", fromlist=["read_pose"]).read_pose(dataset.videos[0].pose), 10.0))


@pytest.mark.parametrize("mode", ["pose", "tracker", "full"])
def test_image_backbone_crop_modes(tiny_dataset, tmp_path, mode):
    dataset = load_dataset(tiny_dataset(n_frames=30))
    cache = EmbeddingCache(tmp_path / "cache")
    import keras

    keras.utils.set_random_seed(0)  # random-init weights: make the activations the same every run
    backbone = BACKBONES.build("mobilenet_v2", weights="none", input_size=32)
    crop = dataset.crop if mode == "pose" else type(dataset.crop)(mode=mode, size=32)
    results = embed_dataset(dataset, backbone, cache, crop=crop, batch_size=8, video_ids=["t1"], progress=False)
    assert [(r.video_id, r.frames, r.dim, r.computed) for r in results] == [("t1", 30, 1280, 30)]
    array = np.load(results[0].path)
    # Frames were embedded in order: the cached row equals a direct embedding of that frame's crop.
    from mbr_bench.benchmark.data.crops import iter_crops
    from mbr_bench.benchmark.data.pose import centre_track, read_pose

    centres = None
    if mode == "pose":
        centres = centre_track(read_pose(dataset.video("t1").pose), ("midbody",))
    elif mode == "tracker":
        from mbr_bench.benchmark.data.crops import track_centroids

        centres = track_centroids(dataset.video("t1").video)
    crops = np.stack(list(iter_crops(dataset.video("t1").video, crop, 32, centres=centres)))
    direct = backbone.embed_images(crops[[0, 17, 29]])
    # Random-init activations are tiny, so compare relative to their scale.
    np.testing.assert_allclose(array[[0, 17, 29]], direct, rtol=1e-4, atol=1e-4 * np.abs(direct).max())
    if mode == "full":
        # The disc moves across the whole frame, so rows differ; in pose and tracker modes the crop
        # follows the disc and frames look alike by design.
        assert np.abs(array[0] - array[17]).max() > 1e-2 * np.abs(direct).max()
        return  # the whole frame does not depend on crop.size
    # Crop settings are part of the key: another size is another entry.
    other = type(crop)(mode=crop.mode, size=40, centre=crop.centre)
    again = embed_dataset(dataset, backbone, cache, crop=other, video_ids=["t1"], progress=False)
    assert again[0].computed == 30 and again[0].path != results[0].path


def test_pose_frame_mismatch_fails_cleanly_and_caches_nothing(tiny_dataset, tmp_path):
    path = tiny_dataset(n_frames=30)
    pose = path.parent / "poses" / "t0.csv"
    pose.write_text("\n".join(pose.read_text().splitlines()[:-2]) + "\n")
    dataset = load_dataset(path)
    cache = EmbeddingCache(tmp_path / "cache")
    with pytest.raises(DataError, match="video 30, pose 28"):
        embed_dataset(dataset, BACKBONES.build("mobilenet_v2", weights="none", input_size=32), cache,
                      video_ids=["t0"], progress=False)
    # Nothing but the claim's lock file, which holds no data.
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.suffix != ".lock"]


def test_image_backbone_on_video_without_pose_needs_tracker_or_full(tiny_dataset, tmp_path):
    path = tiny_dataset(n_frames=20)
    manifest = yaml.safe_load(path.read_text())
    for video in manifest["videos"]:
        video.pop("pose")
    path.write_text(yaml.safe_dump(manifest))
    dataset = load_dataset(path)
    with pytest.raises(DataError, match="no pose file"):
        embed_dataset(dataset, build_backbone("pose", dataset), EmbeddingCache(tmp_path / "c"), progress=False)


def test_entry_without_video_or_fps_has_no_frame_rate(tiny_dataset):
    from dataclasses import replace

    from mbr_bench.benchmark.features.embed import video_fps

    dataset = load_dataset(tiny_dataset(n_frames=20))
    entry = dataset.videos[0]
    assert video_fps(entry) == pytest.approx(10.0)  # the video's header
    with pytest.raises(DataError, match=r"t0\.csv: video 't0' has no video file and no fps; add fps:"):
        video_fps(replace(entry, video=None, fps=None))  # the manifest refuses it; code may build it


def test_cli_embed_json_reports_computed_then_cached(tiny_dataset, tmp_path, capsys):
    path = tiny_dataset(n_frames=20)
    argv = ["embed", "--dataset", str(path), "--backbone", "pose", "mobilenet_v2", "--weights", "none",
            "--workdir", str(tmp_path / "work"), "--json", "--batch-size", "16"]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["cache_dir"] == str(tmp_path / "work" / "cache")
    rows = {(r["backbone"], r["video_id"]): r for r in first["videos"]}
    assert len(rows) == 6
    assert rows[("mobilenet_v2", "t0")]["dim"] == 1280 and rows[("mobilenet_v2", "t0")]["computed"] == 20
    assert all(r["frames"] == 20 and r["seconds"] > 0 and os.path.isfile(r["path"]) for r in rows.values())
    assert main(argv) == 0
    second = json.loads(capsys.readouterr().out)
    assert [r["computed"] for r in second["videos"]] == [0] * 6
    # The pose backbone has no weights: a value for every backbone passes it by, one named for it is an error.
    assert main(["embed", "--dataset", str(path), "--backbone", "pose", "--weights", "pose=imagenet",
                 "--workdir", str(tmp_path / "work")]) == 2
    assert "backbone pose has no weights" in capsys.readouterr().err
    assert main(["embed", "--dataset", str(path), "--backbone", "pose", "--weights", "imagenet",
                 "--workdir", str(tmp_path / "work"), "--json"]) == 0
    assert [r["computed"] for r in json.loads(capsys.readouterr().out)["videos"]] == [0] * 3  # the same cache entries


def test_unknown_backbone_on_the_command_line(tiny_dataset, capsys):
    assert main(["embed", "--dataset", str(tiny_dataset()), "--backbone", "resnt50v2"]) == 2
    err = capsys.readouterr().err
    assert "unknown backbone 'resnt50v2'; known: flow_hof, flow_mobilenet_v2, i3d, i3d_inflated_mobilenet_v2, inception_resnet_v2, mobilenet_v2, pose, pose_v1, r2plus1d_18, resnet50v2, track" in err
