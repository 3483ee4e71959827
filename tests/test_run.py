"""`mbr-bench run` end to end on a small synthetic dataset: MLflow structure and resume."""

from __future__ import annotations

import json

import pytest

from mbr_bench.benchmark.cli import main

FIGURES = {"figures/pr_curve.png", "figures/confusion_matrix.png"}
COMPUTE = {"compute/train_seconds", "compute/seconds_per_epoch", "compute/validation_frames_per_second",
           "compute/peak_rss_mb", "compute/n_params", "compute/embedding_seconds_per_frame"}


def _artifacts(client, run_id, path=""):
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= _artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return found


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    from mbr_bench.benchmark.data.synthetic import generate

    return generate(tmp_path_factory.mktemp("data"), n_videos=4, n_frames=400, seed=5, n_test=1)


@pytest.mark.slow
def test_run_tracks_every_pair_and_resumes(small_dataset, tmp_path, capsys):
    import optuna
    from mlflow.tracking import MlflowClient

    workdir = tmp_path / "work"
    uri = f"sqlite:///{tmp_path}/tracking/mlflow.db"
    argv = ["run", "--study", "wall_rearing", "--dataset", str(small_dataset), "--backbones", "pose",
            "--heads", "frame_mlp", "lstm", "--n-trials", "2", "--workdir", str(workdir), "--tracking-uri", uri,
            "--search-space", str(_tiny_space(tmp_path)), "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "pose" in out and "lstm" in out and "mbr-bench ui --tracking-uri" in out

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("mbr-bench/wall_rearing")
    # A model-training experiment (MLflow 3 opens one without a kind as GenAI), with the runs view
    # that `mbr-bench ui` links to: best CV first, the pair summary as columns.
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    view = json.loads(experiment.tags["mlflow.sharedViewState.mbr-bench"])
    assert view["orderByKey"] == "metrics.`cv/pr_auc_mean`" and view["orderByAsc"] is False
    assert {"metrics.`cv/pr_auc_mean`", "metrics.`compute/search_cpu_seconds`"} <= set(view["selectedColumns"])
    pairs = client.search_runs([experiment.experiment_id], "tags.`mbr.kind` = 'pair'")
    assert sorted(r.info.run_name for r in pairs) == ["pose+frame_mlp", "pose+lstm"]
    for pair in pairs:
        # The pair's own row: its best trial's CV, its trials and its search cost, under the trials' names.
        trials = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{pair.info.run_id}'")
        complete = [t for t in trials if t.data.tags["mbr.state"] == "complete"]
        best = max(complete, key=lambda t: t.data.metrics["cv/pr_auc_mean"])
        summary = pair.data.metrics
        assert summary["cv/pr_auc_mean"] == pytest.approx(best.data.metrics["cv/pr_auc_mean"])
        assert summary["cv/pr_auc_se"] == pytest.approx(best.data.metrics["cv/pr_auc_se"], nan_ok=True)
        assert summary["n_trials_complete"] == len(complete)
        assert summary["compute/search_cpu_seconds"] == pytest.approx(
            sum(t.data.metrics["compute/cpu_seconds"] for t in trials), rel=1e-6)
        assert "best_cv_pr_auc" not in summary
        # Trials are numbered from 1, as the progress lines number them, and the best names one of them.
        assert sorted(t.info.run_name for t in trials) == ["trial-001", "trial-002"]
        assert sorted(t.data.tags["mbr.trial"] for t in trials) == ["1", "2"]
        assert pair.data.tags["mbr.best_trial"] == best.data.tags["mbr.trial"]
        assert pair.info.status == "FINISHED"
        for tag in ("mbr.dataset_hash", "mbr.seed", "mbr.versions", "mbr.cache_keys", "mbr.git_commit"):
            assert tag in pair.data.tags, tag
        assert set(json.loads(pair.data.tags["mbr.versions"])) >= {"tensorflow", "optuna", "mlflow", "keras-tcn"}
        trials = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{pair.info.run_id}'")
        assert len(trials) == 2
        for trial in trials:
            assert trial.info.status == "FINISHED"
            metrics = trial.data.metrics
            assert trial.data.tags["mbr.state"] in ("complete", "pruned")
            assert {"fold0/pr_auc", "fold0/accuracy", "fold0/precision", "fold0/recall"} <= set(metrics)
            if trial.data.tags["mbr.state"] == "complete":
                assert {"cv/pr_auc_mean", "cv/pr_auc_std", "cv/accuracy_mean", "cv/recall_mean"} <= set(metrics)
                assert 0.0 <= metrics["cv/pr_auc_mean"] <= 1.0
                assert "fold2/pr_auc" in metrics
            assert COMPUTE <= set(metrics)
            assert metrics["compute/n_params"] > 0 and metrics["compute/train_seconds"] > 0
            artifacts = _artifacts(client, trial.info.run_id)
            assert FIGURES <= artifacts
            assert {"folds/fold0_pr_curve.json", "folds/fold0_confusion.json"} <= artifacts
            assert trial.data.params  # the trial's hyperparameters

    storage = f"sqlite:///{(workdir / 'optuna.db').resolve()}"
    study = optuna.load_study(study_name="wall_rearing/pose+lstm", storage=storage)
    assert len(study.trials) == 2

    # The budget is the study's: the same command again runs nothing, a larger one adds the difference
    # to the same studies and the same parent runs.
    assert main(argv) == 0
    capsys.readouterr()
    assert len(optuna.load_study(study_name="wall_rearing/pose+lstm", storage=storage).trials) == 2
    assert main([("4" if a == "2" else a) for a in argv]) == 0
    capsys.readouterr()
    study = optuna.load_study(study_name="wall_rearing/pose+lstm", storage=storage)
    assert len(study.trials) == 4
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3]
    pairs_after = client.search_runs([experiment.experiment_id], "tags.`mbr.kind` = 'pair'")
    assert sorted(r.info.run_id for r in pairs_after) == sorted(r.info.run_id for r in pairs)
    lstm_pair = next(r for r in pairs_after if r.info.run_name == "pose+lstm")
    trials = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{lstm_pair.info.run_id}'")
    assert len(trials) == 4
    assert not client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'")


