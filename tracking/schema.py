"""Every name mbr-bench writes into MLflow, and the typed records read back from its runs.

Writers (`runs`, the runner, the refit, the leaderboard) and readers (queries, the leaderboard,
`predict`) take tag, metric and artifact names from here only, so a name is spelled once and a
reader cannot drift from its writer. Run layout:

    experiment  mbr-bench/<behaviour>
      run  <backbone>+<head>      kind=pair         the search of one pair
        run  trial-NNN            kind=trial        one Optuna trial: folds, CV summary, cost
        run  <pair> refit         kind=refit        best trial refit on all training videos, tested once
      run  leaderboard            kind=leaderboard  the board's files for one invocation

Metric names are ``<prefix><name>``: ``cv/`` (cross-validation summaries over folds), ``fold<k>/``
(one fold), ``fold/`` (every fold as a series, step k), ``compute/`` (cost), ``test/`` and ``test_post/`` (the test
videos, raw and post-processed labels), ``decision/`` (threshold and post-processing scores).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

EXPERIMENT_PREFIX = "mbr-bench/"
REGISTERED_MODEL_PREFIX = "mbr-bench."
# -- experiment tags: how the MLflow UI opens an experiment ----------------------------------------
# MLflow 3 opens an experiment without a kind as a GenAI one (traces); a behaviour's experiment is
# model training. The UI's "Share" mechanism stores a runs-table view (columns, order) as an
# experiment tag named by a key, which a link passes as ?viewStateShareKey=KEY: `mbr-bench ui`
# prints such links, so the table opens on the numbers the board ranks by.
TAG_EXPERIMENT_KIND, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
VIEW_TAG_PREFIX, VIEW_KEY = "mlflow.sharedViewState.", "mbr-bench"

# -- tags: identity ------------------------------------------------------------------------------
TAG_KIND = "mbr.kind"  # one of the KIND_* values below
TAG_BEHAVIOUR = "mbr.behaviour"
TAG_BACKBONE = "mbr.backbone"
TAG_HEAD = "mbr.head"
TAG_STUDY = "mbr.study"  # on a pair run: the Optuna study name
TAG_TRIAL = "mbr.trial"  # on a trial or refit run: the trial number of the progress lines (Optuna's + 1)
TAG_STATE = "mbr.state"  # on a trial run: one of TRIAL_STATES
TAG_PARENT = "mlflow.parentRunId"  # MLflow's own nesting tag
TAG_PROCESS = "mbr.process"  # host:pid:start of the process that last opened the run (also a trial user attr)
TAG_ERROR = "mbr.error"  # why a run ended FAILED or KILLED
TAG_BEST_TRIAL = "mbr.best_trial"  # on a pair run: the trial that trained the best score
TAG_BEST_PAIR = "mbr.best_pair"  # on a leaderboard run
TAG_PAIR = "mbr.pair"  # on a registered model version: the pair it came from
TAG_BUNDLE = "mbr.bundle"  # on a logged model: where its run keeps the model bundle
# -- tags: what a pair's inputs were (a refit rebuilds them without the command line) -----------
TAG_DATASET = "mbr.dataset"  # absolute path of the dataset.yaml a pair was searched on
TAG_TRAIN_HASH = "mbr.train_hash"  # hash of the train videos' files: what a search's results depend on
TAG_TEST_HASH = "mbr.test_hash"  # on a refit run: hash of the test videos' files it was scored on
TAG_WEIGHTS = "mbr.weights"  # the --weights given to the search ("" = the backbone's default)
TAG_BATCH_SIZE = "mbr.batch_size"  # embedding batch size
# -- tags: provenance (every pair and trial run) --------------------------------------------------
TAG_DATASET_HASH = "mbr.dataset_hash"
TAG_CACHE_KEYS = "mbr.cache_keys"
TAG_GIT_COMMIT = "mbr.git_commit"
TAG_GIT_DIRTY = "mbr.git_dirty"
TAG_SEED = "mbr.seed"
TAG_VERSIONS = "mbr.versions"
# -- tags: refit runs ------------------------------------------------------------------------------
TAG_SOURCE_RUN = "mbr.source_run"  # the trial run whose parameters it used
TAG_RULE = "mbr.threshold_rule"
TAG_REFIT_VERSION = "mbr.refit_version"
TAG_REFIT_SEED = "mbr.refit_seed"
TAG_FINAL = "mbr.final"  # what the refit run deploys: FINAL_ENSEMBLE (the K fold models) or FINAL_REFIT
# -- tags: how numbers were made (pair, trial and refit runs) ---------------------------------------
TAG_MEMBERS = "mbr.members"  # on an ensemble run: its members' refit run ids, in order
ENSEMBLE_WEIGHT = "ensemble/weight_"  # + member index: an ensemble run's fusion weights
TAG_PROTOCOL = "mbr.protocol"  # how each fold's training length is chosen (see benchmark/search.py)

KIND_PAIR, KIND_TRIAL, KIND_REFIT, KIND_LEADERBOARD = "pair", "trial", "refit", "leaderboard"
KIND_ENSEMBLE = "ensemble"  # an ensemble row's one scoring of the test videos (benchmark/results/ensemble.py)
FINAL_ENSEMBLE, FINAL_REFIT = "ensemble", "refit"
STATE_COMPLETE, STATE_PRUNED, STATE_FAILED = "complete", "pruned", "failed"
TRIAL_STATES = (STATE_COMPLETE, STATE_PRUNED, STATE_FAILED)


def fold_video_tag(k: int) -> str:
    """Tag naming the held-out video of fold `k` on a trial run."""
    return f"mbr.fold{int(k)}.video"


def changed_param_tag(name: str) -> str:
    """Tag holding a parameter's new value when a resumed run is given another one (MLflow params are final)."""
    return f"mbr.param.{name}"


