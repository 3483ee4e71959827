"""Fused backbones (`a+b`) and the track backbone through the cache, a search, the board and predict."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mbr_bench.benchmark.backbones import BACKBONES, FusedBackbone, build_backbone, check_backbone_names
from mbr_bench.benchmark.backbones.track import TrackFeatures
from mbr_bench.benchmark.cli import main
from mbr_bench.benchmark.data import crops as crops_module
from mbr_bench.benchmark.data.manifest import load_dataset
from mbr_bench.benchmark.features.cache import EmbeddingCache
from mbr_bench.benchmark.features.embed import embed_dataset, tracker_key
from mbr_bench.core.errors import ConfigError

BEHAVIOUR = "grooming"


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from mbr_bench.benchmark.data.synthetic import generate

    return generate(tmp_path_factory.mktemp("fused"), n_videos=4, n_frames=300, seed=3, n_test=1)


def _count_decodes(monkeypatch) -> list[str]:
    """Every full pass over a video's frames made by the crop or tracker code."""
    passes: list[str] = []
    original = crops_module.iter_frames

    def counting(path, *args, **kwargs):
        passes.append(str(path))
        return original(path, *args, **kwargs)

    monkeypatch.setattr(crops_module, "iter_frames", counting)
    return passes


def test_fused_names_are_checked_part_by_part():
    check_backbone_names("--backbones", ["mobilenet_v2+track", "pose"])
    with pytest.raises(ConfigError, match="--backbones mobilenet_v3: unknown backbone 'mobilenet_v3'"):
        check_backbone_names("--backbones", ["mobilenet_v3+track"])
    with pytest.raises(ConfigError, match="names each part once"):
        check_backbone_names("--backbones", ["track+track"])
    fused = build_backbone("pose+track")
    assert isinstance(fused, FusedBackbone) and fused.name == "pose+track" and fused.kind == "fused"
    assert [part.name for part in fused.parts] == ["pose", "track"]


def test_an_image_backbone_and_track_decode_each_video_once(synthetic, tmp_path, monkeypatch):
    dataset = load_dataset(synthetic)
    fused = FusedBackbone([BACKBONES.build("mobilenet_v2", weights="none", input_size=32), TrackFeatures()])
    cache = EmbeddingCache(tmp_path / "cache")
    passes = _count_decodes(monkeypatch)
    results = embed_dataset(dataset, fused, cache, progress=False)
    assert sorted(passes) == sorted(str(v.video) for v in dataset.videos)  # one pass per video, not two
    assert all(cache.record(tracker_key(dataset, v)) is not None for v in dataset.videos)
    assert [r.dim for r in results] == [1280 + TrackFeatures().output_dim] * len(dataset.videos)

    # The parts side by side, as they are: each part's columns are its own cached embedding.
    parts = [embed_dataset(dataset, part, cache, progress=False) for part in fused.parts]
    for k, result in enumerate(results):
        joined = np.load(result.path)
        np.testing.assert_array_equal(joined[:, :1280], np.load(parts[0][k].path))
        np.testing.assert_array_equal(joined[:, 1280:], np.load(parts[1][k].path))
    assert fused.part_widths() == (1280, TrackFeatures().output_dim)

    # The row's cost is its parts' cost; a second call reads everything from the cache.
    for k, result in enumerate(results):
        assert result.compute_seconds_per_frame == pytest.approx(sum(p[k].compute_seconds_per_frame for p in parts))
    passes.clear()
    again = embed_dataset(dataset, fused, cache, progress=False)
    assert passes == [] and all(r.computed == 0 for r in again)


def test_track_alone_reuses_the_path_an_image_crop_pass_recorded(synthetic, tmp_path, monkeypatch):
    dataset = load_dataset(synthetic)
    cache = EmbeddingCache(tmp_path / "cache")
    passes = _count_decodes(monkeypatch)
    cnn = BACKBONES.build("mobilenet_v2", weights="none", input_size=32)
    embed_dataset(dataset, cnn, cache, progress=False, also_track=True)
    assert len(passes) == len(dataset.videos)
    embed_dataset(dataset, TrackFeatures(), cache, progress=False)
    assert len(passes) == len(dataset.videos)  # no second decode


