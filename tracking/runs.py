"""The run hierarchy: an experiment per behaviour, a parent run per (backbone, head), a nested run per trial.

Every call goes through one `MlflowClient` with an explicit run id. Nothing here reads or changes
mlflow's global active-run stack, so several pairs can be tracked in one process at once,
and code that uses ``mlflow.start_run`` elsewhere is not disturbed.

    tracker = Tracker(default_tracking_uri(workdir))
    tracker.close_stale_runs("wall_rearing")
    with tracker.pair_run("wall_rearing", "resnet50v2", "tcn", tags=standard_tags(...)) as pair:
        with pair.trial_run(trial_label(trial.number), trial.params) as run:
            run.log_fold(0, "m3v1", {"pr_auc": 0.81}, y_true, proba, epochs=12)
            ...
            run.log_summary({"pr_auc_mean": 0.8, "pr_auc_std": 0.02})
            run.log_figures()

Leaving a ``with`` block normally ends the run FINISHED; an exception ends it FAILED and a
KeyboardInterrupt KILLED, and the exception goes on. A trial left by ``optuna.TrialPruned`` ends
FINISHED with tag ``mbr.state=pruned``.
"""

from __future__ import annotations

import getpass
import json
import logging
import re
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy
import sqlalchemy.exc
from mlflow import MlflowClient
from mlflow.entities import Experiment, Metric, Param, Run, RunTag
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_SOURCE_NAME, MLFLOW_SOURCE_TYPE, MLFLOW_USER
from optuna.exceptions import TrialPruned

from ..core.errors import ConfigError, TimeBudgetReached
from ..core.process import process_alive, process_identity
from ..core.stores import setup_lock
from .figures import (
    DEFAULT_THRESHOLD,
    binary_inputs,
    confusion_counts,
    confusion_figure,
    pr_curve_figure,
    pr_curve_points,
)
from .provenance import TAG_VALUE_LIMIT
from .queries import default_artifact_root, quote_filter_value, search_all, sqlite_path
from .schema import (
    COMPUTE,
    CV,
    EXPERIMENT_KIND,
    EXPERIMENT_PREFIX,
    FIGURE_CONFUSION,
    FIGURE_PR_CURVE,
    FOLD_SERIES,
    KIND_PAIR,
    KIND_TRIAL,
    OUT_OF_FOLD_FILE,
    PARAMS_FILE,
    PREDICTIONS_DIR,
    STATE_COMPLETE,
    STATE_FAILED,
    STATE_PRUNED,
    TAG_BACKBONE,
    TAG_BEHAVIOUR,
    TAG_BUNDLE,
    TAG_ERROR,
    TAG_EXPERIMENT_KIND,
    TAG_HEAD,
    TAG_KIND,
    TAG_PROCESS,
    TAG_STATE,
    TAG_TRIAL,
    TRIAL_STATES,
    VIEW_KEY,
    VIEW_TAG_PREFIX,
    changed_param_tag,
    experiment_name,
    fold_artifact,
    fold_metric,
    fold_video_tag,
    runs_view,
    with_prefix,
)

logger = logging.getLogger(__name__)

RUNNING, FINISHED, FAILED, KILLED = "RUNNING", "FINISHED", "FAILED", "KILLED"
PARAM_VALUE_LIMIT = 6000

# log_batch limits: 1000 entities per request, of which at most 100 params and tags together.
_METRICS_PER_REQUEST = 900
_PARAMS_TAGS_PER_REQUEST = 100


def _quiet_store_startup() -> None:
    """Hide the INFO lines MLflow and alembic print when they create or migrate a SQLite store.

    Only loggers nobody configured are touched, and warnings and errors still show.
    """
    for name in ("alembic", "mlflow.store.db.utils"):
        store_logger = logging.getLogger(name)
        if store_logger.level == logging.NOTSET:
            store_logger.setLevel(logging.WARNING)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _source_tags() -> dict[str, str]:
    """Who and what started the run, as the MLflow UI's User and Source columns show it."""
    tags = {MLFLOW_SOURCE_NAME: Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python",
            MLFLOW_SOURCE_TYPE: "LOCAL"}
    try:
        tags[MLFLOW_USER] = getpass.getuser()
    except (KeyError, OSError):  # containers often run under a uid without a passwd entry
        pass
    return tags


