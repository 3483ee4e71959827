"""One Optuna study per (behaviour, backbone, head), scored by leave-one-video-out CV.

A trial is one hyperparameter set. For each training video held out in turn, a fresh head is fit on
the other training videos (sample weights from those videos only) and scored on the held-out video.
The held-out video never chooses anything about the model it scores, in particular not how long it
trains (the protocol, named on every run as tag ``mbr.protocol``):

* ``mean_curve``: every fold trains for the same ``max_epochs`` and scores its held-out video after
  each epoch. A fold is scored at the epoch where the mean curve of the OTHER folds peaks, so its
  own video never picks its epoch (taking a video's own best epoch is the maximum of a noisy curve:
  it inflated every fold score). The refit trains for the epoch where the mean of all folds peaks.
* ``inner``: each fold early-stops (``patience``) on an inner video taken from its own training
  videos, and the held-out video is scored at the epoch the inner video chose. Needs 3 or more
  labelled training videos.

The running fold mean is reported to the pruner after each fold, so clearly bad trials stop early.
Test videos are never read here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna

from ..core.errors import ConfigError, MbrError, TimeBudgetReached
from ..core.interrupts import deferred_interrupts
from ..search_spaces.loader import FUSION_BALANCE, SearchSpace
from ..tracking.provenance import peak_rss_mb, reset_peak_rss
from ..tracking.schema import (
    STATE_COMPLETE,
    STATE_FAILED,
    STATE_PRUNED,
    TAG_BEHAVIOUR,
    TAG_PROTOCOL,
    trial_label as trial_label_of,
)
from .cv import Fold
from .features.sequences import sample_weights
from .heads import HEADS, with_pipeline_params
from .metrics import frame_metrics, pooled_pr_auc, summarise
from .options import DEFAULT_PROTOCOL, PROTOCOLS
from .progress import SearchProgress

OBJECTIVE = "pr_auc_mean"  # the CV score every study maximises
# Random trials before TPE models the results. Optuna's default, 10, is half the default budget of
# 20 trials; with 5, TPE came within 0.01 of the reference grid's best on <= 30 % of the grid's
# fold-epochs in far more seeds (`make bench`, search-efficiency section of the report).
TPE_STARTUP_TRIALS = 5


class TrialFailed(RuntimeError):
    """A trial broke for a reason other than bad user input; the study records it and goes on."""


@dataclass
class PairData:
    """Everything a pair's search reads: per training video, embeddings and one behaviour's labels."""

    embeddings: dict[str, np.ndarray]  # video id -> (frames, dim), memory-mapped
    labels: dict[str, np.ndarray]  # video id -> (frames,) int8 for this behaviour
    embedding_seconds_per_frame: float = 0.0
    cache_keys: dict[str, str] = field(default_factory=dict)
    head_params: dict[str, Any] = field(default_factory=dict)  # set from the backbone (`EmbeddedVideos.head_params`)


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


def warm_start_from_parts(study: Any, storage: Any, behaviour: str, parts: list[str], head: str,
                          space: SearchSpace, budget: int | None = None) -> list[str]:
    """Enqueue, in a new fused pair's study, each part's best parameters so far with the balance
    turned toward that part (the range's end), so the fused search starts from what each part alone
    reached on CV and can only improve on it. Returns the parts it started from.

    Uses only the parts' CV scores (never a test video). Parts not searched yet (listed after the
    fused backbone) or without a complete trial are skipped; a grid search runs its grid only. At
    most `budget` trials are enqueued (the study's budget counts them), the part with the best CV first.
    """
    balance = space.distributions.get(FUSION_BALANCE)
    if study.trials or balance is None or len(parts) < 2:
        return []
    known = {summary.study_name for summary in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    bests = []
    for k, part in enumerate(parts):
        name = study_name(behaviour, part, head)
        best = _best_trial(optuna.load_study(study_name=name, storage=storage)) if name in known else None
        if best is not None and all(key in space.distributions for key in best.params):
            toward = balance.high if k == 0 else balance.low  # the first part's weight over the rest's
            bests.append((best.value, part, {**best.params, FUSION_BALANCE: toward}))
    # The best part first: a budget smaller than the number of parts keeps the strongest start.
    bests.sort(key=lambda item: -item[0])
    started = []
    for _, part, params in bests[: len(bests) if budget is None else budget]:
        study.enqueue_trial(params, skip_if_exists=True)
        started.append(part)
    return started


def _best_trial(study: Any) -> Any | None:
    try:
        return study.best_trial
    except ValueError:  # no complete trial yet
        return None


def earlier_result(trial: Any) -> Any | None:
    """A complete trial of the same study with exactly these parameters, or None.

    A trial's score depends only on its parameters (data, folds and training seed are the study's),
    so a repeat (TPE often proposes a point it has seen on a categorical grid) is not trained again.
    """
    for earlier in trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if earlier.number != trial.number and earlier.params == trial.params:
            return earlier
    return None


@dataclass
class FoldResult:
    """One fold, scored at the epoch the protocol chose."""

    fold: Fold
    metrics: dict[str, float]  # frame metrics of the held-out video, with epochs, epochs_run, train_seconds
    y: np.ndarray  # the held-out video's labels
    proba: np.ndarray  # its out-of-fold probabilities at the chosen epoch


@dataclass
class CVResult:
    folds: list[FoldResult]
    compute: dict[str, float]
    refit_epochs: int  # how long a model trained on all training videos should train
    pruned: bool


def cross_validate(
    head_factory: Callable[[], Any],
    data: PairData,
    folds: list[Fold],
    protocol: str = DEFAULT_PROTOCOL,
    on_fold: Callable[[Fold, int, float, float], bool] | None = None,
    on_epoch: Callable[[Fold, int, dict], None] | None = None,
) -> CVResult:
    """Fit and score one head per fold under `protocol` (see the module docstring).

    `on_fold(fold, folds_done, fold_score, running_score)` is called after each fold, with the
    fold's score and the trial's CV score so far (both at the epoch the protocol would choose with
    the folds done); returning True stops the trial there (pruning), and the folds done so far are
    scored and returned.
    """
    if protocol not in PROTOCOLS:
        raise ConfigError(f"--protocol must be {' or '.join(PROTOCOLS)}, got {protocol!r}")
    train_seconds = epochs_total = predict_seconds = predicted_frames = 0.0
    cpu_started = time.process_time()  # all threads of this process: what the search costs in CPU
    n_params = 0
    done: list[tuple[Fold, np.ndarray, dict]] = []  # (fold, held-out probabilities or their history, its run)
    curves: list[np.ndarray] = []  # mean_curve: per fold, the held-out PR-AUC after each epoch
    inner_scores: list[float] = []  # inner: per fold, the held-out PR-AUC
    pruned = False
    for fold in folds:
        train_ids, val = _fold_training(fold, data, protocol)
        X_train = [data.embeddings[v] for v in train_ids]
        y_train = [data.labels[v] for v in train_ids]
        X_val, y_val = data.embeddings[fold.val_id], data.labels[fold.val_id]
        if protocol == "mean_curve":
            val = (X_val, y_val)
        head = head_factory()
        head.fit(
            X_train, y_train, sample_weights(y_train), val=val, stop_early=protocol == "inner",
            keep_val_history=protocol == "mean_curve",
            on_epoch_end=(lambda epoch, logs, fold=fold: on_epoch(fold, epoch, logs)) if on_epoch else None,
        )
        train_seconds += head.train_seconds_
        epochs_total += head.epochs_run_
        n_params = head.n_params_
        proba = None
        if protocol == "inner" or not done:  # mean_curve: one prediction, for the inference cost
            started = time.perf_counter()
            proba = head.predict_proba(X_val)
            predict_seconds += time.perf_counter() - started
            predicted_frames += len(proba)
        # mean_curve: (epochs, frames), the fold is scored at an epoch chosen below; inner: the probabilities.
        scored = head.val_history_ if protocol == "mean_curve" else proba
        # Keep what scoring needs, not the model: K large heads need not be in memory at once.
        done.append((fold, scored, {"best_epoch": head.best_epoch_, "epochs_run": float(head.epochs_run_),
                                    "train_seconds": float(head.train_seconds_)}))
        if protocol == "mean_curve":
            curves.append(np.array([math.nan if e["val_pr_auc"] is None else e["val_pr_auc"] for e in head.history_]))
            fold_scores = [float(curves[k][epoch - 1]) for k, epoch in enumerate(cross_fitted_epochs(curves))]
        else:
            inner_scores.append(float(frame_metrics(y_val, scored)["pr_auc"]))
            fold_scores = inner_scores
        del head
        if on_fold is not None and on_fold(fold, len(done), fold_scores[-1], float(np.nanmean(fold_scores))):
            pruned = len(done) < len(folds)
            break

    if protocol == "mean_curve":
        fold_epochs = cross_fitted_epochs(curves) if curves else []
        refit_epochs = common_epoch(curves) if curves else 1
    else:
        fold_epochs = [run["best_epoch"] for _, _, run in done]
        refit_epochs = max(1, int(round(float(np.median(fold_epochs))))) if fold_epochs else 1
    results = []
    for (fold, scored, run), epoch in zip(done, fold_epochs, strict=True):
        y_val = data.labels[fold.val_id]
        proba = scored[epoch - 1] if protocol == "mean_curve" else scored
        metrics = frame_metrics(y_val, proba)
        metrics.update(epochs=float(epoch), epochs_run=run["epochs_run"], train_seconds=run["train_seconds"])
        results.append(FoldResult(fold, metrics, y_val, np.asarray(proba, np.float32)))
    compute = {
        "train_seconds": train_seconds,
        "cpu_seconds": time.process_time() - cpu_started,
        "seconds_per_epoch": train_seconds / max(epochs_total, 1.0),
        "validation_frames_per_second": predicted_frames / max(predict_seconds, 1e-9),  # one head, held-out video
        "epochs_total": epochs_total,
        "n_params": float(n_params),
        "embedding_seconds_per_frame": data.embedding_seconds_per_frame,
    }
    return CVResult(results, compute, refit_epochs, pruned)


def common_epoch(curves: list[np.ndarray]) -> int:
    """The 1-based epoch where the mean over folds of the held-out PR-AUC curves is highest (earliest on ties)."""
    length = min(len(curve) for curve in curves)
    stacked = np.stack([curve[:length] for curve in curves])
    finite = np.isfinite(stacked)
    counts = finite.sum(axis=0)
    mean = np.where(counts > 0, np.where(finite, stacked, 0.0).sum(axis=0) / np.maximum(counts, 1), -np.inf)
    return int(np.argmax(mean)) + 1


def fit_fold_models(head_factory: Callable[..., Any], data: PairData, folds: list[Fold], protocol: str,
                    fold_epochs: list[int]) -> list[tuple[Any, np.ndarray]]:
    """The fold models of a trial again, each as it was scored: (fitted head, held-out probabilities) per fold.

    `head_factory(**overrides)` builds the trial's head (same parameters and seed). Under
    ``mean_curve`` fold k trains for `fold_epochs[k]` epochs, the epoch it was scored at; under
    ``inner`` it early-stops on the same inner video as in the search. What the leaderboard deploys
    as the ``ensemble`` final model: the threshold is tuned on exactly these models' predictions.
    """
    models = []
    for fold, epochs in zip(folds, fold_epochs, strict=True):
        train_ids, val = _fold_training(fold, data, protocol)
        head = head_factory() if protocol == "inner" else head_factory(max_epochs=int(epochs))
        y_train = [data.labels[v] for v in train_ids]
        head.fit([data.embeddings[v] for v in train_ids], y_train, sample_weights(y_train), val=val)
        models.append((head, head.predict_proba(data.embeddings[fold.val_id])))
    return models


def _fold_training(fold: Fold, data: PairData, protocol: str) -> tuple[list[str], tuple | None]:
    """A fold's training videos and, under ``inner``, the (embeddings, labels) of the video it stops on."""
    train_ids = list(fold.train_ids)
    if protocol != "inner":
        return train_ids, None
    inner = inner_video(fold, data.labels)
    train_ids.remove(inner)
    return train_ids, (data.embeddings[inner], data.labels[inner])