def _tiny_space(tmp_path):
    """Small models and few epochs: this test checks bookkeeping, not learning."""
    path = tmp_path / "tiny_space.yaml"
    path.write_text(
        "frame_mlp: {units: {choices: [8, 16]}, sequence_length: 100, max_epochs: 4, patience: 2,"
        " learning_rate: {low: 1.0e-3, high: 1.0e-2, log: true}}\n"
        "lstm: {units: {choices: [8, 16]}, sequence_length: 100, max_epochs: 4, patience: 2,"
        " learning_rate: {low: 1.0e-3, high: 1.0e-2, log: true}}\n"
    )
    return path


def test_run_rejects_unknown_names_and_unlabelled_data(small_dataset, tmp_path, capsys):
    base = ["run", "--dataset", str(small_dataset), "--workdir", str(tmp_path), "--no-progress"]
    assert main(base + ["--study", "sniffing"]) == 2
    assert "unknown behaviour 'sniffing'; known: grooming, mid_rearing, wall_rearing" in capsys.readouterr().err
    assert main(base + ["--study", "grooming", "--heads", "gru"]) == 2
    assert "unknown head 'gru'; known:" in capsys.readouterr().err
    assert main(base + ["--study", "grooming", "--backbones", "vgg"]) == 2
    assert "unknown backbone 'vgg'" in capsys.readouterr().err
    assert main(base + ["--study", "grooming", "--backbones", "pose", "--storage", "notaurl"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--storage notaurl: cannot open the Optuna storage" in err
    assert not (tmp_path / "cache").exists()  # failed before any embedding


def test_a_validation_video_without_the_behaviour_stops_unless_allowed(tiny_dataset, tmp_path, capsys):
    path = tiny_dataset(n_frames=60, split=("train", "train", "train", "test"))
    labels = path.parent / "labels" / "t2.csv"
    lines = labels.read_text().splitlines()
    labels.write_text("\n".join([lines[0]] + [line.rsplit(",", 1)[0] + ",0" for line in lines[1:]]) + "\n")
    argv = ["run", "--study", "rearing", "--dataset", str(path), "--backbones", "pose", "--heads", "frame_mlp",
            "--n-trials", "1", "--workdir", str(tmp_path / "w"), "--search-space", str(_tiny_space(tmp_path))]
    assert main(argv) == 2  # by default a bad input: the message names the labels file and the flag
    assert "--allow-empty-folds" in capsys.readouterr().err
    assert main(argv + ["--allow-empty-folds"]) == 0
    captured = capsys.readouterr()
    assert "fold 3 is left out for rearing" in captured.err
    assert "fold 1/2" in captured.err and "fold 2/2" in captured.err and "fold 3/" not in captured.err


@pytest.mark.slow
def test_builtin_default_builds_its_data_once_and_skips_a_cnn_without_weights(tmp_path, monkeypatch, capsys):
    """`mbr-bench run --study X` with no --dataset, shrunk: offline, the CNN is skipped, not fatal."""
    from mbr_bench.benchmark import runner
    from mbr_bench.benchmark.backbones.keras_apps import KerasApplicationBackbone
    from mbr_bench.core.errors import WeightsError

    monkeypatch.setattr(runner, "DEMO_VIDEOS", 4)
    monkeypatch.setattr(runner, "DEMO_FRAMES", 300)
    monkeypatch.setattr(runner, "DEMO_HEADS", ("frame_mlp",))
    monkeypatch.setattr(runner, "DEMO_TRIALS", 1)

    real_build = KerasApplicationBackbone.build

    def offline(self):  # no network: ImageNet weights cannot be had; random ones (the estimate's probe) can
        if self.weights == "imagenet":
            raise WeightsError(f"{self.name}: could not get ImageNet weights (no network); copy the file")
        return real_build(self)

    monkeypatch.setattr(KerasApplicationBackbone, "build", offline)
    argv = ["run", "--study", "wall_rearing", "--workdir", str(tmp_path)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "writing the built-in synthetic open field" in captured.err
    assert "skipping mobilenet_v2: mobilenet_v2: could not get ImageNet weights" in captured.err
    assert (tmp_path / "synthetic" / "dataset.yaml").is_file()
    table = [line for line in captured.out.splitlines() if line.startswith("wall_rearing")]
    assert len(table) == 1 and "pose" in table[0] and "frame_mlp" in table[0]
    assert not list((tmp_path / "cache").glob("mobilenet_v2/*.npy"))  # nothing half-written

    assert main(argv + ["--n-trials", "2"]) == 0  # the second run reuses the data and adds a trial
    captured = capsys.readouterr()
    assert "writing the built-in synthetic open field" not in captured.err
    assert "1 finished, 0 running trial(s) of 2" in captured.err


def _endless_run(tiny_dataset, tmp_path, workdir, *extra: str) -> list[str]:
    """`run` argv on the tiny dataset with a frame_mlp that would train for about 20 min (100000 epochs)."""
    path = tiny_dataset(n_frames=60)
    space = tmp_path / "endless.yaml"
    space.write_text("frame_mlp: {units: 8, sequence_length: 30, batch_size: 8, max_epochs: 100000, patience: 100000,"
                     " learning_rate: {low: 1.0e-3, high: 1.0e-2, log: true}}\n")
    return ["run", "--study", "rearing", "--dataset", str(path), "--backbones", "pose", "--heads", "frame_mlp",
            "--workdir", str(workdir), "--search-space", str(space), *extra]


@pytest.mark.slow
def test_timeout_stops_a_running_trial_and_hands_it_back(tiny_dataset, tmp_path):
    """A trial that would train for a quarter of an hour, under --timeout 4: stopped at an epoch's end,
    handed back (failed, with a waiting retry that carries its parameters), in one line, no traceback."""
    import subprocess
    import sys

    import optuna
    from mlflow.tracking import MlflowClient

    workdir = tmp_path / "w"
    argv = _endless_run(tiny_dataset, tmp_path, workdir, "--n-trials", "3", "--timeout", "4")
    # A guard against a hang, not a speed test: without the hard budget the trial trains for about 20 min.
    done = subprocess.run([sys.executable, "-m", "mbr_bench.benchmark.cli", *argv], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "failed with parameters" not in done.stderr, done.stderr[-2000:]
    stopped = [line for line in done.stderr.splitlines() if "--timeout 4 s reached" in line]
    assert len(stopped) == 1 and "trial 1 stopped at fold 1, epoch" in stopped[0] and "handed back" in stopped[0]

    study = optuna.load_study(study_name="rearing/pose+frame_mlp", storage=f"sqlite:///{workdir / 'optuna.db'}")
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.WAITING]
    assert study.trials[1].params == study.trials[0].params
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("mbr-bench/rearing")
    assert not client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'")
    trials = client.search_runs([experiment.experiment_id], "tags.`mbr.kind` = 'trial'")
    assert [run.info.status for run in trials] == ["KILLED"]


@pytest.mark.slow
def test_ctrl_c_during_a_trial_ends_in_one_line(tiny_dataset, tmp_path):
    import signal
    import sqlite3
    import subprocess
    import sys
    import time

    workdir = tmp_path / "w"
    argv = _endless_run(tiny_dataset, tmp_path, workdir, "--n-trials", "1", "--no-progress")
    # Ctrl-C reaches the child as in a terminal, even when this test runs as a background job (whose
    # shell starts it with SIGINT ignored, which a child would inherit).
    run = subprocess.Popen([sys.executable, "-m", "mbr_bench.benchmark.cli", *argv], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        running = 0
        while not running and time.monotonic() < deadline and run.poll() is None:
            time.sleep(0.5)
            try:
                with sqlite3.connect(workdir / "optuna.db") as db:
                    running = db.execute("SELECT COUNT(*) FROM trials WHERE state = 'RUNNING'").fetchone()[0]
            except sqlite3.Error:
                continue
        assert running, "the trial never started"
        time.sleep(1)  # the model is being built or trained: the signal must not be lost in either
        run.send_signal(signal.SIGINT)
        _, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "failed with parameters" not in err, err[-3000:]
    assert err.splitlines()[-1].startswith("mbr-bench: interrupted"), err[-2000:]