def _safe_name(text: str) -> str:
    """`text` usable as one folder name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "experiment"


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
    return text[:TAG_VALUE_LIMIT]


class _Run:
    """One MLflow run addressed by id; a context manager that always ends it."""

    def __init__(self, client: MlflowClient, run: Run):
        self._client = client
        self.run_id: str = run.info.run_id
        self.experiment_id: str = run.info.experiment_id
        self.status: str = RUNNING
        # MLflow params cannot change once logged; remember them to skip repeats and catch changes.
        self._params: dict[str, str] = dict(run.data.params)

    @property
    def ended(self) -> bool:
        """Whether `end` has run."""
        return self.status != RUNNING

    def log_params(self, params: dict) -> None:
        """Log parameters (values as text).

        A parameter already on the run with another value (a resumed search started with a new
        setting) cannot be overwritten in MLflow: the new value goes to tag ``mbr.param.<name>``.
        """
        new, changed = [], {}
        for key, value in params.items():
            key, text = str(key), str(value)[:PARAM_VALUE_LIMIT]
            if key not in self._params:
                new.append(Param(key, text))
                self._params[key] = text
            elif self._params[key] != text:
                changed[changed_param_tag(key)] = text
        if changed:
            logger.info(
                "run %s keeps its first parameter values; changed ones go to tags %s", self.run_id, sorted(changed)
            )
        self._log_batch(params=new, tags=self._tags(changed))

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Log metrics in one batch, optionally at `step`."""
        timestamp = _now_ms()
        self._log_batch(
            metrics=[Metric(str(key), float(value), timestamp, int(step or 0)) for key, value in metrics.items()]
        )

    def set_tags(self, tags: dict) -> None:
        """Set tags (values as text, cut to MLflow's tag length limit)."""
        self._log_batch(tags=self._tags(tags))

    def log_dict(self, dictionary: dict, artifact_file: str) -> None:
        """Store `dictionary` as a JSON (or YAML, by extension) artifact at `artifact_file`."""
        self._client.log_dict(self.run_id, dictionary, artifact_file)

    def log_artifact(self, local_path: str | Path, artifact_path: str | None = None) -> None:
        """Copy a local file or folder into the run's artifacts, under `artifact_path`."""
        self._client.log_artifact(self.run_id, str(local_path), artifact_path)

    def end(self, status: str = FINISHED, error: BaseException | None = None) -> None:
        """End the run with `status` (FINISHED, FAILED or KILLED); later calls do nothing."""
        if self.ended:
            return
        if status not in (FINISHED, FAILED, KILLED):
            raise ValueError(f"run status must be FINISHED, FAILED or KILLED, not {status!r}")
        if error is not None:
            self._best_effort_tags({TAG_ERROR: _error_text(error)})
        self._client.set_terminated(self.run_id, status)
        self.status = status

    def _best_effort_tags(self, tags: dict) -> None:
        """Set tags on the way out; a failure is logged, since ending the run matters more."""
        try:
            self.set_tags(tags)
        except Exception:
            logger.warning("could not tag run %s with %s", self.run_id, sorted(tags), exc_info=True)

    def _exit_status(self, exc: BaseException | None) -> str:
        if exc is None:
            return FINISHED
        if isinstance(exc, (KeyboardInterrupt, TimeBudgetReached)):  # stopped from outside, not failed
            return KILLED
        return FAILED

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback) -> bool:
        status = self._exit_status(exc)
        try:
            self.end(status, error=exc if status != FINISHED else None)
        except Exception:
            if exc is None:
                raise
            # The store failing now must not hide the error that ended the block.
            logger.exception("could not mark run %s %s", self.run_id, status)
        return False

    @staticmethod
    def _tags(tags: dict) -> list[RunTag]:
        return [RunTag(str(key), str(value)[:TAG_VALUE_LIMIT]) for key, value in tags.items()]

    def _log_batch(self, metrics=(), params=(), tags=()) -> None:
        metrics, params, tags = list(metrics), list(params), list(tags)
        while metrics or params or tags:
            metric_chunk, metrics = metrics[:_METRICS_PER_REQUEST], metrics[_METRICS_PER_REQUEST:]
            param_chunk, params = params[:_PARAMS_TAGS_PER_REQUEST], params[_PARAMS_TAGS_PER_REQUEST:]
            room = _PARAMS_TAGS_PER_REQUEST - len(param_chunk)
            tag_chunk, tags = tags[:room], tags[room:]
            self._client.log_batch(
                self.run_id, metrics=metric_chunk, params=param_chunk, tags=tag_chunk, synchronous=True
            )


