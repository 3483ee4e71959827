"""Where the tracking store lives, how to open its UI, and read-back queries for the leaderboard."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Run

from ..core.stores import default_artifact_root, default_tracking_uri, sqlite_path  # noqa: F401  (re-exported)
from .schema import (
    KIND_ENSEMBLE,
    KIND_PAIR,
    KIND_REFIT,
    KIND_TRIAL,
    OUT_OF_FOLD_FILE,
    PARAMS_FILE,
    TAG_KIND,
    TAG_PARENT,
    TAG_TRIAL,
    VIEW_KEY,
    experiment_name,
    prediction_artifact,
)

# MLflow draws a progress bar for every artifact download; ours are small and many.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def ui_command(tracking_uri: str, host: str = "127.0.0.1", port: int = 5000) -> list[str]:
    """The argv of ``mlflow ui`` for a store, bound to localhost unless `host` says otherwise.

    MLflow runs as ``<this python> -m mlflow``, so the UI comes from the same environment even when
    its ``bin/`` folder is not on PATH. For a SQLite store the default artifact root is the one
    `Tracker` uses, so experiments created from the UI keep their artifacts beside the others.
    """
    argv = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri]
    artifact_root = default_artifact_root(tracking_uri)
    if artifact_root is not None:
        argv += ["--default-artifact-root", artifact_root]
    return argv + ["--host", host, "--port", str(int(port))]


def experiment_url(ui_url: str, experiment_id: str) -> str:
    """A link that opens an experiment's runs table in the MLflow UI with mbr-bench's columns (see
    schema.VIEW_KEY): MLflow 3 takes the page's mode from the link, not from the experiment's kind."""
    return (f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
            f"&viewStateShareKey={VIEW_KEY}")


def quote_filter_value(value: str) -> str:
    """`value` quoted for an MLflow filter string; MLflow's parser has no escape for quotes."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise ValueError(f"cannot search MLflow for {value!r}: it holds both quote characters")


def search_all(client: MlflowClient, experiment_ids: list[str], filter_string: str, order_by=None) -> list[Run]:
    """Every run matching `filter_string`, over all result pages."""
    runs: list[Run] = []
    page_token = None
    while True:
        page = client.search_runs(
            experiment_ids, filter_string, max_results=1000, order_by=order_by, page_token=page_token
        )
        runs.extend(page)
        page_token = page.token
        if not page_token:
            return runs


def pair_runs(client: MlflowClient, behaviour: str) -> list[Run]:
    """The parent runs (one per backbone + head pair) of a behaviour's study, oldest first; [] if none."""
    experiment = client.get_experiment_by_name(experiment_name(behaviour))
    if experiment is None:
        return []
    return search_all(
        client,
        [experiment.experiment_id],
        f"tags.`{TAG_KIND}` = '{KIND_PAIR}'",
        order_by=["attributes.start_time ASC"],
    )


def trial_runs(client: MlflowClient, parent_run_id: str) -> list[Run]:
    """The trial runs nested under a pair run, by trial number."""
    parent = client.get_run(parent_run_id)
    runs = search_all(
        client,
        [parent.info.experiment_id],
        f"tags.`{TAG_PARENT}` = {quote_filter_value(parent_run_id)} and tags.`{TAG_KIND}` = '{KIND_TRIAL}'",
    )
    return sorted(runs, key=lambda run: (int(run.data.tags.get(TAG_TRIAL, -1)), run.info.start_time))


def trial_params(client: MlflowClient, run_id: str) -> dict:
    """A trial's hyperparameters with their types (MLflow's own params are text)."""
    with tempfile.TemporaryDirectory(prefix="mbr-params-") as folder:
        path = client.download_artifacts(run_id, PARAMS_FILE, folder)
        return dict(json.loads(Path(path).read_text())["params"])


def trial_predictions(client: MlflowClient, run_id: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """A trial's out-of-fold (validation video, labels, probabilities), in fold order."""
    with tempfile.TemporaryDirectory(prefix="mbr-oof-") as folder:
        path = client.download_artifacts(run_id, prediction_artifact(OUT_OF_FOLD_FILE), folder)
        with np.load(path) as data:
            folds = sorted(int(key[2:]) for key in data.files if key.startswith("y_"))
            return [(str(data[f"video_{k}"]), data[f"y_{k}"], data[f"proba_{k}"]) for k in folds]


def count_test_evaluations(client: MlflowClient, behaviour: str) -> int:
    """How many times a behaviour's test set has been scored: its FINISHED refit and ensemble runs
    (each scores the test videos once), over every pair and every invocation; 0 without an experiment."""
    experiment = client.get_experiment_by_name(experiment_name(behaviour))
    if experiment is None:
        return 0
    return sum(len(search_all(client, [experiment.experiment_id],
                              f"tags.`{TAG_KIND}` = '{kind}' and attributes.status = 'FINISHED'"))
               for kind in (KIND_REFIT, KIND_ENSEMBLE))
