"""Cutting one long recording (DeepLabCut pose + per-frame labels) into pose-only pieces."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mbr_bench.benchmark.data.check import check_dataset
from mbr_bench.benchmark.data.labels import read_labels
from mbr_bench.benchmark.data.manifest import load_dataset
from mbr_bench.benchmark.data.pieces import cut_recording, piece_bounds
from mbr_bench.benchmark.data.pose import read_pose
from mbr_bench.core.errors import ConfigError, DataError

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "behaviordepot_demo1"
N_FRAMES = 301  # not a multiple of 3: pieces of 100, 100 and 101 frames


@pytest.fixture
def recording(tmp_path) -> tuple[Path, Path]:
    """(pose CSV, labels CSV) of one synthetic recording of N_FRAMES frames."""
    from mbr_bench.benchmark.data.synthetic import generate

    manifest = generate(tmp_path / "synthetic", n_videos=2, n_frames=N_FRAMES, seed=3, n_test=1)
    return manifest.parent / "poses" / "ofs01.csv", manifest.parent / "labels" / "ofs01.csv"


def test_piece_bounds_cover_every_frame_once():
    assert piece_bounds(301, 3) == [(0, 100), (100, 200), (200, 301)]
    assert piece_bounds(6000, 3) == [(0, 2000), (2000, 4000), (4000, 6000)]
    for n, k in ((7, 7), (10, 4), (1000, 9)):
        bounds = piece_bounds(n, k)
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(a[1] == b[0] for a, b in pairwise(bounds))
        assert max(b - a for a, b in bounds) - min(b - a for a, b in bounds) <= 1


def test_cut_synthetic_recording_into_three_pieces(recording, tmp_path):
    pose, labels = recording
    manifest = cut_recording(pose, labels, tmp_path / "pieces", fps=10, n_pieces=3, test_pieces=[3],
                             name="one_mouse", crop={"centre": ["midbody"]}, pose={"heading": ["tailbase", "snout"]})
    dataset = load_dataset(manifest)
    assert dataset.name == "one_mouse" and dataset.behaviours == ("grooming", "mid_rearing", "wall_rearing", "locomotion")
    assert dataset.heading == ("tailbase", "snout") and dataset.crop.centre == ("midbody",)
    assert [(v.id, v.split, v.fps, v.video) for v in dataset.videos] == [
        ("piece1", "train", 10.0, None), ("piece2", "train", 10.0, None), ("piece3", "test", 10.0, None)]

    whole_pose = read_pose(pose)
    whole_labels = read_labels(labels, dataset.behaviours)
    lengths = []
    start = 0
    for entry in dataset.videos:
        piece_pose = read_pose(entry.pose)
        piece_labels = read_labels(entry.labels, dataset.behaviours, n_frames=piece_pose.n_frames)
        stop = start + piece_pose.n_frames
        lengths.append(piece_pose.n_frames)
        assert piece_pose.bodyparts == whole_pose.bodyparts
        # Rows line up with the recording's rows, the frame column restarts at 0.
        np.testing.assert_array_equal(piece_pose.xy, whole_pose.xy[start:stop])
        np.testing.assert_array_equal(piece_pose.likelihood, whole_pose.likelihood[start:stop])
        np.testing.assert_array_equal(piece_labels.to_numpy(), whole_labels.to_numpy()[start:stop])
        assert pd.read_csv(entry.pose, skiprows=3, header=None)[0].tolist() == list(range(piece_pose.n_frames))
        assert pd.read_csv(entry.labels)["frame"].tolist() == list(range(piece_pose.n_frames))
        with open(pose) as whole, open(entry.pose) as piece:  # the header is copied as it was
            assert [next(whole) for _ in range(3)] == [next(piece) for _ in range(3)]
        start = stop
    assert lengths == [100, 100, 101] and sum(lengths) == N_FRAMES

    report = check_dataset(dataset)
    assert [v.frames for v in report.videos] == lengths
    assert not list((tmp_path / "pieces").glob(".*partial*"))  # nothing half-written


def test_cut_behaviours_subset_and_defaults(recording, tmp_path):
    pose, labels = recording
    manifest = cut_recording(pose, labels, tmp_path / "pieces", 25.5, 2, behaviours="grooming", test_pieces=(1,))
    dataset = load_dataset(manifest)
    assert dataset.behaviours == ("grooming",) and [v.split for v in dataset.videos] == ["test", "train"]
    assert {v.fps for v in dataset.videos} == {25.5}
    assert pd.read_csv(dataset.videos[0].labels).columns.tolist() == ["frame", "grooming"]
    assert dataset.name == "pieces"  # the folder's name, like any manifest without a name


@pytest.mark.parametrize(
    ("kwargs", "error", "fragments"),
    [
        ({"test_pieces": ()}, ConfigError, ["test_pieces is empty", "test_pieces=(3,)"]),
        ({"test_pieces": (4,)}, ConfigError, ["test_pieces [4] are not piece numbers", "1..3"]),
        ({"test_pieces": (1, 2, 3)}, ConfigError, ["names all 3 pieces"]),
        ({"test_pieces": (3,), "n_pieces": 0}, ConfigError, ["n_pieces is 0"]),
        ({"test_pieces": (3,), "n_pieces": 400}, ConfigError, ["n_pieces 400 is more than its 301 frames"]),
        ({"test_pieces": (3,), "fps": 0}, ConfigError, ["fps is 0"]),
        ({"test_pieces": (3,), "videos": []}, ConfigError, ["unknown manifest setting(s) ['videos']"]),
        ({"test_pieces": (3,), "crop": {"centre": ["Mid-Back"]}}, DataError,
         ["body part 'Mid-Back' not found", "crop.centre"]),
        ({"test_pieces": (3,), "pose": {"heading": ["Tailbase", "Nose"]}}, DataError,
         ["body part 'Tailbase' not found", "pose.heading"]),
        ({"test_pieces": (3,), "behaviours": ["sleeping"]}, DataError, ["behaviour 'sleeping' not found"]),
    ],
)
def test_cut_errors_are_one_line_and_write_nothing(recording, tmp_path, kwargs, error, fragments):
    pose, labels = recording
    arguments = {"fps": 10, "n_pieces": 3, **kwargs}
    with pytest.raises(error) as raised:
        cut_recording(pose, labels, tmp_path / "pieces", **arguments)
    message = str(raised.value)
    assert "\n" not in message and all(fragment in message for fragment in fragments), message
    assert not (tmp_path / "pieces" / "dataset.yaml").exists()


def test_cut_labels_of_another_length(recording, tmp_path):
    pose, labels = recording
    short = tmp_path / "short.csv"
    short.write_text("\n".join(labels.read_text().splitlines()[:-1]) + "\n")
    with pytest.raises(DataError, match=rf"short\.csv: has {N_FRAMES - 1} label rows but the pose file ofs01\.csv "
                                        rf"has {N_FRAMES} frames"):
        cut_recording(pose, short, tmp_path / "pieces", fps=10, n_pieces=3, test_pieces=(3,))


def test_real_recording_cuts_into_three_pieces_of_2000_frames(tmp_path):
    if not (REAL / "demo1_tracking.csv").is_file() or not (REAL / "demo1_freezing.csv").is_file():
        pytest.skip(f"{REAL} is absent: the real BehaviorDEPOT pose set lives in ../shared beside the checkout")
    manifest = cut_recording(REAL / "demo1_tracking.csv", REAL / "demo1_freezing.csv", tmp_path / "demo1_pieces",
                             fps=50, n_pieces=3, test_pieces=(3,),
                             crop={"centre": ["Mid-Back"]}, pose={"heading": ["Tailbase", "Nose"]})
    dataset = load_dataset(manifest)
    assert dataset.behaviours == ("freezing",)
    assert [(v.id, v.split, v.fps) for v in dataset.videos] == [
        ("piece1", "train", 50.0), ("piece2", "train", 50.0), ("piece3", "test", 50.0)]
    report = check_dataset(dataset)
    assert [v.frames for v in report.videos] == [2000, 2000, 2000]
    assert [v.behaviours["freezing"].positives for v in report.videos] == [189, 627, 552]  # 1368 = 22.8 %
    assert report.warnings == []
    # Read by name (the file's order is Nose, Left Ear, Right Ear, Tailbase, Left Leg, Right Leg, Mid-Back, Tail).
    assert report.videos[0].bodyparts == ("Left Ear", "Left Leg", "Mid-Back", "Nose", "Right Ear", "Right Leg",
                                          "Tail", "Tailbase")


def test_dataset_cut_command_writes_a_manifest_that_checks(tmp_path, capsys):
    from mbr_bench.benchmark.cli import main
    from mbr_bench.benchmark.data.synthetic import generate

    data = generate(tmp_path / "synthetic", n_videos=2, n_frames=300, seed=2, n_test=1).parent
    out = tmp_path / "pieces"
    argv = ["dataset", "cut", "--pose", str(data / "poses" / "ofs01.csv"), "--labels", str(data / "labels" / "ofs01.csv"),
            "--fps", "30", "--pieces", "3", "--test-pieces", "3", "--out", str(out)]
    assert main(argv) == 0
    assert f"wrote 3 pieces and {out / 'dataset.yaml'}" in capsys.readouterr().out
    assert main(["dataset", "check", str(out / "dataset.yaml")]) == 0
    printed = capsys.readouterr().out
    assert "piece3  test" in printed and printed.rstrip().splitlines()[-1].startswith("ok")
    assert main(argv[:-2] + ["--out", str(tmp_path / "bad"), "--heading", "nope", "snout"]) == 2
    assert "nope" in capsys.readouterr().err