def cross_fitted_epochs(curves: list[np.ndarray]) -> list[int]:
    """Per fold, the 1-based epoch it is scored at: where the mean curve of the other folds peaks.

    A lone fold has no other fold to choose for it: it is scored after its last epoch, the training
    length fixed before any video was seen.
    """
    if len(curves) == 1:
        return [len(curves[0])]
    return [common_epoch(curves[:k] + curves[k + 1:]) for k in range(len(curves))]


def inner_video(fold: Fold, labels: dict[str, np.ndarray]) -> str:
    """The training video a fold early-stops on under the ``inner`` protocol.

    The fold's first training video (in manifest order) that shows the behaviour, when another of its
    training videos shows it too, so that something is left to train on.
    """
    if len(fold.train_ids) < 2:
        raise ConfigError(f"--protocol inner: fold {fold.index + 1} has {len(fold.train_ids)} training video(s); "
                          "it needs 2 or more (one to train on, one to stop on): label more training videos, "
                          "or use --protocol mean_curve")
    positive = [v for v in fold.train_ids if np.any(np.asarray(labels[v]) > 0)]
    if len(positive) < 2:
        raise ConfigError(f"--protocol inner: fold {fold.index + 1} has {len(positive)} training video(s) showing "
                          "the behaviour; it needs 2 (one to train on, one to stop on): use --protocol mean_curve")
    return positive[0]


