"""Pose-only datasets: entries with pose, labels and fps but no video file (the video is archived)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from mbr_bench.benchmark.backbones import build_backbone
from mbr_bench.benchmark.backbones.base import ImageBackbone
from mbr_bench.benchmark.cli import main
from mbr_bench.benchmark.data.check import check_dataset
from mbr_bench.benchmark.data.manifest import load_dataset
from mbr_bench.benchmark.features.cache import EmbeddingCache
from mbr_bench.benchmark.features.embed import cache_key, embed_dataset, require_inputs
from mbr_bench.core.errors import DataError

N_FRAMES = 300
STUDY = "grooming"


@pytest.fixture(scope="module")
def manifests(tmp_path_factory) -> tuple[Path, Path]:
    """(the synthetic dataset.yaml with videos, a pose-only copy beside it without video: keys)."""
    from mbr_bench.benchmark.data.synthetic import generate

    with_video = generate(tmp_path_factory.mktemp("synthetic"), n_videos=3, n_frames=N_FRAMES, seed=5, n_test=1)
    manifest = yaml.safe_load(with_video.read_text())
    for entry in manifest["videos"]:
        del entry["video"]  # pose, labels, split and fps stay
    pose_only = with_video.parent / "pose_only.yaml"
    pose_only.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return with_video, pose_only


class _ImageBackboneStub(ImageBackbone):
    """An image backbone that must never be asked to embed anything."""

    name = "stub_cnn"
    input_size = 32
    output_dim = 4

    @property
    def weights_id(self) -> str:
        return "stub"

    def embed_images(self, images: np.ndarray) -> np.ndarray:
        raise AssertionError("an entry without a video reached the image backbone")


def test_pose_only_manifest_loads_and_checks(manifests, capsys):
    _, pose_only = manifests
    dataset = load_dataset(pose_only)
    assert all(entry.video is None and entry.pose.is_file() and entry.fps == 10.0 for entry in dataset.videos)
    assert [entry.id for entry in dataset.pose_only] == [entry.id for entry in dataset.videos]
    report = check_dataset(dataset)
    assert [(v.frames, v.fps, v.width, v.height, v.resolution) for v in report.videos] == [(N_FRAMES, 10.0, None, None, "—")] * 3
    assert all(v.bodyparts and set(v.behaviours) == set(dataset.behaviours) for v in report.videos)
    assert any("pose-only" in note and "--backbones pose" in note for note in report.notes)

    assert main(["dataset", "check", str(pose_only)]) == 0
    out = capsys.readouterr().out
    assert "pose-only" in out and out.splitlines()[-1].startswith("ok")


def test_pose_only_labels_length_is_checked_against_the_pose_rows(manifests, tmp_path, capsys):
    _, pose_only = manifests
    manifest = yaml.safe_load(pose_only.read_text())
    source = pose_only.parent / manifest["videos"][0]["labels"]
    short = tmp_path / "short.csv"
    short.write_text("\n".join(source.read_text().splitlines()[:-4]) + "\n")  # 4 rows fewer
    manifest["videos"][0]["labels"] = str(short)
    edited = pose_only.parent / "pose_only_short_labels.yaml"
    edited.write_text(yaml.safe_dump(manifest, sort_keys=False))
    assert main(["dataset", "check", str(edited)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert f"{short}: has {N_FRAMES - 4} label rows but its pose file ofs01.csv has {N_FRAMES} frames" in err


def test_pose_backbone_gives_the_same_features_without_the_video(manifests, tmp_path):
    with_video, pose_only = manifests
    full, bare = load_dataset(with_video), load_dataset(pose_only)
    backbone = build_backbone("pose", bare)
    assert backbone.describe() == build_backbone("pose", full).describe()
    first = embed_dataset(full, backbone, EmbeddingCache(tmp_path / "with_video"), progress=False)
    second = embed_dataset(bare, backbone, EmbeddingCache(tmp_path / "pose_only"), progress=False)
    assert [r.frames for r in second] == [N_FRAMES] * 3 and all(r.computed == N_FRAMES for r in second)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(np.load(a.path), np.load(b.path))
    # The key does not involve the video, so either manifest finds the other's cache entry.
    for entry_full, entry_bare in zip(full.videos, bare.videos, strict=True):
        assert cache_key(full, entry_full, backbone, full.crop).digest == cache_key(bare, entry_bare, backbone, bare.crop).digest


def test_image_backbone_on_a_pose_only_entry_is_one_line_before_any_work(manifests, tmp_path):
    with_video, _ = manifests
    # Only the second entry lacks its video: the first must not be embedded either.
    manifest = yaml.safe_load(with_video.read_text())
    del manifest["videos"][1]["video"]
    mixed = with_video.parent / "mixed.yaml"
    mixed.write_text(yaml.safe_dump(manifest, sort_keys=False))
    dataset = load_dataset(mixed)
    assert [entry.id for entry in dataset.pose_only] == ["ofs02"]
    cache = EmbeddingCache(tmp_path / "cache")
    expected = (f"{dataset.path}: video 'ofs02' has no video file, which backbone stub_cnn needs; "
                "add video: for it in dataset.yaml, or use the pose backbone (run --backbones pose)")
    with pytest.raises(DataError) as raised:
        embed_dataset(dataset, _ImageBackboneStub(), cache, progress=False)
    assert str(raised.value) == expected
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]  # nothing embedded, nothing claimed
    # By name, without building the backbone (what a command can check before any work).
    with pytest.raises(DataError, match="video 'ofs02' has no video file, which backbone mobilenet_v2 needs"):
        require_inputs(dataset, "mobilenet_v2")
    require_inputs(dataset, "pose")  # every entry has its pose file
    require_inputs(dataset, "mobilenet_v2", video_ids=["ofs01", "ofs03"])


def test_cli_embed_with_an_image_backbone_names_the_video_and_the_fix(manifests, tmp_path, capfd):
    _, pose_only = manifests
    argv = ["embed", "--dataset", str(pose_only), "--backbone", "mobilenet_v2", "--weights", "none",
            "--workdir", str(tmp_path / "work"), "--no-progress"]
    capfd.readouterr()
    assert main(argv) == 2
    err = capfd.readouterr().err.strip()
    assert err == (f"mbr-bench: error: {pose_only}: video 'ofs01' has no video file, which backbone mobilenet_v2 "
                   "needs; add video: for it in dataset.yaml, or use the pose backbone (run --backbones pose)")


@pytest.mark.slow
def test_cli_run_on_a_pose_only_dataset(manifests, tmp_path, capsys):
    _, pose_only = manifests
    space = tmp_path / "tiny_space.yaml"
    space.write_text("frame_mlp: {units: 8, n_layers: 1, sequence_length: 30, max_epochs: 2, patience: 1,"
                     " batch_size: 8, learning_rate: {low: 1.0e-3, high: 1.0e-2, log: true}}\n")
    workdir = tmp_path / "work"
    argv = ["run", "--dataset", str(pose_only), "--study", STUDY, "--backbones", "pose", "--heads", "frame_mlp",
            "--n-trials", "1", "--search-space", str(space), "--workdir", str(workdir), "--no-progress"]
    assert main(argv) == 0, capsys.readouterr().err
    assert "pose" in capsys.readouterr().out
    assert list((workdir / "cache").rglob("*.npy"))
