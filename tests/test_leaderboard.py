"""Search -> leaderboard (refit, test once, report) -> predict, end to end on synthetic data."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest

from mbr_bench.benchmark.cli import main

BEHAVIOUR = "grooming"


def _space(tmp_path):
    """Small heads that still learn the synthetic grooming posture from pose features."""
    path = tmp_path / "space.yaml"
    path.write_text(
        "frame_mlp: {units: {choices: [32]}, sequence_length: 100, max_epochs: 12, patience: 3,"
        " learning_rate: {low: 3.0e-3, high: 1.0e-2, log: true}}\n"
        "lstm: {units: {choices: [16]}, sequence_length: 100, max_epochs: 12, patience: 3,"
        " learning_rate: {low: 3.0e-3, high: 1.0e-2, log: true}}\n"
    )
    return path


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A finished search of two pairs, plus a third pair whose only trial failed."""
    from mbr_bench.benchmark.data.synthetic import generate
    from mbr_bench.tracking.runs import Tracker

    root = tmp_path_factory.mktemp("board")
    manifest = generate(root / "data", n_videos=5, n_frames=400, seed=5, n_test=2)
    workdir, uri = root / "work", f"sqlite:///{root}/work/mlflow.db"
    argv = ["run", "--study", BEHAVIOUR, "--dataset", str(manifest), "--backbones", "pose", "--heads", "frame_mlp",
            "lstm", "--n-trials", "2", "--workdir", str(workdir), "--tracking-uri", uri,
            "--search-space", str(_space(root)), "--no-progress"]
    assert main(argv) == 0
    tracker = Tracker(uri)
    with tracker.pair_run(BEHAVIOUR, "pose", "tcn") as pair:
        with pytest.raises(RuntimeError), pair.trial_run(0, {"nb_filters": 8}):
            raise RuntimeError("out of memory <on purpose> & more")
    return {"manifest": manifest, "workdir": workdir, "uri": uri, "root": root}


@pytest.fixture(scope="module")
def board(searched):
    """The leaderboard of `searched`, built once (it refits the two finished pairs and registers the best).

    Holds the command line, what it printed, the rows of its CSV and the refit and leaderboard runs
    this first build created, so that every test requesting it sees the same first build whatever
    other tests did to the store before.
    """
    out = searched["root"] / "report"
    argv = ["leaderboard", "--study", BEHAVIOUR, "--workdir", str(searched["workdir"]),
            "--tracking-uri", searched["uri"], "--out", str(out), "--no-progress"]
    refits_before = _run_ids(_refits(searched))
    boards_before = _run_ids(_leaderboard_runs(searched))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(argv)
    assert code == 0
    return {
        "argv": argv,
        "out": out,
        "printed": printed.getvalue(),
        "rows": list(csv.DictReader((out / "leaderboard.csv").open())),
        "refits": [r for r in _refits(searched) if r.info.run_id not in refits_before],
        "leaderboard_runs": [r for r in _leaderboard_runs(searched) if r.info.run_id not in boards_before],
    }


def _client(searched):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=searched["uri"])


def _runs_of_kind(searched, kind):
    client = _client(searched)
    experiment = client.get_experiment_by_name(f"mbr-bench/{BEHAVIOUR}")
    return client.search_runs([experiment.experiment_id], f"tags.`mbr.kind` = '{kind}'")


def _refits(searched):
    return _runs_of_kind(searched, "refit")


def _leaderboard_runs(searched):
    return _runs_of_kind(searched, "leaderboard")


def _run_ids(runs):
    return {run.info.run_id for run in runs}


def _test_figures(rows):
    """Each CSV row's test-set columns (test_*, a test PR-AUC among them), in order."""
    figures = [{key: value for key, value in row.items() if key.startswith("test_")} for row in rows]
    assert figures and all(any(key.startswith("test_pr_auc") for key in row) for row in figures)
    return figures


