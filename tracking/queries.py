"""Where the tracking store lives, how to open its UI, and read-back queries for the leaderboard."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Run

# MLflow draws a progress bar for every artifact download; ours are small and many.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

EXPERIMENT_PREFIX = "mbr-bench/"

# Tag keys shared by the writer (runs.py) and the readers below.
TAG_KIND = "mbr.kind"
TAG_BEHAVIOUR = "mbr.behaviour"
TAG_BACKBONE = "mbr.backbone"
TAG_HEAD = "mbr.head"
TAG_TRIAL = "mbr.trial"
TAG_STATE = "mbr.state"
TAG_PARENT = "mlflow.parentRunId"
TAG_DATASET = "mbr.dataset"  # absolute path of the dataset.yaml a pair was searched on
TAG_TRAIN_HASH = "mbr.train_hash"  # hash of the train videos' files: what a search's results depend on
TAG_TEST_HASH = "mbr.test_hash"  # on a refit run: hash of the test videos' files it was scored on
TAG_WEIGHTS = "mbr.weights"  # the --weights given to the search ("" = the backbone's default)
TAG_BATCH_SIZE = "mbr.batch_size"  # embedding batch size
TAG_SOURCE_RUN = "mbr.source_run"  # on a refit run: the trial run whose parameters it used
# Artifact names shared with runs.py.
PARAMS_FILE = "params.json"
OUT_OF_FOLD_FILE = "out_of_fold.npz"


def experiment_name(behaviour: str) -> str:
    """The MLflow experiment holding one behaviour's study: ``mbr-bench/<behaviour>``."""
    return f"{EXPERIMENT_PREFIX}{behaviour}"


def default_tracking_uri(workdir: Path) -> str:
    """The embedded store: a SQLite file ``mlflow.db`` in `workdir`, as an absolute URI."""
    return f"sqlite:///{(Path(workdir) / 'mlflow.db').resolve()}"


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file behind a ``sqlite:///`` URI (absolute), or None for other stores and in-memory SQLite."""
    if not tracking_uri.startswith("sqlite:"):
        return None
    # sqlite:///rel.db is relative, sqlite:////abs.db absolute; urlsplit keeps the leading "/" of both.
    path = unquote(urlsplit(tracking_uri).path)
    if path.startswith("/"):
        path = path[1:]
    if not path or path == ":memory:":
        return None
    return Path(path).resolve()


def default_artifact_root(tracking_uri: str) -> str | None:
    """Artifacts of a SQLite store go to ``mlartifacts/`` beside the database file.

    Other stores (a tracking server, PostgreSQL) return None: the server decides where artifacts go.
    """
    db = sqlite_path(tracking_uri)
    return None if db is None else str(db.parent / "mlartifacts")


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
        f"tags.`{TAG_KIND}` = 'pair'",
        order_by=["attributes.start_time ASC"],
    )


def trial_runs(client: MlflowClient, parent_run_id: str) -> list[Run]:
    """The trial runs nested under a pair run, by trial number."""
    parent = client.get_run(parent_run_id)
    runs = search_all(
        client,
        [parent.info.experiment_id],
        f"tags.`{TAG_PARENT}` = {quote_filter_value(parent_run_id)} and tags.`{TAG_KIND}` = 'trial'",
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
        path = client.download_artifacts(run_id, f"predictions/{OUT_OF_FOLD_FILE}", folder)
        with np.load(path) as data:
            folds = sorted(int(key[2:]) for key in data.files if key.startswith("y_"))
            return [(str(data[f"video_{k}"]), data[f"y_{k}"], data[f"proba_{k}"]) for k in folds]