class TrialRun(_Run):
    """The nested run of one Optuna trial: its parameters, per-fold and summary metrics, cost, figures."""

    def __init__(self, client: MlflowClient, run: Run, trial_number: int, title: str):
        super().__init__(client, run)
        self.trial_number = trial_number
        self.state: str | None = None
        self._title = title
        self._folds: dict[int, tuple[np.ndarray, np.ndarray, str]] = {}
        self._fold_videos: dict[int, str] = {}

    def set_state(self, state: str) -> None:
        """Record how the trial ended for Optuna: ``complete``, ``pruned`` or ``failed`` (tag ``mbr.state``)."""
        if state not in TRIAL_STATES:
            raise ValueError(f"trial state must be one of {', '.join(TRIAL_STATES)}, not {state!r}")
        self.set_tags({TAG_STATE: state})
        self.state = state

    def log_fold(
        self,
        fold_index: int,
        val_video: str,
        metrics: dict[str, float],
        y_true: np.ndarray,
        proba: np.ndarray,
        epochs: int,
    ) -> None:
        """Log one cross-validation fold, scored on the held-out video `val_video`.

        Metrics go to ``fold{k}/<name>`` and, for plotting across folds, to ``fold/<name>`` at step k;
        ``epochs`` to ``fold{k}/epochs`` and ``fold/epochs``. The fold's PR curve (thinned to 200
        points) and confusion counts at threshold 0.5 go to ``folds/fold{k}_pr_curve.json`` and
        ``folds/fold{k}_confusion.json``. `y_true` and `proba` (per frame) are kept for `log_figures`.
        """
        k = int(fold_index)
        y, p = binary_inputs(y_true, proba)
        values = {**{str(name): float(value) for name, value in metrics.items()}, "epochs": float(epochs)}
        timestamp = _now_ms()
        self._log_batch(
            metrics=[Metric(fold_metric(k, name), value, timestamp, 0) for name, value in values.items()]
            + [Metric(f"{FOLD_SERIES}{name}", value, timestamp, k) for name, value in values.items()],
            tags=self._tags({fold_video_tag(k): val_video}),
        )
        self.log_dict({"fold": k, "val_video": val_video, **pr_curve_points(y, p)}, fold_artifact(k, "pr_curve"))
        cm = confusion_counts(y, p, DEFAULT_THRESHOLD)
        self.log_dict(
            {
                "fold": k,
                "val_video": val_video,
                "threshold": DEFAULT_THRESHOLD,
                "rows": "true label (0, 1)",
                "columns": "predicted label (0, 1)",
                "matrix": cm.tolist(),
                "tn": int(cm[0, 0]), "fp": int(cm[0, 1]), "fn": int(cm[1, 0]), "tp": int(cm[1, 1]),
            },
            fold_artifact(k, "confusion"),
        )
        self._folds[k] = (y, p, f"fold {k} ({val_video})")
        self._fold_videos[k] = val_video

    def log_summary(self, summary: dict[str, float]) -> None:
        """Log the cross-validation summary, e.g. ``pr_auc_mean``, ``pr_auc_std``, as ``cv/<key>``."""
        self.log_metrics(with_prefix(CV, summary))

    def log_compute(self, compute: dict[str, float]) -> None:
        """Log the cost of the trial as ``compute/<key>``.

        Keys in use: ``train_seconds``, ``cpu_seconds``, ``seconds_per_epoch``, ``validation_frames_per_second``,
        ``peak_rss_mb``, ``n_params``, ``embedding_seconds_per_frame``, ``epochs_total``.
        """
        self.log_metrics(
            {key if key.startswith(COMPUTE) else f"{COMPUTE}{key}": value for key, value in compute.items()}
        )

    def log_figures(self) -> None:
        """Log the PR curve and the confusion matrix of all folds logged so far, pooled.

        ``figures/pr_curve.png``: pooled curve bold, each fold thin, AP in the legend, positive rate
        dashed. ``figures/confusion_matrix.png``: counts and row shares at threshold 0.5. Does
        nothing before the first `log_fold`.
        """
        if not self._folds:
            logger.debug("trial run %s has no folds yet: no figures", self.run_id)
            return
        folds = [self._folds[k] for k in sorted(self._folds)]
        figure = pr_curve_figure(folds, title=f"{self._title}: {len(folds)} folds")
        try:
            self._client.log_figure(self.run_id, figure, FIGURE_PR_CURVE)
        finally:
            figure.clear()
        y = np.concatenate([fold[0] for fold in folds])
        p = np.concatenate([fold[1] for fold in folds])
        figure = confusion_figure(
            confusion_counts(y, p, DEFAULT_THRESHOLD),
            title=f"{self._title}: {len(folds)} folds pooled, threshold {DEFAULT_THRESHOLD:g}",
        )
        try:
            self._client.log_figure(self.run_id, figure, FIGURE_CONFUSION)
        finally:
            figure.clear()

    def log_predictions(self) -> None:
        """Store the out-of-fold labels and probabilities of every fold logged so far.

        ``predictions/out_of_fold.npz`` holds, per fold k, ``video_k`` (its validation video),
        ``y_k`` (int8) and ``proba_k`` (float32): what the decision threshold and the
        post-processing are tuned on after the search, without training again.
        """
        if not self._folds:
            return
        arrays: dict[str, np.ndarray] = {}
        for k in sorted(self._folds):
            y, p, _ = self._folds[k]
            arrays[f"video_{k}"] = np.array(self._fold_videos[k])
            arrays[f"y_{k}"] = y.astype(np.int8)
            arrays[f"proba_{k}"] = p.astype(np.float32)
        with tempfile.TemporaryDirectory(prefix="mbr-oof-") as folder:
            path = Path(folder) / OUT_OF_FOLD_FILE
            np.savez_compressed(path, **arrays)
            self.log_artifact(path, PREDICTIONS_DIR)

    def end(self, status: str = FINISHED, error: BaseException | None = None) -> None:
        """End the run; a trial without a state gets ``complete`` (FINISHED) or ``failed`` (FAILED, KILLED)."""
        if not self.ended and self.state is None:
            self.state = STATE_COMPLETE if status == FINISHED else STATE_FAILED
            self._best_effort_tags({TAG_STATE: self.state})
        super().end(status, error)

    def _exit_status(self, exc: BaseException | None) -> str:
        if exc is not None and _is_pruned(exc):
            if self.state is None:
                self.state = STATE_PRUNED
                self._best_effort_tags({TAG_STATE: self.state})
            return FINISHED
        return super()._exit_status(exc)