def _printed_table(printed):
    """The rows of the table `mbr-bench leaderboard` printed for BEHAVIOUR, as {column: cell}, in printed order.

    Columns are cut at the dashes of the rule under the header (`format_table`), so a cell may
    hold spaces ("0.812 ± 0.030 (3)") or be empty (a failed pair's metrics).
    """
    lines = printed.splitlines()
    title = next(i for i, line in enumerate(lines) if line.startswith(f"{BEHAVIOUR}: "))
    header, rule = lines[title + 1], lines[title + 2]
    assert rule and set(rule) <= {"-", " "}, printed
    spans = [match.span() for match in re.finditer(r"-+", rule)]

    def cells(line):
        return [line[start:end].strip() for start, end in spans]

    body = []
    for line in lines[title + 3:]:
        if not line.strip():
            break
        body.append(dict(zip(cells(header), cells(line))))
    return body


def _check_printed_table(printed, rows):
    """The printed table has one line per pair of the CSV, in its order (by CV), with the same CV figure;
    a failed pair has no CV figure and shows its error."""
    table = _printed_table(printed)
    assert [line["pair"] for line in table] == [f"{r['backbone']}+{r['head']}" for r in rows]
    for line, row in zip(table, rows):
        if row["status"] == "ok":
            # "0.812 ± 0.014 (3)": CV mean, its spread, the number of folds.
            cv = re.fullmatch(r"(\d\.\d{3}) ± \d\.\d{3} \((\d+)\)", line["CV PR-AUC"])
            assert cv, line
            assert float(cv[1]) == pytest.approx(float(row["cv_pr_auc_mean"]), abs=5e-4)
            assert int(cv[2]) == int(row["cv_n_folds"]) >= 2
            assert line["error"] == ""
        else:
            assert line["CV PR-AUC"] == "" and line["F1"] == "", line
            assert line["error"].startswith("failed: ") and "RuntimeError: out of memory" in line["error"], line


