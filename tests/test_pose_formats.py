"""Pose files of other trackers (LightningPose CSV, SLEAP .slp and analysis .h5), written by the
synthetic generator through each format's own writer, read as the DeepLabCut file of the same points."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from mbr_bench.benchmark.cli import build_parser, main
from mbr_bench.benchmark.data.pose import read_pose
from mbr_bench.benchmark.data.synthetic import POSE_FORMATS, generate
from mbr_bench.core.errors import DataError

OTHER_FORMATS = [name for name in POSE_FORMATS if name != "dlc"]


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("formats")
    return {name: generate(root / name, n_videos=3, n_frames=300, n_test=1, seed=3, pose_format=name)
            for name in POSE_FORMATS}


def _pose_path(manifest, k=0):
    return manifest.parent / yaml.safe_load(manifest.read_text())["videos"][k]["pose"]


@pytest.mark.parametrize("name", OTHER_FORMATS)
def test_each_format_reads_as_the_deeplabcut_file_of_the_same_points(datasets, name):
    reference, pose = read_pose(_pose_path(datasets["dlc"])), read_pose(_pose_path(datasets[name]))
    assert _pose_path(datasets[name]).name.endswith(POSE_FORMATS[name])
    assert pose.bodyparts == reference.bodyparts and pose.n_frames == reference.n_frames
    missing = ~np.isfinite(reference.xy).all(axis=-1)
    assert missing.any()  # the generator drops points as trackers do: they stay missing
    assert np.array_equal(~np.isfinite(pose.xy).all(axis=-1), missing)
    np.testing.assert_allclose(pose.xy[~missing], reference.xy[~missing], atol=1e-3)  # CSVs keep 4 decimals
    np.testing.assert_allclose(pose.likelihood[~missing], reference.likelihood[~missing], atol=1e-3)


@pytest.mark.parametrize("name", OTHER_FORMATS)
def test_dataset_check_accepts_each_format(datasets, name, capsys):
    assert main(["dataset", "check", str(datasets[name]), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["videos"]) == 3 and all(v["frames"] == 300 for v in report["videos"])


def test_a_sleap_individual_is_chosen_by_track_name(datasets):
    path = _pose_path(datasets["sleap"])
    assert read_pose(path, individual="mouse").n_frames == 300
    with pytest.raises(DataError, match=r"individual 'rat' not found; tracks in the file: mouse"):
        read_pose(path, individual="rat")


def test_a_damaged_sleap_file_is_one_line(datasets, tmp_path):
    import h5py

    broken = tmp_path / "broken.slp"
    with h5py.File(broken, "w") as file:  # SLEAP's keys, none of its content
        for key in ("metadata", "instances", "points"):
            file.create_dataset(key, data=np.zeros(3))
    with pytest.raises(DataError, match=r"broken.slp: cannot read as a SLEAP file .*export it again from SLEAP"):
        read_pose(broken)


def test_the_synth_command_offers_every_format():
    synth = build_parser()._subparsers._group_actions[0].choices["synth"]
    choices = next(a.choices for a in synth._actions if a.dest == "pose_format")
    assert list(choices) == list(POSE_FORMATS)


@pytest.mark.slow
def test_the_same_search_runs_on_sleap_pose_as_on_deeplabcut_pose(datasets, tmp_path):
    from mlflow import MlflowClient

    space = tmp_path / "space.yaml"
    space.write_text("frame_mlp: {units: {choices: [16]}, sequence_length: 100, max_epochs: 6,"
                     " learning_rate: {fixed: 0.005}, feature_norm: {choices: [per_video]}}\n")
    scores = {}
    for name in ("dlc", "sleap"):
        workdir = tmp_path / name
        assert main(["run", "--study", "wall_rearing", "--dataset", str(datasets[name]), "--backbones", "pose",
                     "--heads", "frame_mlp", "--n-trials", "1", "--search-space", str(space), "--workdir",
                     str(workdir), "--no-progress"]) == 0
        client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
        experiment = client.get_experiment_by_name("mbr-bench/wall_rearing")
        [pair] = client.search_runs([experiment.experiment_id], "tags.`mbr.kind` = 'pair'")
        scores[name] = pair.data.metrics["cv/pr_auc_mean"]
    assert scores["sleap"] == pytest.approx(scores["dlc"], abs=0.02), scores