# -- metrics ---------------------------------------------------------------------------------------
CV, COMPUTE, TEST, TEST_POST, DECISION = "cv/", "compute/", "test/", "test_post/", "decision/"
# Every fold's value of a metric as one series, step k = fold k (MLflow's chart across folds); the
# ``cv/`` names hold only summaries over folds, so a column named cv/... is never one fold's value.
FOLD_SERIES = "fold/"
_FOLD_METRIC = re.compile(r"fold(\d+)/(.+)")


def fold_metric(k: int, name: str) -> str:
    """Metric `name` of fold `k` alone (also logged as ``fold/<name>`` at step k)."""
    return f"fold{int(k)}/{name}"


def parse_fold_metric(key: str) -> tuple[int, str] | None:
    """(k, name) of a ``fold<k>/<name>`` metric; None for other metrics."""
    match = _FOLD_METRIC.fullmatch(key)
    return (int(match.group(1)), match.group(2)) if match else None


def with_prefix(prefix: str, values: Mapping[str, float]) -> dict[str, float]:
    """`values` keyed ``<prefix><name>``, ready to log."""
    return {f"{prefix}{name}": value for name, value in values.items()}


def strip_prefix(prefix: str, metrics: Mapping[str, float]) -> dict[str, float]:
    """The metrics under `prefix`, keyed by their short name."""
    return {key[len(prefix):]: value for key, value in metrics.items() if key.startswith(prefix)}