@pytest.mark.slow
def test_leaderboard_refits_tests_and_reports_every_pair(searched, board, capsys):
    rows = board["rows"]
    assert f"{BEHAVIOUR}: 3 pair(s), sorted by CV PR-AUC" in board["printed"]
    _check_printed_table(board["printed"], rows)  # the failed pair is listed too, with its error

    files = {p.name for p in board["out"].iterdir()}
    assert {"leaderboard.csv", "leaderboard.md", "leaderboard.html"} <= files
    pngs = [p for p in board["out"].glob(f"{BEHAVIOUR}_*.png")]
    assert len(pngs) >= 5 and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)

    assert sorted((r["backbone"], r["head"]) for r in rows) == [("pose", "frame_mlp"), ("pose", "lstm"),
                                                                 ("pose", "tcn")]
    failed = next(r for r in rows if r["head"] == "tcn")
    assert failed["status"] == "failed" and "out of memory" in failed["error"]
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == 2
    cv = [float(r["cv_pr_auc_mean"]) for r in ok]
    assert cv == sorted(cv, reverse=True)  # sorted by CV, never by test
    html = (board["out"] / "leaderboard.html").read_text()
    assert "<on purpose>" not in html and "&lt;on purpose&gt;" in html

    # The models learnt: the held-out videos are recognised far above chance (a random guess scores the
    # positive rate), the temporal head best, as its CV score predicted; the per-frame baseline, with no
    # temporal context, at 1.75x chance or more (it scores about 2x, depending on its search's draws).
    refits = board["refits"]
    assert len(refits) == 2
    best_row = ok[0]
    for refit in refits:
        metrics = refit.data.metrics
        positive_rate = metrics["test/positive_rate"]
        bound = max(0.5, 3 * positive_rate) if refit.info.run_id == best_row["refit_run_id"] else 1.75 * positive_rate
        assert metrics["test/pr_auc_mean"] >= bound, (refit.info.run_name, metrics)
        assert 0.0 < metrics["test/pr_auc_pooled"] <= 1.0
        for key in ("accuracy", "precision", "recall", "f1", "bout_f1_iou10", "bout_f1_iou25", "bout_f1_iou50"):
            assert 0.0 <= metrics[f"test/{key}"] <= 1.0 and 0.0 <= metrics[f"test_post/{key}"] <= 1.0
        assert metrics["compute/refit_cpu_seconds"] > 0 and metrics["compute/search_cpu_seconds"] > 0
        assert metrics["compute/inference_frames_per_second"] > 0 and metrics["compute/n_params"] > 0
        assert 0.0 < metrics["decision/threshold"] < 1.0
        assert metrics["decision/score_post"] >= metrics["decision/score_raw"]
        bundle = json.loads(_download(searched, refit.info.run_id, "model/bundle.json").read_text())
        assert bundle["backbone"]["name"] == "pose" and bundle["decision"]["threshold"] == pytest.approx(
            metrics["decision/threshold"])
        # The default final model is one head refit on all training videos, with 3 seeds whose spread is logged.
        assert refit.data.tags["mbr.final"] == "refit" and refit.data.tags["mbr.protocol"] == "mean_curve"
        assert len(bundle["heads"]) == 1
        assert metrics["test_seeds/pr_auc_mean_sd"] >= 0.0
        assert min(abs(metrics["test_seeds/pr_auc_mean_mean"] - metrics["test/pr_auc_mean"]), 1.0) <= 0.5
        # The pair run's row in the MLflow runs table shows its final model's test figures beside its CV.
        pair = _client(searched).get_run(refit.data.tags["mlflow.parentRunId"])
        assert pair.data.metrics["test/pr_auc_mean"] == pytest.approx(metrics["test/pr_auc_mean"])
        assert pair.data.metrics["test/pr_auc_pooled"] == pytest.approx(metrics["test/pr_auc_pooled"])
    client = _client(searched)
    registered = client.search_model_versions(f"name = 'mbr-bench.{BEHAVIOUR}'")
    best = min(ok, key=lambda r: -float(r["cv_pr_auc_mean"]))
    assert [v.run_id for v in registered] == [best["refit_run_id"]]
    # As MLflow 3 shows a run's models (the runs table's Models column): a logged model whose source is
    # the refit run, listed among the run's outputs, pointing at the bundle the version serves.
    refit_run = client.get_run(best["refit_run_id"])
    models = client.search_logged_models([refit_run.info.experiment_id],
                                         filter_string=f"source_run_id = '{best['refit_run_id']}'")
    assert [str(m.status) for m in models] == ["READY"]
    assert [o.model_id for o in refit_run.outputs.model_outputs] == [models[0].model_id]
    assert models[0].tags["mbr.bundle"] == registered[0].source
    assert json.loads(models[0].tags["mlflow.modelVersions"]) == [{"name": f"mbr-bench.{BEHAVIOUR}",
                                                                   "version": registered[0].version}]
    assert len(board["leaderboard_runs"]) == 1
    assert not client.search_runs([refits[0].info.experiment_id], "attributes.status = 'RUNNING'")

    # Again: the refits are current, so nothing is trained and the numbers are the same.
    existing = _run_ids(_refits(searched))
    assert main(board["argv"]) == 0
    capsys.readouterr()
    assert _run_ids(_refits(searched)) == existing
    again = list(csv.DictReader((board["out"] / "leaderboard.csv").open()))
    assert _test_figures(again) == _test_figures(rows)
    assert len(client.search_model_versions(f"name = 'mbr-bench.{BEHAVIOUR}'")) == 1
    # --no-refit only reads what exists.
    assert main(board["argv"] + ["--no-refit", "--no-register"]) == 0
    assert _test_figures(csv.DictReader((board["out"] / "leaderboard.csv").open())) == _test_figures(rows)
    assert _run_ids(_refits(searched)) == existing


