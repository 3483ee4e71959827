"""One Optuna study per (behaviour, backbone, head), scored by leave-one-video-out CV.

A trial is one hyperparameter set. For each training video held out in turn, a fresh head is fit on
the other training videos (sample weights from those videos only), early-stopped on the held-out
video's PR-AUC, and scored on it. The running mean PR-AUC after each fold is reported to the pruner,
so clearly bad trials stop early. Test videos are never read here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna

from ..core.errors import MbrError
from ..search_spaces.loader import SearchSpace
from ..tracking.provenance import peak_rss_mb, reset_peak_rss
from ..tracking.schema import STATE_COMPLETE, STATE_FAILED, STATE_PRUNED, TAG_BEHAVIOUR
from .cv import Fold
from .features.sequences import sample_weights
from .heads import HEADS
from .metrics import frame_metrics, summarise
from .progress import SearchProgress

OBJECTIVE = "pr_auc_mean"  # the CV score every study maximises
# Random trials before TPE models the results. Optuna's default, 10, is half the default budget of
# 20 trials; with 5, TPE came within 0.01 of the reference grid's best on <= 30 % of the grid's
# fold-epochs in far more seeds (`make bench`, search-efficiency section of the report).
TPE_STARTUP_TRIALS = 5
SAMPLERS = ("tpe", "grid")


class TrialFailed(RuntimeError):
    """A trial broke for a reason other than bad user input; the study records it and goes on."""


@dataclass
class PairData:
    """Everything a pair's search reads: per training video, embeddings and one behaviour's labels."""

    embeddings: dict[str, np.ndarray]  # video id -> (frames, dim), memory-mapped
    labels: dict[str, np.ndarray]  # video id -> (frames,) int8 for this behaviour
    embedding_seconds_per_frame: float = 0.0
    cache_keys: dict[str, str] = field(default_factory=dict)


def study_name(behaviour: str, backbone: str, head: str) -> str:
    return f"{behaviour}/{backbone}+{head}"


def make_sampler(kind: str, space: SearchSpace, seed: int) -> Any:
    """The sampler `kind` (one of SAMPLERS: the runner checks the name) seeded with `seed`."""
    if kind == "grid":
        return optuna.samplers.GridSampler(space.grid(), seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=TPE_STARTUP_TRIALS)


def make_pruner() -> Any:
    # Compare a trial's running fold mean with the median of earlier trials at the same fold; wait
    # for two complete trials and three folds: one video's PR-AUC swings by +-0.2 between folds of
    # the same configuration, and a mean of two folds pruned the best configuration for good in
    # 7 of 30 seeds of the search benchmark (none with three).
    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2)


def earlier_result(trial: Any) -> Any | None:
    """A complete trial of the same study with exactly these parameters, or None.

    A trial's score depends only on its parameters (data, folds and training seed are the study's),
    so a repeat (TPE often proposes a point it has seen on a categorical grid) is not trained again.
    """
    for earlier in trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if earlier.number != trial.number and earlier.params == trial.params:
            return earlier
    return None


def cross_validate(
    head_factory: Callable[[], Any],
    data: PairData,
    folds: list[Fold],
    on_fold: Callable[[Fold, dict[str, float], np.ndarray, np.ndarray, Any], bool] | None = None,
    on_epoch: Callable[[Fold, int, dict], None] | None = None,
) -> tuple[list[dict[str, float]], dict[str, float]]:
    """Fit and score one head per fold. `on_fold` may return True to stop early (pruning).

    Returns the per-fold metrics (with epochs and timings) and compute totals.
    """
    fold_metrics: list[dict[str, float]] = []
    train_seconds = epochs_total = predict_seconds = predicted_frames = 0.0
    cpu_started = time.process_time()  # all threads of this process: what the search costs in CPU
    n_params = 0
    for fold in folds:
        X_train = [data.embeddings[v] for v in fold.train_ids]
        y_train = [data.labels[v] for v in fold.train_ids]
        X_val, y_val = data.embeddings[fold.val_id], data.labels[fold.val_id]
        head = head_factory()
        head.fit(
            X_train, y_train, sample_weights(y_train), val=(X_val, y_val),
            on_epoch_end=(lambda epoch, logs, fold=fold: on_epoch(fold, epoch, logs)) if on_epoch else None,
        )
        started = time.perf_counter()
        proba = head.predict_proba(X_val)
        predict_seconds += time.perf_counter() - started
        predicted_frames += len(proba)
        metrics = frame_metrics(y_val, proba)
        metrics.update(epochs=float(head.best_epoch_), epochs_run=float(head.epochs_run_),
                       train_seconds=float(head.train_seconds_))
        fold_metrics.append(metrics)
        train_seconds += head.train_seconds_
        epochs_total += head.epochs_run_
        n_params = head.n_params_
        if on_fold is not None and on_fold(fold, metrics, y_val, proba, head):
            break
    compute = {
        "train_seconds": train_seconds,
        "cpu_seconds": time.process_time() - cpu_started,
        "seconds_per_epoch": train_seconds / max(epochs_total, 1.0),
        "inference_frames_per_second": predicted_frames / max(predict_seconds, 1e-9),
        "epochs_total": epochs_total,
        "n_params": float(n_params),
        "embedding_seconds_per_frame": data.embedding_seconds_per_frame,
    }
    return fold_metrics, compute


def make_objective(
    behaviour: str,
    head_name: str,
    space: SearchSpace,
    data: PairData,
    folds: list[Fold],
    pair_run: Any,
    seed: int,
    progress: SearchProgress,
) -> Callable[[Any], float]:
    """The Optuna objective for one pair: CV mean PR-AUC of the suggested params, fully tracked."""
    def objective(trial: optuna.Trial) -> float:
        params = space.suggest(trial)
        trial_label = trial.number + 1
        earlier = earlier_result(trial)
        if earlier is not None:
            trial.set_user_attr("repeat_of", earlier.number)
            for key in ("train_seconds", "epochs_total"):
                trial.set_user_attr(key, 0.0)
            trial.set_user_attr("pr_auc_std", earlier.user_attrs.get("pr_auc_std", float("nan")))
            progress.message(f"trial {trial_label} repeats trial {earlier.number + 1}'s parameters: "
                             f"CV PR-AUC {earlier.value:.3f} reused, nothing trained")
            return float(earlier.value)
        reset_peak_rss()  # peak memory per trial, not since the process started
        running: list[float] = []
        with pair_run.trial_run(trial.number, params, tags={TAG_BEHAVIOUR: behaviour}) as tracked:
            # Set first: if this worker dies, whoever fails the trial closes this MLflow run.
            trial.set_user_attr("mlflow_run_id", tracked.run_id)
            try:
                def on_fold(fold: Fold, metrics: dict, y_val: np.ndarray, proba: np.ndarray, head: Any) -> bool:
                    tracked.log_fold(fold.index, fold.val_id, metrics, y_val, proba, int(metrics["epochs"]))
                    progress.fold(trial_label, folds.index(fold) + 1, len(folds), fold.val_id, metrics["pr_auc"],
                                  int(metrics["epochs_run"]), metrics["train_seconds"])
                    running.append(metrics["pr_auc"])
                    trial.report(float(np.nanmean(running)), step=len(running) - 1)
                    return trial.should_prune()

                def on_epoch(fold: Fold, epoch: int, logs: dict) -> None:
                    progress.epoch(trial_label, folds.index(fold) + 1, len(folds), epoch, logs)

                fold_metrics, compute = cross_validate(
                    lambda: HEADS.build(head_name, **{"seed": seed, **params}), data, folds, on_fold, on_epoch
                )
                summary = summarise(fold_metrics)
                compute["peak_rss_mb"] = peak_rss_mb()
                tracked.log_summary(summary)
                tracked.log_compute(compute)
                tracked.log_figures()
                tracked.log_predictions()
                for key in ("train_seconds", "epochs_total", "n_params"):
                    trial.set_user_attr(key, compute[key])
                trial.set_user_attr("folds_done", len(fold_metrics))
                trial.set_user_attr("pr_auc_std", float(summary["pr_auc_std"]))
                score = summary[OBJECTIVE]
                pruned = len(fold_metrics) < len(folds)
                if not pruned and not math.isfinite(score):
                    raise TrialFailed(f"CV PR-AUC is {score}; no fold produced a score")
                tracked.set_state(STATE_PRUNED if pruned else STATE_COMPLETE)
            except (MbrError, KeyboardInterrupt):
                raise
            except Exception as error:
                tracked.set_state(STATE_FAILED)
                progress.message(f"trial {trial_label} failed: {type(error).__name__}: {error}")
                raise TrialFailed(f"{type(error).__name__}: {error}") from error
        # Outside the tracked block: a pruned trial is a normal end for its MLflow run.
        if pruned:
            progress.message(f"trial {trial_label} pruned after {len(fold_metrics)} fold(s)")
            raise optuna.TrialPruned()
        progress.message(
            f"trial {trial_label} · CV PR-AUC {score:.3f} ± {summary['pr_auc_std']:.3f} · "
            f"{compute['train_seconds']:.0f}s training"
        )
        return score

    return objective