# The primary accuracy on both sides is the mean over videos of per-video PR-AUC (``pr_auc_mean``:
# over the held-out videos of the folds for CV, over the test videos for test); PR-AUC of all frames
# pooled (``pr_auc_pooled``) is secondary on both sides.
CV_PR_AUC_MEAN = CV + "pr_auc_mean"  # the search's objective
CV_PR_AUC_STD = CV + "pr_auc_std"  # sample standard deviation over folds
CV_PR_AUC_SE = CV + "pr_auc_se"  # standard error of the mean over folds
CV_PR_AUC_POOLED = CV + "pr_auc_pooled"  # out-of-fold frames of all folds pooled
CV_N_FOLDS = CV + "n_folds"
CV_REFIT_EPOCHS = CV + "refit_epochs"  # how long a model on all training videos trains (the protocol's choice)
CV_SUMMARY = (CV_PR_AUC_MEAN, CV_PR_AUC_STD, CV_PR_AUC_SE, CV_PR_AUC_POOLED, CV_N_FOLDS)  # copied onto refit runs
TEST_PR_AUC_MEAN = TEST + "pr_auc_mean"  # mean over test videos of per-video PR-AUC
TEST_PR_AUC_POOLED = TEST + "pr_auc_pooled"
TEST_SEEDS = "test_seeds/"  # final refit: <metric>_mean and <metric>_sd over the refit seeds
N_TEST_EVALUATIONS = "n_test_evaluations"  # on a leaderboard run: test scorings of this behaviour so far
DECISION_THRESHOLD = DECISION + "threshold"
# Keys of `compute/` in use (docs/mlflow.md has the glossary): train_seconds, cpu_seconds,
# seconds_per_epoch, validation_frames_per_second (one head scoring its held-out video), peak_rss_mb,
# n_params, embedding_seconds_per_frame, epochs_total (trials); search_cpu_seconds, refit_cpu_seconds,
# refit_train_seconds, inference_frames_per_second (the final model, all its heads, on the test videos)
# (refits). A pair run carries its best trial's cv/pr_auc_mean and cv/pr_auc_se, the n_trials_* counts,
# search_cpu_seconds, embedding_seconds_per_frame and n_params, and its latest refit's test/ PR-AUCs.
# Leaderboard-run summaries.
BEST_CV_PR_AUC = "best_cv_pr_auc"
BEST_TEST_PR_AUC = "best_test_pr_auc"
N_TRIALS_COMPLETE, N_TRIALS_PRUNED, N_TRIALS_FAILED = "n_trials_complete", "n_trials_pruned", "n_trials_failed"
N_PAIRS = "n_pairs"
# Refit-run params: post-processing sizes and head hyperparameters under these prefixes.
PARAM_POSTPROCESS, PARAM_HEAD = "postprocess.", "head."

# -- artifacts --------------------------------------------------------------------------------------
PARAMS_FILE = "params.json"  # a trial's typed hyperparameters
PREDICTIONS_DIR = "predictions"
OUT_OF_FOLD_FILE = "out_of_fold.npz"  # a trial's out-of-fold labels and probabilities
TEST_PREDICTIONS = "test_predictions.npz"  # a refit's labels and probabilities per test video
TEST_VIDEOS = "test_videos.json"  # a refit's per-video test scores
REFIT_INFO = "refit.json"
MODEL_ARTIFACT = "model"  # the model bundle inside a refit run
FIGURE_PR_CURVE = "figures/pr_curve.png"
FIGURE_CONFUSION = "figures/confusion_matrix.png"
FIGURES_DIR = "figures"


def fold_artifact(k: int, what: str) -> str:
    """A fold's JSON artifact, ``folds/fold<k>_<what>.json`` (what: pr_curve, confusion)."""
    return f"folds/fold{int(k)}_{what}.json"


def prediction_artifact(file_name: str) -> str:
    return f"{PREDICTIONS_DIR}/{file_name}"


def experiment_name(behaviour: str) -> str:
    """The MLflow experiment holding one behaviour's study: ``mbr-bench/<behaviour>``."""
    return f"{EXPERIMENT_PREFIX}{behaviour}"


def trial_label(optuna_number: int) -> int:
    """The trial number people see (progress lines, MLflow run names and tags, plots): Optuna's + 1."""
    return int(optuna_number) + 1


def runs_view() -> dict[str, Any]:
    """The runs table of a behaviour's experiment as `mbr-bench ui` links open it: one row per pair,
    best CV first, its summary as the first columns (test figures once the leaderboard ran)."""
    columns = [_column("metrics", key) for key in (
        CV_PR_AUC_MEAN, CV_PR_AUC_SE, TEST_PR_AUC_MEAN, N_TRIALS_COMPLETE, COMPUTE + "search_cpu_seconds",
        COMPUTE + "embedding_seconds_per_frame", COMPUTE + "n_params")]
    return {
        "searchFilter": f"tags.`{TAG_KIND}` = '{KIND_PAIR}'",
        "orderByKey": columns[0], "orderByAsc": False,
        "selectedColumns": columns, "columnOrder": columns,
    }


def _column(kind: str, key: str) -> str:
    return f"{kind}.`{key}`"  # the UI's column id


def registered_model_name(behaviour: str) -> str:
    """The MLflow registered model holding the leaderboard's best model for a behaviour."""
    return f"{REGISTERED_MODEL_PREFIX}{behaviour}"


# -- records read back from runs -----------------------------------------------------------------