def _download(searched, run_id, path):
    import tempfile
    from pathlib import Path

    return Path(_client(searched).download_artifacts(run_id, path, tempfile.mkdtemp()))


@pytest.mark.slow
def test_predict_on_a_test_video_reproduces_the_leaderboard(searched, board, tmp_path, capsys):
    from mbr_bench.benchmark.metrics import frame_metrics

    data = searched["manifest"].parent
    registered = f"mbr-bench.{BEHAVIOUR}"
    best_run_id = _client(searched).search_model_versions(f"name = '{registered}'")[0].run_id
    any_run_id = board["refits"][0].info.run_id
    for model, run_id in ((registered, best_run_id), (any_run_id, any_run_id)):
        per_video = json.loads(_download(searched, run_id, "predictions/test_videos.json").read_text())
        out = tmp_path / model.replace(".", "_")
        argv = ["predict", "--model", model, str(data / "videos" / "ofs04.mp4"), "--pose", str(data / "poses"),
                "--out", str(out), "--workdir", str(searched["workdir"]), "--tracking-uri", searched["uri"],
                "--no-progress"]
        assert main(argv) == 0, capsys.readouterr().err
        assert "ofs04" in capsys.readouterr().out
        predicted = pd.read_csv(out / "ofs04.csv")
        truth = pd.read_csv(data / "labels" / "ofs04.csv")[BEHAVIOUR].to_numpy()
        assert len(predicted) == len(truth) == per_video["ofs04"]["frames"]
        proba = predicted[f"{BEHAVIOUR}_probability"].to_numpy()
        labels = predicted[f"{BEHAVIOUR}_label"].to_numpy()
        assert frame_metrics(truth, proba)["pr_auc"] == pytest.approx(per_video["ofs04"]["pr_auc"], abs=1e-9)
        with np.load(_download(searched, run_id, "predictions/test_predictions.npz")) as scored:
            k = next(k for k in range(len(scored.files)) if str(scored[f"video_{k}"]) == "ofs04")
            np.testing.assert_allclose(proba, scored[f"proba_{k}"], atol=1e-6)  # the same probabilities
        assert frame_metrics(truth, labels.astype(float))["f1"] == pytest.approx(per_video["ofs04"]["f1_post"],
                                                                                 abs=1e-9)


@pytest.mark.slow
def test_the_threshold_never_reads_the_test_set(searched, board, tmp_path, capsys):
    """Shuffling the test labels changes the test scores, never the threshold or the post-processing."""
    import sqlite3

    # The refits of this test go to a copy of the store: the other tests' store keeps only the first build's
    # (`--no-refit` shows a pair's newest refit, whichever test set it was scored on).
    store = tmp_path / "mlflow.db"
    with sqlite3.connect(searched["uri"].removeprefix("sqlite:///")) as source, sqlite3.connect(store) as target:
        source.backup(target)
    copied = {**searched, "uri": f"sqlite:///{store}"}
    before = {r.info.run_name: r for r in board["refits"]}
    existing = _run_ids(_refits(copied))
    assert existing == _run_ids(_refits(searched))
    copy = tmp_path / "data"
    shutil.copytree(searched["manifest"].parent, copy)
    rng = np.random.default_rng(0)
    for video in ("ofs04", "ofs05"):
        path = copy / "labels" / f"{video}.csv"
        table = pd.read_csv(path)
        table[BEHAVIOUR] = rng.permutation(table[BEHAVIOUR].to_numpy())
        table.to_csv(path, index=False)
    argv = ["leaderboard", "--study", BEHAVIOUR, "--workdir", str(searched["workdir"]), "--tracking-uri",
            copied["uri"], "--dataset", str(copy / "dataset.yaml"), "--out", str(tmp_path / "report"),
            "--no-register", "--no-progress"]
    assert main(argv) == 0
    capsys.readouterr()
    after = [r for r in _refits(copied) if r.info.run_id not in existing]
    assert len(after) == 2  # a new test set means new test scores
    for refit in after:
        old = before[refit.info.run_name]
        assert refit.data.metrics["decision/threshold"] == old.data.metrics["decision/threshold"]
        post = {k: v for k, v in refit.data.params.items() if k.startswith("postprocess.")}
        assert post == {k: v for k, v in old.data.params.items() if k.startswith("postprocess.")}
        assert refit.data.metrics["test/pr_auc_mean"] < old.data.metrics["test/pr_auc_mean"]