@pytest.mark.slow
def test_a_fused_pair_is_searched_ranked_and_predicts_as_it_was_tested(synthetic, tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text("frame_mlp: {units: {choices: [32]}, sequence_length: 100, max_epochs: 8,"
                     " learning_rate: {fixed: 0.005}}\n")
    workdir, uri = tmp_path / "work", f"sqlite:///{tmp_path}/work/mlflow.db"
    common = ["--workdir", str(workdir), "--tracking-uri", uri, "--no-progress"]
    assert main(["run", "--study", BEHAVIOUR, "--dataset", str(synthetic), "--backbones", "track", "pose+track",
                 "--heads", "frame_mlp", "--n-trials", "1", "--search-space", str(space), *common]) == 0
    out = tmp_path / "board"
    assert main(["leaderboard", "--study", BEHAVIOUR, "--out", str(out), "--refit-seeds", "1", *common]) == 0
    rows = {row["backbone"]: row for _, row in pd.read_csv(out / "leaderboard.csv").iterrows()}
    assert set(rows) == {"track", "pose+track"}
    # The fused row's embedding cost is at least its track part's.
    assert rows["pose+track"]["embedding_seconds_per_frame"] >= rows["track"]["embedding_seconds_per_frame"]

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(f"mbr-bench/{BEHAVIOUR}")
    refit = next(r for r in client.search_runs([experiment.experiment_id], "tags.`mbr.kind` = 'refit'")
                 if r.data.tags["mbr.backbone"] == "pose+track")
    local = client.download_artifacts(refit.info.run_id, "model", str(tmp_path / "model"))
    # The join passes the parts as they are (the head weighs them): nothing fitted to keep beside the head.
    assert not (tmp_path / "model" / "model" / "backbone_state.npz").exists()
    # The search also chose the parts' balance, and the final head weighs the parts' columns by it.
    trial = next(r for r in client.search_runs([experiment.experiment_id], "tags.`mbr.kind` = 'trial'")
                 if r.data.tags["mbr.backbone"] == "pose+track")
    assert -2.0 <= float(trial.data.params["fusion_balance"]) <= 2.0
    spec = json.loads(next((tmp_path / "model").rglob("head.json")).read_text())
    assert len(spec["params"]["input_blocks"]) == 2 and sum(spec["params"]["input_blocks"]) == spec["input_dim"]
    assert spec["params"]["fusion_balance"] == pytest.approx(float(trial.data.params["fusion_balance"]))
    dataset = load_dataset(synthetic)
    test = dataset.split("test")[0]
    capsys.readouterr()
    assert main(["predict", "--model", refit.info.run_id, str(test.video), "--pose", str(test.pose.parent),
                 "--out", str(tmp_path / "pred"), *common]) == 0
    proba = pd.read_csv(tmp_path / "pred" / f"{test.video.stem}.csv")[f"{BEHAVIOUR}_probability"].to_numpy()
    scored_path = client.download_artifacts(refit.info.run_id, "predictions/test_predictions.npz", str(tmp_path))
    with np.load(scored_path) as scored:
        k = next(k for k in range(len(scored.files)) if str(scored[f"video_{k}"]) == test.id)
        np.testing.assert_allclose(proba, scored[f"proba_{k}"], atol=1e-6)
    assert json.loads((tmp_path / "model" / "model" / "bundle.json").read_text())["backbone"]["name"] == "pose+track"
    del local


def test_a_model_saved_with_a_z_scoring_join_still_scales_new_videos_so():
    fused = FusedBackbone([TrackFeatures(), TrackFeatures()])
    a, b = np.arange(12, dtype=np.float32).reshape(6, 2), np.ones((6, 3), np.float32)
    out = np.zeros((6, 5), np.float32)
    fused.join([a, b], out)
    np.testing.assert_array_equal(out, np.hstack([a, b]))  # today: as they are
    assert fused.state() == {}
    fused.load_state({"mean_0": np.array([1, 2], np.float32), "std_0": np.array([2, 2], np.float32),
                      "mean_1": np.zeros(3, np.float32), "std_1": np.ones(3, np.float32)})
    fused.join([a, b], out)
    np.testing.assert_allclose(out[:, :2], (a - [1, 2]) / 2)  # a bundle's saved statistics