def _is_pruned(exc: BaseException) -> bool:
    """Whether `exc` is Optuna's signal that the pruner stopped the trial (not a failure)."""
    return isinstance(exc, TrialPruned)


class PairRun(_Run):
    """The parent run of one (backbone, head) search in a behaviour's experiment; trials nest under it."""

    def __init__(
        self, client: MlflowClient, run: Run, behaviour: str, backbone: str, head: str, tags: dict[str, str]
    ):
        super().__init__(client, run)
        self.behaviour, self.backbone, self.head = behaviour, backbone, head
        # Identity and provenance tags are repeated on each trial, so trials can be searched on their own.
        self._trial_tags = {TAG_BEHAVIOUR: behaviour, TAG_BACKBONE: backbone, TAG_HEAD: head, **tags}
        self._open_trials: list[TrialRun] = []

    def trial_run(self, trial_number: int, params: dict, tags: dict | None = None) -> TrialRun:
        """Start the nested run ``trial-NNN`` of trial `trial_number` (numbered as the progress lines
        number it: `schema.trial_label`, from 1), with its parameters logged."""
        if self.ended:
            raise RuntimeError(f"pair run {self.run_id} has ended ({self.status}); open the pair again to add trials")
        run_tags = {
            **_source_tags(),
            **self._trial_tags,
            **(tags or {}),
            MLFLOW_PARENT_RUN_ID: self.run_id,
            TAG_KIND: KIND_TRIAL,
            TAG_TRIAL: str(int(trial_number)),
            TAG_PROCESS: process_identity(),
        }
        run = self._client.create_run(
            self.experiment_id,
            run_name=f"trial-{int(trial_number):03d}",
            tags={key: str(value)[:TAG_VALUE_LIMIT] for key, value in run_tags.items()},
        )
        title = f"{self.behaviour}: {self.backbone}+{self.head} trial {int(trial_number)}"
        trial = TrialRun(self._client, run, int(trial_number), title=title)
        self._open_trials = [t for t in self._open_trials if not t.ended] + [trial]
        try:
            trial.log_params(params)
            # Typed values (MLflow params are text), so a refit rebuilds exactly this head.
            trial.log_dict({"params": params}, PARAMS_FILE)
        except BaseException as exc:
            trial.end(KILLED if isinstance(exc, KeyboardInterrupt) else FAILED, error=exc)
            raise
        return trial

    def end(self, status: str = FINISHED, error: BaseException | None = None) -> None:
        """End the pair run; trials still open (not used in a ``with`` block) end KILLED first."""
        for trial in self._open_trials:
            if not trial.ended:
                trial._best_effort_tags({TAG_ERROR: "still open when its pair run ended"})
                trial.end(KILLED)
        self._open_trials = []
        super().end(status, error)


