"""Tracking layer against a real MLflow SQLite store: hierarchy, statuses, metrics, artifacts, provenance."""

from __future__ import annotations

import json
import platform
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient
from sklearn.metrics import average_precision_score

from mbr_bench.core.errors import ConfigError
from mbr_bench.core.process import process_alive, process_identity
from mbr_bench.tracking.figures import confusion_counts, confusion_figure, pr_curve_figure, pr_curve_points
from mbr_bench.tracking.provenance import (
    TAG_VALUE_LIMIT,
    git_commit,
    json_tag,
    peak_rss_mb,
    standard_tags,
)
from mbr_bench.tracking.queries import default_tracking_uri, pair_runs, sqlite_path, trial_runs, ui_command
from mbr_bench.tracking.runs import TAG_PROCESS, Tracker

REPO_ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
COMPUTE = {
    "train_seconds": 12.5,
    "seconds_per_epoch": 0.5,
    "validation_frames_per_second": 4000.0,
    "peak_rss_mb": 812.0,
    "n_params": 12345,
    "embedding_seconds_per_frame": 0.004,
    "epochs_total": 25,
}


def synthetic_fold(seed: int, n: int = 400, rate: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Labels with `rate` positives and probabilities that separate them imperfectly."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < rate).astype(int)
    proba = np.clip(0.35 * y + 0.65 * rng.random(n), 0.0, 1.0)
    return y, proba


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[str, Path]:
    """One SQLite store for the module: creating its tables takes seconds, tests use separate behaviours."""
    root = tmp_path_factory.mktemp("store")
    return f"sqlite:///{root}/mlflow.db", root


@pytest.fixture(scope="module")
def tracker(store) -> Tracker:
    return Tracker(store[0])


@pytest.fixture(scope="module")
def client(store) -> MlflowClient:
    return MlflowClient(tracking_uri=store[0])


@pytest.fixture(scope="module")
def study(tracker: Tracker) -> dict:
    """wall_rearing -> resnet50v2+tcn -> 2 trials x 3 folds; returns what was logged."""
    logged = {"folds": {}, "summary": {}}
    assert tracker.close_stale_runs("wall_rearing") == []
    with tracker.pair_run("wall_rearing", "resnet50v2", "tcn", tags={"mbr.seed": "7"}) as pair:
        pair.log_params({"n_trials": 2, "sequence_length": 32})
        for number in range(2):
            with pair.trial_run(number, {"units": 16 * (number + 1), "dropout": 0.25}) as trial:
                pr_aucs = []
                for k in range(3):
                    y, proba = synthetic_fold(10 * number + k)
                    pr_auc = float(average_precision_score(y, proba))
                    pr_aucs.append(pr_auc)
                    metrics = {"pr_auc": pr_auc, "accuracy": float(np.mean((proba >= 0.5) == y))}
                    trial.log_fold(k, f"video{k}", metrics, y, proba, epochs=5 + k)
                    logged["folds"][(number, k)] = (metrics, y, proba)
                summary = {"pr_auc_mean": float(np.mean(pr_aucs)), "pr_auc_std": float(np.std(pr_aucs))}
                trial.log_summary(summary)
                trial.log_compute(COMPUTE)
                trial.log_figures()
                trial.log_predictions()
                logged["summary"][number] = summary
    logged["pair_id"] = pair.run_id
    return logged


def test_experiment_and_pair_run(study, tracker, client):
    experiment = client.get_experiment(tracker.experiment_id("wall_rearing"))
    assert experiment.name == "mbr-bench/wall_rearing"
    parent = client.get_run(study["pair_id"])
    assert parent.info.status == "FINISHED"
    assert parent.info.run_name == "resnet50v2+tcn"
    tags = parent.data.tags
    assert (tags["mbr.behaviour"], tags["mbr.backbone"], tags["mbr.head"], tags["mbr.kind"]) == (
        "wall_rearing", "resnet50v2", "tcn", "pair",
    )
    assert tags["mbr.seed"] == "7"
    assert parent.data.params == {"n_trials": "2", "sequence_length": "32"}
    assert [run.info.run_id for run in pair_runs(client, "wall_rearing")] == [study["pair_id"]]


def test_trials_nest_under_the_pair(study, client):
    trials = trial_runs(client, study["pair_id"])
    assert [run.info.run_name for run in trials[:2]] == ["trial-000", "trial-001"]
    for number, run in enumerate(trials[:2]):
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == study["pair_id"]
        assert run.data.tags["mbr.kind"] == "trial"
        assert run.data.tags["mbr.trial"] == str(number)
        assert run.data.tags["mbr.state"] == "complete"
        assert run.data.tags["mbr.backbone"] == "resnet50v2"  # identity repeated for trial-level searches
        assert run.data.tags["mbr.seed"] == "7"
        assert run.data.params == {"units": str(16 * (number + 1)), "dropout": "0.25"}


def test_fold_summary_and_compute_metrics(study, client):
    for number, run in enumerate(trial_runs(client, study["pair_id"])[:2]):
        metrics = run.data.metrics
        for k in range(3):
            logged, _, _ = study["folds"][(number, k)]
            assert metrics[f"fold{k}/pr_auc"] == pytest.approx(logged["pr_auc"])
            assert metrics[f"fold{k}/accuracy"] == pytest.approx(logged["accuracy"])
            assert metrics[f"fold{k}/epochs"] == 5 + k
            assert run.data.tags[f"mbr.fold{k}.video"] == f"video{k}"
        assert "cv/pr_auc" not in metrics  # cv/ holds summaries only: one fold's value is fold<k>/ or fold/
        history = client.get_metric_history(run.info.run_id, "fold/pr_auc")
        by_step = {m.step: m.value for m in history}
        assert sorted(by_step) == [0, 1, 2]
        assert [by_step[k] for k in range(3)] == pytest.approx(
            [study["folds"][(number, k)][0]["pr_auc"] for k in range(3)]
        )
        assert metrics["cv/pr_auc_mean"] == pytest.approx(study["summary"][number]["pr_auc_mean"])
        assert metrics["cv/pr_auc_std"] == pytest.approx(study["summary"][number]["pr_auc_std"])
        assert {key: metrics[f"compute/{key}"] for key in COMPUTE} == pytest.approx(COMPUTE)


def test_figures_and_fold_data_are_artifacts(study, client, store, tmp_path):
    run = trial_runs(client, study["pair_id"])[1]
    run_id = run.info.run_id
    # Artifacts land beside the database by default.
    assert run.info.artifact_uri.startswith(str(store[1] / "mlartifacts"))
    names = {info.path for info in client.list_artifacts(run_id, "figures")}
    assert names == {"figures/pr_curve.png", "figures/confusion_matrix.png"}
    for name in names:
        local = Path(client.download_artifacts(run_id, name, str(tmp_path)))
        assert local.read_bytes()[:8] == PNG_MAGIC
    fold_files = {info.path for info in client.list_artifacts(run_id, "folds")}
    assert fold_files == {f"folds/fold{k}_{kind}.json" for k in range(3) for kind in ("pr_curve", "confusion")}
    _, y, proba = study["folds"][(1, 2)]
    def artifact_json(name: str) -> dict:
        return json.loads(Path(client.download_artifacts(run_id, name, str(tmp_path))).read_text())

    curve = artifact_json("folds/fold2_pr_curve.json")
    assert curve["val_video"] == "video2"
    assert len(curve["precision"]) == len(curve["recall"]) == len(curve["thresholds"]) + 1 <= 200
    assert curve["average_precision"] == pytest.approx(average_precision_score(y, proba))
    assert curve["recall"][0] == 1.0 and curve["recall"][-1] == 0.0
    confusion = artifact_json("folds/fold2_confusion.json")
    predicted = proba >= 0.5
    assert confusion["tp"] == int(np.sum(predicted & (y == 1)))
    assert confusion["fp"] == int(np.sum(predicted & (y == 0)))
    assert np.sum(confusion["matrix"]) == len(y)


def test_out_of_fold_predictions_and_typed_params_read_back(study, client):
    from mbr_bench.tracking.queries import trial_params, trial_predictions

    run = trial_runs(client, study["pair_id"])[1]
    folds = trial_predictions(client, run.info.run_id)
    assert [video for video, _, _ in folds] == ["video0", "video1", "video2"]
    for k, (_, y, proba) in enumerate(folds):
        _, logged_y, logged_proba = study["folds"][(1, k)]
        np.testing.assert_array_equal(y, logged_y)
        np.testing.assert_allclose(proba, logged_proba, rtol=1e-6)
    assert trial_params(client, run.info.run_id) == {"units": 32, "dropout": 0.25}  # numbers, not text


def test_resumed_study_adds_trials_under_the_same_parent(study, tracker, client):
    with tracker.pair_run("wall_rearing", "resnet50v2", "tcn", tags={"mbr.seed": "7"}) as pair:
        assert pair.run_id == study["pair_id"]
        assert client.get_run(pair.run_id).info.status == "RUNNING"
        with pair.trial_run(2, {"units": 64, "dropout": 0.5}) as trial:
            trial.log_summary({"pr_auc_mean": 0.5})
    trials = trial_runs(client, study["pair_id"])
    assert [run.info.run_name for run in trials] == ["trial-000", "trial-001", "trial-002"]
    assert client.get_run(study["pair_id"]).info.status == "FINISHED"
    assert len(pair_runs(client, "wall_rearing")) == 1
    # Another pair of the same study gets its own parent.
    with tracker.pair_run("wall_rearing", "resnet50v2", "lstm") as other:
        assert other.run_id != study["pair_id"]


def test_changed_param_on_resume_goes_to_a_tag(tracker, client):
    with tracker.pair_run("resume_params", "pose", "tcn") as pair:
        pair.log_params({"n_trials": 10})
    with tracker.pair_run("resume_params", "pose", "tcn") as again:
        again.log_params({"n_trials": 10})  # unchanged: no error, no tag
        again.log_params({"n_trials": 30})
    run = client.get_run(pair.run_id)
    assert run.data.params["n_trials"] == "10"
    assert run.data.tags["mbr.param.n_trials"] == "30"


def test_fold_without_positives_is_logged(tracker, client, tmp_path):
    with tracker.pair_run("no_positives", "pose", "tcn") as pair:
        with pair.trial_run(0, {}) as trial:
            trial.log_fold(0, "empty", {"pr_auc": float("nan")}, np.zeros(50), np.linspace(0, 1, 50), epochs=1)
            trial.log_figures()
    run = client.get_run(trial.run_id)
    assert run.info.status == "FINISHED"
    assert np.isnan(run.data.metrics["fold0/pr_auc"])
    local = client.download_artifacts(trial.run_id, "folds/fold0_pr_curve.json", str(tmp_path))
    curve = json.loads(Path(local).read_text())
    assert curve["average_precision"] is None and curve["positive_rate"] == 0.0


def test_explicit_artifact_root(store):
    assert Tracker(store[0], artifact_root="s3://bucket/mbr").artifact_root == "s3://bucket/mbr"


def test_exception_fails_trial_and_the_pair_it_escapes(tracker, client):
    with pytest.raises(RuntimeError, match="boom"):
        with tracker.pair_run("failing", "pose", "tcn") as pair:
            with pair.trial_run(0, {"units": 8}) as trial:
                raise RuntimeError("boom")
    failed = client.get_run(trial.run_id)
    assert failed.info.status == "FAILED"
    assert failed.data.tags["mbr.state"] == "failed"
    assert "RuntimeError: boom" in failed.data.tags["mbr.error"]
    assert client.get_run(pair.run_id).info.status == "FAILED"


def test_exception_caught_inside_the_pair_fails_only_the_trial(tracker, client):
    with tracker.pair_run("caught", "pose", "tcn") as pair:
        with pytest.raises(ValueError):
            with pair.trial_run(0, {}) as trial:
                raise ValueError("bad trial")
        with pair.trial_run(1, {}) as good:
            pass
    assert client.get_run(trial.run_id).info.status == "FAILED"
    assert client.get_run(good.run_id).info.status == "FINISHED"
    assert client.get_run(pair.run_id).info.status == "FINISHED"


def test_keyboard_interrupt_kills(tracker, client):
    with pytest.raises(KeyboardInterrupt):
        with tracker.pair_run("interrupted", "pose", "tcn") as pair:
            with pair.trial_run(0, {}) as trial:
                raise KeyboardInterrupt
    assert client.get_run(trial.run_id).info.status == "KILLED"
    assert client.get_run(pair.run_id).info.status == "KILLED"


def test_pruned_trial_ends_finished_with_state_pruned(tracker, client):
    import optuna

    with tracker.pair_run("pruned", "pose", "tcn") as pair:
        with pytest.raises(optuna.TrialPruned):
            with pair.trial_run(0, {}) as by_exception:
                raise optuna.TrialPruned()
        with pair.trial_run(1, {}) as by_call:
            by_call.set_state("pruned")
        with pytest.raises(ValueError, match="complete, pruned, failed"):
            by_call.set_state("stopped")
    for trial in (by_exception, by_call):
        run = client.get_run(trial.run_id)
        assert (run.info.status, run.data.tags["mbr.state"]) == ("FINISHED", "pruned")


def test_trial_left_open_is_closed_with_its_pair(tracker, client):
    with tracker.pair_run("left_open", "pose", "tcn") as pair:
        trial = pair.trial_run(0, {})  # never ended by the caller
    assert client.get_run(trial.run_id).info.status == "KILLED"
    with pytest.raises(RuntimeError, match="has ended"):
        pair.trial_run(1, {})


def test_two_pairs_in_one_process_do_not_share_state(tracker, client):
    with tracker.pair_run("parallel", "pose", "tcn") as first, tracker.pair_run("parallel", "pose", "lstm") as second:
        a = first.trial_run(0, {})
        b = second.trial_run(0, {})
        assert mlflow.active_run() is None  # the global run stack is never used
        b.end()
        a.end()
    assert client.get_run(a.run_id).data.tags["mlflow.parentRunId"] == first.run_id
    assert client.get_run(b.run_id).data.tags["mlflow.parentRunId"] == second.run_id
    assert client.get_run(a.run_id).info.status == "FINISHED"


def test_many_metrics_and_params_are_batched(tracker, client):
    with tracker.pair_run("batched", "pose", "tcn") as pair:
        pair.log_metrics({f"m{i}": float(i) for i in range(2100)})
        pair.log_params({f"p{i}": i for i in range(250)})
    run = client.get_run(pair.run_id)
    assert len(run.data.metrics) == 2100 and run.data.metrics["m2099"] == 2099.0
    assert len(run.data.params) == 250


def test_close_stale_runs(tracker, client):
    experiment_id = tracker.experiment_id("stale")
    orphan = client.create_run(experiment_id, run_name="orphan")  # left RUNNING, as by a dead process
    dead = client.create_run(experiment_id, tags={TAG_PROCESS: f"{platform.node()}:999999999:1"})
    remote = client.create_run(experiment_id, tags={TAG_PROCESS: "some-other-host:123:456"})
    with tracker.pair_run("stale", "pose", "tcn") as live:
        closed = tracker.close_stale_runs("stale")
        assert sorted(closed) == sorted([orphan.info.run_id, dead.info.run_id])
        assert client.get_run(live.run_id).info.status == "RUNNING"  # opened by this (live) process
    assert client.get_run(orphan.info.run_id).info.status == "KILLED"
    assert client.get_run(dead.info.run_id).info.status == "KILLED"
    assert client.get_run(remote.info.run_id).info.status == "RUNNING"
    assert tracker.close_stale_runs("stale", everywhere=True) == [remote.info.run_id]
    assert client.get_run(remote.info.run_id).info.status == "KILLED"
    assert tracker.close_stale_runs("no_such_behaviour") == []


def test_process_identity_tells_live_from_dead():
    assert process_alive(process_identity()) is True
    assert process_alive(f"{platform.node()}:999999999:1") is False
    assert process_alive("elsewhere:1:1") is None


def test_existing_and_deleted_experiments(store, client):
    made_elsewhere = client.create_experiment("mbr-bench/made_elsewhere")
    fresh = Tracker(store[0])  # a second tracker, e.g. a resumed process
    assert fresh.experiment_id("made_elsewhere") == made_elsewhere
    gone = client.create_experiment("mbr-bench/gone")
    client.delete_experiment(gone)
    with pytest.raises(ConfigError, match="mlflow experiments restore"):
        fresh.experiment_id("gone")


def test_tracker_creates_the_store_folder(tmp_path):
    uri = default_tracking_uri(tmp_path / "new" / "work")
    tracker = Tracker(uri)
    assert (tmp_path / "new" / "work").is_dir()
    assert tracker.artifact_root == str((tmp_path / "new" / "work" / "mlartifacts").resolve())


def test_store_locations_and_ui_command(tmp_path):
    uri = default_tracking_uri(tmp_path)
    assert uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert sqlite_path(uri) == tmp_path.resolve() / "mlflow.db"
    assert sqlite_path("sqlite://") is None and sqlite_path("http://mlflow:5000") is None
    argv = ui_command(uri, port=5055)
    assert argv[:4] == [sys.executable, "-m", "mlflow", "ui"]
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert argv[argv.index("--port") + 1] == "5055"
    assert argv[argv.index("--backend-store-uri") + 1] == uri
    assert argv[argv.index("--default-artifact-root") + 1] == str(tmp_path.resolve() / "mlartifacts")
    assert "--default-artifact-root" not in ui_command("http://mlflow:5000")


def test_package_versions_does_not_import_tensorflow():
    code = (
        "import json, sys\n"
        "from mbr_bench.tracking.provenance import package_versions, standard_tags\n"
        "versions = package_versions()\n"
        "standard_tags('abc', {'pose': 'k1'}, 0)\n"
        "print(json.dumps([versions, 'tensorflow' in sys.modules, 'keras' in sys.modules]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    versions, tf_imported, keras_imported = json.loads(done.stdout.strip().splitlines()[-1])
    assert not tf_imported and not keras_imported
    assert set(versions) >= {"tensorflow", "keras", "keras-tcn", "optuna", "mlflow", "numpy", "scikit-learn",
                             "opencv-python-headless", "pandas", "mbr-bench"}
    assert versions["mlflow"] == mlflow.__version__
    assert all(isinstance(value, str) and value for value in versions.values())


def test_git_commit(tmp_path):
    assert git_commit(tmp_path) is None
    assert git_commit(tmp_path / "does" / "not" / "exist") is None
    commit = git_commit(REPO_ROOT)
    if (REPO_ROOT / ".git").exists():
        assert commit is not None and re.fullmatch(r"[0-9a-f]{40}", commit)


def test_standard_tags_fit_mlflow_limits():
    cache_keys = {f"video{i:04d}": "f" * 64 for i in range(200)}  # ~15 kB of JSON
    tags = standard_tags("d" * 64, cache_keys, seed=3)
    assert set(tags) >= {"mbr.dataset_hash", "mbr.cache_keys", "mbr.git_commit", "mbr.seed", "mbr.versions"}
    assert all(len(value) <= TAG_VALUE_LIMIT for value in tags.values())
    kept = json.loads(tags["mbr.cache_keys"])
    assert kept["_truncated"] == 200 - (len(kept) - 1) > 0
    assert kept["video0000"] == "f" * 64
    assert tags["mbr.seed"] == "3"
    assert json.loads(tags["mbr.versions"])["numpy"] == np.__version__
    assert json.loads(json_tag({"a": "1"})) == {"a": "1"}


def test_peak_rss_is_plausible():
    peak = peak_rss_mb()
    assert 10 < peak < 1_000_000
    assert peak_rss_mb(include_children=True) >= peak


def test_pr_curve_points_are_thinned_and_handle_no_positives():
    y, proba = synthetic_fold(1, n=5000)
    curve = pr_curve_points(y, proba, max_points=200)
    assert len(curve["precision"]) <= 200 and len(curve["thresholds"]) == len(curve["precision"]) - 1
    assert curve["thresholds"] == sorted(curve["thresholds"])
    assert curve["positive_rate"] == pytest.approx(y.mean())
    empty = pr_curve_points(np.zeros(10), np.linspace(0, 1, 10))
    assert empty["average_precision"] is None and empty["precision"] == []
    with pytest.raises(ValueError, match="paired"):
        pr_curve_points(np.zeros(10), np.zeros(9))


def test_figures_draw_folds_pooled_and_baseline():
    folds = [(*synthetic_fold(k), f"fold {k}") for k in range(2)] + [(np.zeros(20), np.full(20, 0.1), "fold 2")]
    figure = pr_curve_figure(folds)
    labels = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert labels[0].startswith("fold 0: AP ") and labels[2] == "fold 2: no positives"
    assert any(label.startswith("pooled: AP ") for label in labels)
    assert any(label.startswith("positive rate ") for label in labels)
    cm = confusion_counts([0, 0, 1, 1, 1], [0.1, 0.7, 0.5, 0.2, 0.9])
    assert cm.tolist() == [[1, 1], [1, 2]]
    cells = [text.get_text() for text in confusion_figure(cm, "t").axes[0].texts]
    assert cells == ["1\n50.0%", "1\n50.0%", "1\n33.3%", "2\n66.7%"]
