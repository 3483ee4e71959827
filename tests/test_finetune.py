"""The finetune mode (benchmark/heads/finetune.py): a clip network and a classification layer trained end to
end on a clip backbone's cached crops, refused on a CPU without --allow-cpu-finetune, searched and boarded."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

from mbr_bench.benchmark.backbones import build_backbone
from mbr_bench.benchmark.features.sequences import sample_weights
from mbr_bench.benchmark.heads import HEADS, load_head
from mbr_bench.core.errors import ConfigError, DataError

SIZE = 32


def moving_square(n: int, period: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """A bright square that moves for `period` frames, then stands still for as many: labelled 1 while it
    moves. A single frame cannot tell the two apart; its clip can."""
    frames = np.full((n, SIZE, SIZE, 3), 20, np.uint8)
    labels = np.zeros(n, np.int8)
    x = 10
    for t in range(n):
        moving = (t // period) % 2 == 0
        if moving:
            x = (x + 3) % (SIZE - 8)
        labels[t] = moving
        frames[t, 8:16, x:x + 8] = 230
    return frames.reshape(n, -1), labels


def _head(**params):
    return HEADS.build("finetune", **{"network": "i3d_inflated_mobilenet_v2", "network_weights": "imagenet",
                                      "input_size": SIZE, "clip_length": 4, "clips_per_epoch": 64, "batch_size": 8,
                                      "max_epochs": 8, "decay_epochs": 8, "learning_rate": 3e-4,
                                      "final_learning_rate": 1e-4,
                                      "dropout": 0.0, "seed": 0, **params})


def test_finetune_learns_motion_from_clips_and_saves_what_it_learnt(imagenet_mobilenet_v2, tmp_path):
    X, y = zip(*[moving_square(60, period) for period in (12, 10)])
    val = moving_square(48, 8)
    head = _head().fit(list(X), list(y), sample_weights(list(y)), val=val, stop_early=False)
    losses = [epoch["loss"] for epoch in head.history_]
    assert len(losses) == 8 and np.mean(losses[-2:]) < 0.5 * losses[0], losses  # training improves the loss
    proba = head.predict_proba(val[0])
    assert proba.shape == (48,) and proba[val[1] == 1].mean() > proba[val[1] == 0].mean() + 0.3
    assert head.best_val_pr_auc_ > 0.9
    head.save(tmp_path / "head")
    loaded = load_head(tmp_path / "head")
    np.testing.assert_allclose(loaded.predict_proba(val[0]), proba, rtol=1e-5, atol=1e-6)
    assert json.loads((tmp_path / "head" / "head.json").read_text())["params"]["network"] == "i3d_inflated_mobilenet_v2"


def test_finetune_refuses_what_it_cannot_train():
    frames, labels = moving_square(20)
    with pytest.raises(ConfigError, match="no clip network to train; pair it with a clip backbone"):
        HEADS.build("finetune").fit([frames], [labels], [np.ones(20)])
    with pytest.raises(ConfigError, match="network mobilenet_v2 is not a clip backbone"):
        HEADS.build("finetune", network="mobilenet_v2", input_size=SIZE).check_params()
    with pytest.raises(ConfigError, match="final_learning_rate 0.01 is above learning_rate 0.001"):
        HEADS.build("finetune", final_learning_rate=1e-2).check_params()
    with pytest.raises(DataError, match=r"reads i3d_inflated_mobilenet_v2's 32 px crops \(\(frames, 3072\)\)"):
        _head().fit([np.zeros((20, 1280), np.float32)], [labels], [np.ones(20)])
    with pytest.raises(ConfigError, match="pairs with a clip backbone only"):
        build_backbone("mobilenet_v2", weights="none", crops=True)


def test_the_learning_rate_decays_over_decay_epochs_so_a_shorter_refit_follows_the_same_rates():
    from mbr_bench.benchmark.heads.base import import_keras
    from mbr_bench.benchmark.heads.finetune import _decay

    schedule = _decay(import_keras(), 1e-3, 5e-5, 100)
    rates = [float(schedule(step)) for step in (0, 50, 100, 400)]
    np.testing.assert_allclose(rates, [1e-3, np.sqrt(1e-3 * 5e-5), 5e-5, 5e-5], rtol=1e-5)
    # The refit trains the epochs the search chose: its epochs are the search's first ones, loss for loss.
    X, y = moving_square(40)
    fits = [HEADS.build("finetune", network="r2plus1d_18", network_weights="none", input_size=SIZE, clip_length=2,
                        clips_per_epoch=16, batch_size=8, max_epochs=epochs, decay_epochs=3, seed=0)
            .fit([X], [y], [np.ones(40)], val=(X, y), stop_early=False, keep_val_history=True) for epochs in (3, 1)]
    # What the 1-epoch fit ends with is what the 3-epoch fit had after its first epoch.
    np.testing.assert_allclose(fits[1].val_history_[-1], fits[0].val_history_[0], rtol=1e-4, atol=1e-6)
    assert np.abs(fits[0].val_history_[1] - fits[0].val_history_[0]).max() > 1e-6  # training moves them
    with pytest.raises(ConfigError, match="feature_norm and input_blocks do not apply"):
        HEADS.build("finetune", feature_norm="train").check_params()


def test_mixed_precision_computes_in_float16_and_scales_the_loss(monkeypatch):
    import keras

    from mbr_bench.benchmark.heads import finetune

    monkeypatch.setattr(finetune, "mixed_precision_supported", lambda: True)  # as on a tensor-core GPU
    X, y = moving_square(12)
    head = HEADS.build("finetune", network="r2plus1d_18", network_weights="none", input_size=SIZE, clip_length=2,
                       clips_per_epoch=8, batch_size=8, max_epochs=1, seed=0).fit([X], [y], [np.ones(12)])
    assert head.model_.dtype_policy.name == "mixed_float16"
    assert isinstance(head.model_.optimizer, keras.optimizers.LossScaleOptimizer)
    assert head.model_.get_layer("clip_probability").dtype_policy.name == "float32"  # a float32 probability
    assert keras.mixed_precision.global_policy().name == "float32"  # other heads stay in float32
    assert head.predict_proba(X).dtype == np.float32


def test_crops_are_cached_as_uint8_pixels():
    crops = build_backbone("r2plus1d_18", weights="none", crops=True, input_size=SIZE)
    frames, _ = moving_square(5)
    rows = crops.embed_images(frames.reshape(5, SIZE, SIZE, 3))
    assert crops.cache_dtype == np.uint8 and rows.dtype == np.uint8
    np.testing.assert_array_equal(rows, frames)  # the pixels as they are: the network scales them
    assert crops.describe() != build_backbone("r2plus1d_18", weights="none", input_size=SIZE).describe()
    assert crops.head_params() == {"network": "r2plus1d_18", "network_weights": "none", "input_size": SIZE}


def _cli(*args: str, check: bool = True, env=None) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "mbr_bench.benchmark.cli", *args], capture_output=True,
                            text=True, env=env)
    if check and result.returncode != 0:
        raise AssertionError(result.stderr[-3000:])
    return result


FINETUNE_SPACE = """\
finetune:
  batch_size: 8
  learning_rate: {low: 2.0e-4, high: 4.0e-4, log: true, grid: [3.0e-4]}
  final_learning_rate: 1.0e-4
  decay_epochs: 2
  dropout: 0.0
  clip_length: 2
  clips_per_epoch: 16
  max_epochs: 2
  patience: 2