def experiment_tags() -> dict[str, str]:
    """A behaviour experiment's tags: model training (not GenAI), and the runs view `mbr-bench ui` links to."""
    return {TAG_EXPERIMENT_KIND: EXPERIMENT_KIND, VIEW_TAG_PREFIX + VIEW_KEY: json.dumps(runs_view())}


def add_missing_experiment_tags(client: MlflowClient, experiment: Experiment) -> None:
    """Give `experiment` the `experiment_tags` it lacks or holds another value of (an experiment from
    an older version, or edited in the UI)."""
    for key, value in experiment_tags().items():
        if experiment.tags.get(key) != value:
            client.set_experiment_tag(experiment.experiment_id, key, value)


def behaviour_experiments(tracking_uri: str) -> list[tuple[str, str]]:
    """(name, id) of every mbr-bench experiment of a store, each given `experiment_tags` if it lacks
    them (a store written by an older version), so the UI opens it on its runs."""
    client = _open_store(tracking_uri)
    found = []
    for experiment in client.search_experiments(filter_string=f"name LIKE '{EXPERIMENT_PREFIX}%'"):
        add_missing_experiment_tags(client, experiment)
        found.append((experiment.name, experiment.experiment_id))
    return sorted(found)


def _open_store(tracking_uri: str) -> MlflowClient:
    """A client whose store answered once, so a wrong URI fails here, in seconds, not mid-search."""
    db = sqlite_path(tracking_uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)  # SQLite creates the file but not its folder
    scheme = tracking_uri.split(":", 1)[0].split("+", 1)[0]
    if scheme in ("http", "https"):
        try:  # MLflow's own client retries for minutes before it gives up
            urllib.request.urlopen(tracking_uri.rstrip("/") + "/health", timeout=10).close()
        except (urllib.error.URLError, OSError) as error:
            raise OSError(f"no MLflow server answers there: {getattr(error, 'reason', error)}") from None
    elif scheme in ("postgresql", "mysql", "mssql"):
        try:  # one quick attempt; MLflow's store retries a refused connection for about two minutes
            engine = sqlalchemy.create_engine(tracking_uri, connect_args={"connect_timeout": 10})
            engine.connect().close()
            engine.dispose()
        except sqlalchemy.exc.SQLAlchemyError as error:
            raise OSError(str(error.orig if getattr(error, "orig", None) else error).strip()) from None
    # The first access creates and migrates the database: workers starting together must not run
    # those migrations at the same time.
    with setup_lock(tracking_uri):
        client = MlflowClient(tracking_uri=tracking_uri)
        client.search_experiments(max_results=1)
    return client