def make_objective(
    behaviour: str,
    head_name: str,
    space: SearchSpace,
    data: PairData,
    folds: list[Fold],
    pair_run: Any,
    seed: int,
    progress: SearchProgress,
    protocol: str = DEFAULT_PROTOCOL,
    deadline: float | None = None,
) -> Callable[[Any], float]:
    """The Optuna objective for one pair: CV mean PR-AUC of the suggested params, fully tracked.

    Past `deadline` (a `time.monotonic()` value) a trial stops at the end of its current epoch with
    TimeBudgetReached, so a time budget holds even for a trial that would train for an hour.
    """
    def objective(trial: optuna.Trial) -> float:
        params = space.suggest(trial)
        trial_label = trial_label_of(trial.number)
        earlier = earlier_result(trial)
        if earlier is not None:
            trial.set_user_attr("repeat_of", earlier.number)
            for key in ("train_seconds", "epochs_total"):
                trial.set_user_attr(key, 0.0)
            trial.set_user_attr("pr_auc_std", earlier.user_attrs.get("pr_auc_std", float("nan")))
            progress.message(f"trial {trial_label} repeats trial {trial_label_of(earlier.number)}'s parameters: "
                             f"CV PR-AUC {earlier.value:.3f} reused, nothing trained")
            return float(earlier.value)
        reset_peak_rss()  # peak memory per trial, not since the process started
        # Ctrl-C inside the trial is raised at a safe point (a batch's end or this block's), never lost
        # in a TensorFlow finaliser while the model is built or traced.
        with (pair_run.trial_run(trial_label, params, tags={TAG_BEHAVIOUR: behaviour, TAG_PROTOCOL: protocol})
              as tracked, deferred_interrupts()):
            # Set first: if this worker dies, whoever fails the trial closes this MLflow run.
            trial.set_user_attr("mlflow_run_id", tracked.run_id)
            try:
                def on_fold(fold: Fold, n_done: int, fold_score: float, running: float) -> bool:
                    progress.fold(trial_label, n_done, len(folds), fold.val_id, fold_score, running)
                    trial.report(running, step=n_done - 1)
                    return trial.should_prune()

                def on_epoch(fold: Fold, epoch: int, logs: dict) -> None:
                    progress.epoch(trial_label, folds.index(fold) + 1, len(folds), epoch, logs)
                    if deadline is not None and time.monotonic() >= deadline:
                        raise TimeBudgetReached(f"trial {trial_label} stopped at fold {folds.index(fold) + 1}, "
                                                f"epoch {epoch + 1}")

                head_params = {"seed": seed, **with_pipeline_params(params, data.head_params)}
                cv = cross_validate(lambda: HEADS.build(head_name, **head_params), data, folds, protocol, on_fold,
                                    on_epoch)
                for result in cv.folds:
                    tracked.log_fold(result.fold.index, result.fold.val_id, result.metrics, result.y, result.proba,
                                     int(result.metrics["epochs"]))
                fold_metrics, compute = [result.metrics for result in cv.folds], cv.compute
                summary = summarise(fold_metrics)
                summary["pr_auc_pooled"] = pooled_pr_auc([r.y for r in cv.folds], [r.proba for r in cv.folds])
                summary["refit_epochs"] = cv.refit_epochs
                compute["peak_rss_mb"] = peak_rss_mb()
                tracked.log_summary(summary)
                tracked.log_compute(compute)
                tracked.log_figures()
                tracked.log_predictions()
                for key in ("train_seconds", "epochs_total", "n_params"):
                    trial.set_user_attr(key, compute[key])
                trial.set_user_attr("folds_done", len(fold_metrics))
                trial.set_user_attr("pr_auc_std", float(summary["pr_auc_std"]))
                trial.set_user_attr("pr_auc_se", float(summary["pr_auc_se"]))
                trial.set_user_attr("cpu_seconds", float(compute["cpu_seconds"]))
                score = summary[OBJECTIVE]
                pruned = cv.pruned
                if not pruned and not math.isfinite(score):
                    raise TrialFailed(f"CV PR-AUC is {score}; no fold produced a score")
                tracked.set_state(STATE_PRUNED if pruned else STATE_COMPLETE)
            except (MbrError, KeyboardInterrupt, TimeBudgetReached):
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
            f"trial {trial_label} · CV PR-AUC {score:.3f} ± {summary['pr_auc_se']:.3f} (SE) · "
            f"{compute['train_seconds']:.0f}s training"
        )
        return score

    return objective