"""


@pytest.mark.slow
def test_finetune_pair_is_refused_on_a_cpu_then_searched_and_boarded(tiny_dataset, tmp_path, imagenet_mobilenet_v2,
                                                                      assert_workdir_consistent):
    manifest = tiny_dataset(n_frames=30)
    space = tmp_path / "space.yaml"
    space.write_text(FINETUNE_SPACE)
    workdir = tmp_path / "work"
    run = ["run", "--study", "rearing", "--dataset", str(manifest), "--backbones", "i3d_inflated_mobilenet_v2",
           "--heads", "finetune", "--search-space", str(space), "--n-trials", "1", "--workdir", str(workdir),
           "--no-progress"]
    refused = _cli(*run, check=False)
    assert refused.returncode == 2
    line = refused.stderr.strip().splitlines()[-1]
    assert "i3d_inflated_mobilenet_v2+finetune trains a clip network end to end, and this machine has no GPU" in line
    assert "estimated" in line and "--allow-cpu-finetune" in line
    with sqlite3.connect(workdir / "optuna.db") as db:  # the stores exist, empty: nothing was started
        assert db.execute("select count(*) from trials").fetchone()[0] == 0

    _cli(*run, "--allow-cpu-finetune")
    assert_workdir_consistent(workdir)
    board = _cli("leaderboard", "--study", "rearing", "--workdir", str(workdir), "--refit-seeds", "1",
                 "--no-two-stream", "--no-progress")
    assert "i3d_inflated_mobilenet_v2" in board.stdout and "finetune" in board.stdout

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("mbr-bench/rearing")
    runs = lambda kind: client.search_runs([experiment.experiment_id], f"tags.`mbr.kind` = '{kind}'")  # noqa: E731
    trials, refits = runs("trial"), runs("refit")
    assert [t.data.tags["mbr.head"] for t in trials] == ["finetune"]
    trial = trials[0].data.metrics
    assert 0.0 <= trial["cv/pr_auc_mean"] <= 1.0 and trial["compute/n_params"] > 2_000_000  # the whole network
    assert {"fold0/pr_auc", "fold1/pr_auc"} <= set(trial)  # one score per fold, as any pair
    assert [r.data.tags["mbr.head"] for r in refits] == ["finetune"]
    assert 0.0 <= refits[0].data.metrics["test/pr_auc_mean"] <= 1.0

    # The registered model is the fine-tuned network: predict rebuilds it and scores a new video's crops.
    video = manifest.parent / "videos" / "t2.mp4"
    _cli("predict", "--model", "mbr-bench.rearing", "--tracking-uri", f"sqlite:///{workdir / 'mlflow.db'}", str(video),
         "--pose", str(manifest.parent / "poses" / "t2.csv"), "--out", str(tmp_path / "out"), "--workdir", str(workdir))
    import pandas as pd

    table = pd.read_csv(tmp_path / "out" / "t2.csv")
    assert len(table) == 30 and table["rearing_probability"].between(0, 1).all()