class Tracker:
    """Entry point: one tracking store (a SQLite file or a server URL) and its experiments."""

    def __init__(self, tracking_uri: str, artifact_root: str | Path | None = None):
        """Connect to a store; SQLite files (and their folders) are created on first use.

        Args:
            tracking_uri: ``sqlite:////abs/path/mlflow.db`` (see `default_tracking_uri`), or a server URL.
            artifact_root: where new experiments keep artifacts; for a SQLite store it defaults to
                ``mlartifacts/`` beside the database file, for a server the server decides.
        """
        _quiet_store_startup()
        self.tracking_uri = tracking_uri
        if artifact_root is None:
            artifact_root = default_artifact_root(tracking_uri)
        if artifact_root is not None and "://" not in str(artifact_root):
            artifact_root = Path(artifact_root).resolve()  # a local folder; URIs (s3://...) are kept as given
        self.artifact_root = None if artifact_root is None else str(artifact_root)
        try:
            self.client = _open_store(tracking_uri)
        except (MlflowException, OSError, ImportError, ValueError, sqlalchemy.exc.SQLAlchemyError) as error:
            text = error.strerror if isinstance(error, OSError) and error.strerror else str(error).strip()
            reason = text.splitlines()[0][:200] if text else type(error).__name__
            raise ConfigError(
                f"--tracking-uri {tracking_uri}: cannot open the MLflow tracking store ({reason}); pass a database "
                "URI such as sqlite:////abs/path/mlflow.db, or the http(s):// URL of a running MLflow server "
                "(mbr-bench serve)"
            ) from None
        self._experiment_ids: dict[str, str] = {}

    def experiment_id(self, behaviour: str) -> str:
        """The id of experiment ``mbr-bench/<behaviour>``, created on first use and reused after."""
        if behaviour in self._experiment_ids:
            return self._experiment_ids[behaviour]
        name = experiment_name(behaviour)
        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            # One folder per behaviour keeps the artifact tree readable; run ids keep runs apart inside it.
            location = None
            if self.artifact_root is not None:
                location = f"{self.artifact_root.rstrip('/')}/{_safe_name(behaviour)}"
            try:
                experiment_id = self.client.create_experiment(name, artifact_location=location,
                                                              tags=experiment_tags())
            except MlflowException as exc:
                # Another worker created it between our lookup and our create.
                if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                    raise
                experiment = self.client.get_experiment_by_name(name)
                if experiment is None:
                    raise
                experiment_id = experiment.experiment_id
        elif experiment.lifecycle_stage != "active":
            raise ConfigError(
                f"{self.tracking_uri}: experiment {name!r} (id {experiment.experiment_id}) is deleted; "
                f"restore it with `mlflow experiments restore --experiment-id {experiment.experiment_id}` "
                "or remove it for good with `mlflow gc`"
            )
        else:
            experiment_id = experiment.experiment_id
            add_missing_experiment_tags(self.client, experiment)
        self._experiment_ids[behaviour] = experiment_id
        return experiment_id

    def find_pair_run(self, behaviour: str, backbone: str, head: str) -> Run | None:
        """The existing parent run of (backbone, head) in the behaviour's experiment (the oldest if several)."""
        runs = search_all(
            self.client,
            [self.experiment_id(behaviour)],
            f"tags.`{TAG_KIND}` = '{KIND_PAIR}' and tags.`{TAG_BACKBONE}` = {quote_filter_value(backbone)} "
            f"and tags.`{TAG_HEAD}` = {quote_filter_value(head)}",
            order_by=["attributes.start_time ASC"],
        )
        return runs[0] if runs else None

    def recorded_pairs(self, behaviour: str) -> set[tuple[str, str]]:
        """(backbone, head) of every pair run in the behaviour's experiment; creates nothing."""
        experiment = self.client.get_experiment_by_name(experiment_name(behaviour))
        if experiment is None:
            return set()
        runs = search_all(self.client, [experiment.experiment_id], f"tags.`{TAG_KIND}` = '{KIND_PAIR}'")
        return {(run.data.tags.get(TAG_BACKBONE, ""), run.data.tags.get(TAG_HEAD, "")) for run in runs}

    def pair_run(self, behaviour: str, backbone: str, head: str, tags: dict[str, str] | None = None) -> PairRun:
        """Open the parent run ``<backbone>+<head>``: the existing one when the study is resumed, else a new one.

        The run is RUNNING from this call until it ends (leaving its ``with`` block, or `PairRun.end`).
        It carries ``mbr.behaviour``, ``mbr.backbone``, ``mbr.head``, ``mbr.kind=pair`` and `tags`;
        trials started from it repeat all of these.
        """
        tags = {str(key): str(value) for key, value in (tags or {}).items()}
        run_tags = {
            **_source_tags(),
            **tags,
            TAG_BEHAVIOUR: behaviour,
            TAG_BACKBONE: backbone,
            TAG_HEAD: head,
            TAG_KIND: KIND_PAIR,
            TAG_PROCESS: process_identity(),
        }
        existing = self.find_pair_run(behaviour, backbone, head)
        if existing is None:
            run = self.client.create_run(
                self.experiment_id(behaviour),
                run_name=f"{backbone}+{head}",
                tags={key: value[:TAG_VALUE_LIMIT] for key, value in run_tags.items()},
            )
        else:
            self.client.update_run(existing.info.run_id, status=RUNNING)
            run = existing
        pair = PairRun(self.client, run, behaviour, backbone, head, tags)
        if existing is not None:
            pair.set_tags(run_tags)
        return pair

    def result_run(self, behaviour: str, kind: str, run_name: str, tags: dict[str, str],
                   parent_run_id: str | None = None) -> _Run:
        """Start a run of another `kind` (``refit``, ``leaderboard``) in the behaviour's experiment.

        With `parent_run_id` it nests under that run (a refit under its pair), so the UI shows it
        with the search it came from. Use it as a context manager, like the others.
        """
        run_tags = {**_source_tags(), **{str(k): str(v) for k, v in tags.items()}, TAG_BEHAVIOUR: behaviour,
                    TAG_KIND: kind, TAG_PROCESS: process_identity()}
        if parent_run_id is not None:
            run_tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
        run = self.client.create_run(self.experiment_id(behaviour), run_name=run_name,
                                     tags={key: value[:TAG_VALUE_LIMIT] for key, value in run_tags.items()})
        return _Run(self.client, run)

    def register_model_version(self, name: str, run_id: str, artifact_path: str, tags: dict[str, str]) -> Any:
        """A new version of registered model `name` from run `run_id`'s `artifact_path`, and an MLflow 3
        logged model that the run lists among its outputs: what the runs table's Models column shows.
        The logged model points at the run's bundle (its `mbr.bundle` tag) rather than holding a copy."""
        from mlflow.entities import LoggedModelOutput
        from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS as MODEL_VERSIONS_TAG

        run = self.client.get_run(run_id)
        source = f"{run.info.artifact_uri}/{artifact_path}"
        # A logged model's name may not hold '.', which registered names do (mbr-bench.<behaviour>).
        model = self.client.create_logged_model(run.info.experiment_id, name=re.sub(r"[/:.%\"']", "-", name),
                                                source_run_id=run_id, tags={**tags, TAG_BUNDLE: source})
        self.client.finalize_logged_model(model.model_id, "READY")
        self.client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
        version = self.client.create_model_version(name, source, run_id=run_id, tags=tags, model_id=model.model_id)
        # The logged model names its versions (as mlflow.register_model does): the UI's "Registered models".
        self.client.set_logged_model_tags(model.model_id, {MODEL_VERSIONS_TAG: json.dumps(
            [{"name": version.name, "version": version.version}])})
        return version

    def kill_run(self, run_id: str, reason: str) -> bool:
        """Mark a RUNNING run KILLED (a trial whose worker died); False if it had already ended."""
        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            return False
        if run.info.status != RUNNING:
            return False
        tags = {TAG_ERROR: reason[:TAG_VALUE_LIMIT]}
        if run.data.tags.get(TAG_KIND) == KIND_TRIAL and run.data.tags.get(TAG_STATE) in (None, "running"):
            tags[TAG_STATE] = STATE_FAILED
        self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()], synchronous=True)
        self.client.set_terminated(run_id, KILLED)
        return True

    def close_stale_runs(self, behaviour: str, everywhere: bool = False) -> list[str]:
        """Mark KILLED the runs of a behaviour's experiment left RUNNING by a process that is gone.

        A run is stale when no process of this tracker opened it (it lacks ``mbr.process``) or
        when the process that opened it on this host has ended. Runs opened on other hosts are left
        alone, since their workers may still be running, unless `everywhere` is true (use it only
        when no other worker can be running). Returns the ids of the runs closed.
        """
        experiment = self.client.get_experiment_by_name(experiment_name(behaviour))
        if experiment is None:
            return []
        closed = []
        for run in search_all(self.client, [experiment.experiment_id], "attributes.status = 'RUNNING'"):
            identity = run.data.tags.get(TAG_PROCESS)
            if identity and not everywhere and process_alive(identity) is not False:
                continue
            tags = {TAG_ERROR: "the process running it ended without closing it (found at the next start)"}
            if run.data.tags.get(TAG_KIND) == KIND_TRIAL and TAG_STATE not in run.data.tags:
                tags[TAG_STATE] = STATE_FAILED
            self.client.log_batch(run.info.run_id, tags=[RunTag(k, v) for k, v in tags.items()], synchronous=True)
            self.client.set_terminated(run.info.run_id, KILLED)
            closed.append(run.info.run_id)
        if closed:
            logger.info("closed %d stale run(s) of %s", len(closed), experiment_name(behaviour))
        return closed