def test_leaderboard_without_a_search_is_a_one_line_error(tmp_path, capsys):
    from mbr_bench.tracking.runs import Tracker

    argv = ["leaderboard", "--study", "grooming", "--workdir", str(tmp_path), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no mlflow.db here" in err and "mbr-bench run" in err
    assert not (tmp_path / "mlflow.db").exists()  # a mistyped --workdir gets no empty store
    Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")  # a store in which no search ran
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no search for behaviour 'grooming'" in err and "mbr-bench run" in err
    assert main(argv[:2] + ["all"] + argv[3:]) == 2
    assert "no mbr-bench search" in capsys.readouterr().err
    assert main(argv + ["--threshold", "recall=0.9"]) == 2
    assert "recall" in capsys.readouterr().err


@pytest.mark.slow
def test_an_ensemble_final_model_is_the_fold_models_and_predicts_as_it_was_tested(searched, board, tmp_path,
                                                                                    capsys):
    """--final ensemble deploys the best trial's K fold models; predict gives the test evaluation's probabilities."""
    import sqlite3

    store = tmp_path / "mlflow.db"  # a copy: the other tests' store keeps only the default final models
    with sqlite3.connect(searched["uri"].removeprefix("sqlite:///")) as source, sqlite3.connect(store) as target:
        source.backup(target)
    copied = {**searched, "uri": f"sqlite:///{store}"}
    existing = _run_ids(_refits(copied))
    argv = ["leaderboard", "--study", BEHAVIOUR, "--workdir", str(searched["workdir"]), "--tracking-uri",
            copied["uri"], "--out", str(tmp_path / "report"), "--no-register", "--no-progress", "--final", "ensemble"]
    assert main(argv) == 0
    capsys.readouterr()
    ensembles = [r for r in _refits(copied) if r.info.run_id not in existing]
    assert len(ensembles) == 2 and all(r.data.tags["mbr.final"] == "ensemble" for r in ensembles)
    for run in ensembles:
        bundle = json.loads(_download(copied, run.info.run_id, "model/bundle.json").read_text())
        assert len(bundle["heads"]) == int(run.data.metrics["cv/n_folds"]) >= 2
    data = searched["manifest"].parent
    run_id = ensembles[0].info.run_id
    out = tmp_path / "predicted"
    assert main(["predict", "--model", run_id, str(data / "videos" / "ofs04.mp4"), "--pose", str(data / "poses"),
                 "--out", str(out), "--workdir", str(searched["workdir"]), "--tracking-uri", copied["uri"],
                 "--no-progress"]) == 0, capsys.readouterr().err
    proba = pd.read_csv(out / "ofs04.csv")[f"{BEHAVIOUR}_probability"].to_numpy()
    with np.load(_download(copied, run_id, "predictions/test_predictions.npz")) as scored:
        k = next(k for k in range(len(scored.files)) if str(scored[f"video_{k}"]) == "ofs04")
        np.testing.assert_allclose(proba, scored[f"proba_{k}"], atol=1e-6)
    # --no-refit with --final refit shows nothing stale: the default final models are still the current ones.
    assert main(argv[:-2] + ["--no-refit"]) == 0
    rows = list(csv.DictReader((tmp_path / "report" / "leaderboard.csv").open()))
    assert {row["final"] for row in rows if row["refit_run_id"]} == {"refit"}