@dataclass(frozen=True)
class TrialRecord:
    """What the leaderboard and the refit read from a trial run."""

    run_id: str
    trial: int
    state: str | None
    cv_pr_auc_mean: float
    cv_pr_auc_std: float
    cv_pr_auc_se: float
    cv_pr_auc_pooled: float
    n_folds: int
    fold_scores: dict[str, float]  # held-out video (or "fold k") -> PR-AUC, in fold order
    fold_epochs: list[int]  # the epoch each fold was scored at, in fold order
    refit_epochs: int | None  # the protocol's training length for a model on all training videos
    protocol: str | None
    cpu_seconds: float  # CPU seconds of the trial (wall training seconds where CPU was not logged)
    error: str | None
    params: dict[str, str] = field(default_factory=dict)  # as MLflow holds them (text)

    @property
    def complete(self) -> bool:
        return self.state == STATE_COMPLETE and math.isfinite(self.cv_pr_auc_mean)

    @classmethod
    def from_run(cls, run: Any) -> TrialRecord:
        metrics, tags = run.data.metrics, run.data.tags
        scores: dict[int, tuple[str, float]] = {}
        epochs: dict[int, int] = {}
        for key, value in metrics.items():
            parsed = parse_fold_metric(key)
            if parsed is None:
                continue
            k, name = parsed
            if name == "pr_auc":
                scores[k] = (tags.get(fold_video_tag(k), f"fold {k}"), value)
            elif name == "epochs":
                epochs[k] = int(value)
        return cls(
            run_id=run.info.run_id,
            trial=int(tags.get(TAG_TRIAL, -1)),
            state=tags.get(TAG_STATE),
            cv_pr_auc_mean=metrics.get(CV_PR_AUC_MEAN, math.nan),
            cv_pr_auc_std=metrics.get(CV_PR_AUC_STD, math.nan),
            cv_pr_auc_se=metrics.get(CV_PR_AUC_SE, math.nan),
            cv_pr_auc_pooled=metrics.get(CV_PR_AUC_POOLED, math.nan),
            n_folds=int(metrics.get(CV_N_FOLDS, 0)),
            fold_scores=dict(scores[k] for k in sorted(scores)),
            fold_epochs=[epochs[k] for k in sorted(epochs)],
            refit_epochs=int(metrics[CV_REFIT_EPOCHS]) if CV_REFIT_EPOCHS in metrics else None,
            protocol=tags.get(TAG_PROTOCOL),
            cpu_seconds=metrics.get(COMPUTE + "cpu_seconds", metrics.get(COMPUTE + "train_seconds", 0.0)),
            error=tags.get(TAG_ERROR),
            params=dict(run.data.params),
        )


@dataclass(frozen=True)
class RefitRecord:
    """What the leaderboard reads from a refit run."""

    run_id: str
    threshold: float
    threshold_rule: str
    postprocess: dict[str, int]
    head_params: dict[str, str]
    test_raw: dict[str, float]
    test_post: dict[str, float]
    compute: dict[str, float]
    refit_version: str | None
    seed: str | None
    test_hash: str | None
    source_run: str | None
    final: str | None  # FINAL_ENSEMBLE or FINAL_REFIT

    @classmethod
    def from_run(cls, run: Any) -> RefitRecord:
        metrics, tags, params = run.data.metrics, run.data.tags, run.data.params
        return cls(
            run_id=run.info.run_id,
            threshold=metrics.get(DECISION_THRESHOLD, math.nan),
            threshold_rule=tags.get(TAG_RULE, ""),
            postprocess={key: int(value) for key, value in
                         ((k[len(PARAM_POSTPROCESS):], v) for k, v in params.items() if k.startswith(PARAM_POSTPROCESS))},
            head_params={k[len(PARAM_HEAD):]: v for k, v in params.items() if k.startswith(PARAM_HEAD)},
            test_raw=strip_prefix(TEST, metrics),
            test_post=strip_prefix(TEST_POST, metrics),
            compute=strip_prefix(COMPUTE, metrics),
            refit_version=tags.get(TAG_REFIT_VERSION),
            seed=tags.get(TAG_REFIT_SEED),
            test_hash=tags.get(TAG_TEST_HASH),
            source_run=tags.get(TAG_SOURCE_RUN),
            final=tags.get(TAG_FINAL),
        )
