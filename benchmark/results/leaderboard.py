"""`mbr-bench leaderboard`: every searched pair of a behaviour, refit, tested once, compared.

Reads the searches back from MLflow (nothing else needs to be remembered from `mbr-bench run`),
refits the pairs whose best trial has no current refit, and writes the board as a terminal table,
CSV, Markdown, one self-contained HTML page and PNG figures, also logged to a ``leaderboard`` run
of each behaviour's experiment. The pair with the best CV score (never the best test score) is
registered as MLflow model ``mbr-bench.<behaviour>``, so `mbr-bench predict --model
mbr-bench.<behaviour>` always means "the model this board recommends". Each refit run scores the
test videos once; the board counts them (`N_TEST_EVALUATIONS`), so a reader knows how often the
test set has been looked at.
"""

from __future__ import annotations

import json
import math
import platform
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException

from ...core.errors import ConfigError, MbrError
from ...core.process import usable_cores
from ...core.stores import default_tracking_uri
from ...tracking.queries import count_test_evaluations, pair_runs, trial_predictions, trial_runs
from ...tracking.runs import Tracker
from ...tracking.schema import (
    BEST_CV_PR_AUC,
    BEST_TEST_PR_AUC,
    CV_PR_AUC_MEAN,
    ENSEMBLE_WEIGHT,
    EXPERIMENT_PREFIX,
    FIGURES_DIR,
    KIND_ENSEMBLE,
    KIND_LEADERBOARD,
    MODEL_ARTIFACT,
    N_PAIRS,
    N_TEST_EVALUATIONS,
    TAG_BACKBONE,
    TAG_BEHAVIOUR,
    TAG_BEST_PAIR,
    TAG_HEAD,
    TAG_KIND,
    TAG_MEMBERS,
    TAG_PAIR,
    TAG_RULE,
    TEST,
    TEST_VIDEOS,
    RefitRecord,
    TrialRecord,
    experiment_name,
    prediction_artifact,
    registered_model_name,
)
from ..features.cache import EmbeddingCache, default_cache_dir
from ..progress import SearchProgress
from .ensemble import ENSEMBLE_HEAD, MemberPredictions, ensemble_name, ensemble_row, two_stream_members
from .refit import (
    NoResult,
    RefitSettings,
    best_trial,
    current_refit,
    load_test_predictions,
    refit_pair,
    training_fps,
)
from .report import write_report
from .types import PairResult, VideoPrediction, fill_statistics, sort_rows


@dataclass
class LeaderboardOptions:
    study: str  # a behaviour, or "all"
    workdir: Path
    tracking_uri: str | None = None
    out_dir: Path | None = None  # default: WORKDIR/leaderboard
    refit: bool = True  # False: only show refits that exist
    register: bool = True  # register each behaviour's best model
    refit_settings: RefitSettings = field(default_factory=RefitSettings)
    progress: bool = True
    ensembles: list[list[str]] = field(default_factory=list)  # member pairs of each --ensemble row
    two_stream: bool = True  # add the best appearance pair + best motion pair row
    cache_dir: Path | None = None  # default: $MBR_BENCH_CACHE_DIR or WORKDIR/cache


@dataclass
class Leaderboard:
    rows: dict[str, list[PairResult]]  # behaviour -> rows, best CV first
    files: dict[str, Path]
    registered: dict[str, str]  # behaviour -> "name/version"
    test_evaluations: dict[str, int] = field(default_factory=dict)  # behaviour -> test scorings so far


def studied_behaviours(client: Any, study: str, tracking_uri: str) -> list[str]:
    """The behaviours with a search in the store: `study` itself, or all of them for "all"."""
    if study != "all":
        if not pair_runs(client, study):
            raise ConfigError(f"{tracking_uri}: no search for behaviour '{study}' (experiment "
                              f"{experiment_name(study)}); run `mbr-bench run --study {study}` first, "
                              "with the same --workdir or --tracking-uri")
        return [study]
    behaviours = sorted(e.name[len(EXPERIMENT_PREFIX):] for e in client.search_experiments()
                        if e.name.startswith(EXPERIMENT_PREFIX))
    behaviours = [b for b in behaviours if pair_runs(client, b)]
    if not behaviours:
        raise ConfigError(f"{tracking_uri}: no mbr-bench search in this store; run `mbr-bench run --study all` "
                          "first, with the same --workdir or --tracking-uri")
    return behaviours


def build_leaderboard(options: LeaderboardOptions) -> Leaderboard:
    progress = SearchProgress(enabled=options.progress)
    uri = options.tracking_uri or default_tracking_uri(options.workdir)
    tracker = Tracker(uri)
    behaviours = studied_behaviours(tracker.client, options.study, uri)
    cache = EmbeddingCache(options.cache_dir or default_cache_dir(options.workdir))
    rows: dict[str, list[PairResult]] = {}
    test_evaluations: dict[str, int] = {}
    for behaviour in behaviours:
        pairs = pair_runs(tracker.client, behaviour)
        results = [_pair_result(tracker, pair, options, cache, progress) for pair in pairs]
        results += _ensemble_rows(tracker, behaviour, results, pairs, options, progress)
        rows[behaviour] = sort_rows(fill_statistics(results))
        # After this invocation's refits: every FINISHED refit run scored the test videos once.
        test_evaluations[behaviour] = count_test_evaluations(tracker.client, behaviour)

    out_dir = options.out_dir or options.workdir / "leaderboard"
    meta = {"tracking store": uri, "written": time.strftime("%Y-%m-%d %H:%M"),
            "machine": f"{platform.node()} · {platform.machine()} · {usable_cores()} CPU cores",
            "threshold rule": options.refit_settings.threshold_rule,
            "final model": options.refit_settings.final + (
                f" ({options.refit_settings.refit_seeds} seeds)" if options.refit_settings.final == "refit" else ""),
            "protocol": ", ".join(sorted({row.protocol for rows_ in rows.values() for row in rows_ if row.protocol}))
                        or "-",
            "sorted by": "CV per-video PR-AUC (test scores are reported, never used to choose)"}
    files = write_report(rows, out_dir, meta=meta, test_evaluations=test_evaluations)
    _log_to_mlflow(tracker, rows, files, options, test_evaluations)
    registered = _register_best(tracker, rows, progress) if options.register else {}
    return Leaderboard(rows, files, registered, test_evaluations)


def _pair_result(tracker: Any, pair: Any, options: LeaderboardOptions, cache: Any,
                 progress: SearchProgress) -> PairResult:
    tags = pair.data.tags
    row = PairResult(tags[TAG_BEHAVIOUR], tags[TAG_BACKBONE], tags[TAG_HEAD])
    client = tracker.client
    row.n_trials = sum(1 for t in trial_runs(client, pair.info.run_id) if TrialRecord.from_run(t).complete)
    try:
        best = best_trial(client, pair)
    except NoResult as reason:
        row.error = str(reason)
        return row
    _fill_search(row, best)
    try:
        if options.refit:
            refit = refit_pair(tracker, pair, options.refit_settings, cache, progress)
        else:
            refit, why = current_refit(client, pair, options.refit_settings)
            if refit is None:
                row.error = f"{why} (run the leaderboard without --no-refit)"
                return row
    except MbrError:
        raise  # bad input (a moved dataset, missing weights) is the user's to fix, for every pair
    except Exception as error:  # one pair's failure (memory, a diverged fit) must not hide the others
        row.error = f"refit: {type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}"
        progress.message(f"{row.behaviour} · {row.pair}: {row.error}")
        return row
    _fill_refit(row, client, refit)
    return row


def _ensemble_rows(tracker: Any, behaviour: str, results: list[PairResult], pairs: list[Any],
                   options: LeaderboardOptions, progress: SearchProgress) -> list[PairResult]:
    """The --ensemble rows and, by default, the two-stream row (see results/ensemble.py)."""
    requested = [list(members) for members in options.ensembles]
    two_stream = two_stream_members(results) if options.two_stream else None
    if two_stream and two_stream not in requested:
        requested.append(two_stream)
    by_pair = {row.pair: row for row in results}
    runs = {f"{pair.data.tags[TAG_BACKBONE]}+{pair.data.tags[TAG_HEAD]}": pair for pair in pairs}
    out = []
    for names in requested:
        missing = [n for n in names if n not in by_pair or not by_pair[n].ok or not by_pair[n].refit_run_id]
        if missing:
            row = PairResult(behaviour, ensemble_name(names), ENSEMBLE_HEAD, members=list(names))
            row.error = (f"no tested model of {', '.join(missing)} for {behaviour}; search it with "
                         "`mbr-bench run` first (and leave out --no-refit)")
            out.append(row)
            continue
        members = [MemberPredictions(by_pair[n], {video: (y, proba) for video, y, proba in
                                                  trial_predictions(tracker.client, by_pair[n].best_run_id)})
                   for n in names]
        fps = training_fps(runs[names[0]], options.refit_settings)
        row = ensemble_row(behaviour, members, fps, options.refit_settings.threshold_rule)
        if row.ok:
            _record_ensemble(tracker, row, [by_pair[n].refit_run_id for n in names])
            progress.message(f"{behaviour} · {row.pair}: weights {', '.join(f'{w:.1f}' for w in row.weights)}, "
                             f"CV PR-AUC {row.cv_pr_auc_mean:.3f}")
        out.append(row)
    return out


def _record_ensemble(tracker: Any, row: PairResult, refit_ids: list[str]) -> None:
    """One MLflow run per ensemble of these very models: the test set was scored once more (counted
    on the board); the same ensemble of the same models again recomputes the same numbers, no new run."""
    members = ",".join(refit_ids)
    experiment = tracker.client.get_experiment_by_name(experiment_name(row.behaviour))
    if experiment is not None and tracker.client.search_runs(
            [experiment.experiment_id], f"tags.`{TAG_KIND}` = '{KIND_ENSEMBLE}' and tags.`{TAG_MEMBERS}` = '{members}' "
            "and attributes.status = 'FINISHED'", max_results=1):
        return
    tags = {TAG_PAIR: row.pair, TAG_MEMBERS: members, TAG_RULE: row.threshold_rule}
    with tracker.result_run(row.behaviour, KIND_ENSEMBLE, row.pair[:200], tags) as run:
        run.log_metrics({**{f"{TEST}{k}": v for k, v in row.test_raw.items() if math.isfinite(v)},
                         CV_PR_AUC_MEAN: row.cv_pr_auc_mean,
                         **{f"{ENSEMBLE_WEIGHT}{k}": w for k, w in enumerate(row.weights)}})


def _fill_search(row: PairResult, best: Any) -> None:
    row.best_run_id = best.info.run_id
    record = TrialRecord.from_run(best)
    row.cv_pr_auc_mean = record.cv_pr_auc_mean
    row.cv_pr_auc_std = record.cv_pr_auc_std
    row.cv_pr_auc_se = record.cv_pr_auc_se  # NaN on older runs: `fill_statistics` takes it from the folds
    row.cv_pr_auc_pooled = record.cv_pr_auc_pooled
    row.cv_n_folds = record.n_folds
    row.best_trial = record.trial
    row.protocol = record.protocol
    row.params = dict(record.params)
    row.cv_video_scores.update(record.fold_scores)


def _fill_refit(row: PairResult, client: Any, refit: Any) -> None:
    record = RefitRecord.from_run(refit)
    row.refit_run_id = record.run_id
    row.threshold = record.threshold
    row.threshold_rule = record.threshold_rule
    row.postprocess = record.postprocess
    row.params = record.head_params or row.params
    row.final = record.final
    row.test_raw = record.test_raw
    row.test_post = record.test_post
    # Logged by the refit; older refits logged only the pooled "pr_auc": `fill_statistics` then
    # computes both from the per-video scores and predictions read below.
    row.test_pr_auc_mean = record.test_raw.get("pr_auc_mean", math.nan)
    row.test_pr_auc_pooled = record.test_raw.get("pr_auc_pooled", math.nan)
    row.search_cpu_seconds = record.compute.get("search_cpu_seconds", math.nan)
    row.refit_cpu_seconds = record.compute.get("refit_cpu_seconds", math.nan)
    row.inference_fps = record.compute.get("inference_frames_per_second", math.nan)
    row.embedding_seconds_per_frame = record.compute.get("embedding_seconds_per_frame", math.nan)
    row.n_params = int(record.compute.get("n_params", 0))
    for video in load_test_predictions(client, record.run_id):
        row.test_videos.append(VideoPrediction(video.video_id, video.y, video.proba, video.raw, video.post, video.fps))
    with tempfile.TemporaryDirectory(prefix="mbr-videos-") as folder:
        path = client.download_artifacts(record.run_id, prediction_artifact(TEST_VIDEOS), folder)
        row.test_video_scores = {video: float(scores["pr_auc"]) for video, scores in json.loads(
            Path(path).read_text()).items()}


def _log_to_mlflow(tracker: Any, rows: dict[str, list[PairResult]], files: dict[str, Path],
                   options: LeaderboardOptions, test_evaluations: dict[str, int]) -> None:
    """One ``leaderboard`` run per behaviour and invocation, holding that behaviour's files.

    Its metrics: the best pair's CV and test per-video PR-AUC, the number of pairs, and how many
    times the behaviour's test set has been scored so far (`N_TEST_EVALUATIONS`).
    """
    for behaviour, behaviour_rows in rows.items():
        best = next((r for r in behaviour_rows if r.ok and math.isfinite(r.cv_pr_auc_mean)), None)
        tags = {TAG_BEST_PAIR: best.pair if best else "", TAG_RULE: options.refit_settings.threshold_rule}
        with tracker.result_run(behaviour, KIND_LEADERBOARD, "leaderboard", tags) as run:
            for key in ("csv", "markdown", "html"):
                run.log_artifact(files[key])
            for key, path in files.items():
                if key.startswith(f"{behaviour}_"):
                    run.log_artifact(path, FIGURES_DIR)
            metrics = {N_TEST_EVALUATIONS: float(test_evaluations.get(behaviour, 0))}
            if best is not None:
                metrics.update({BEST_CV_PR_AUC: best.cv_pr_auc_mean, N_PAIRS: len(behaviour_rows)})
                if math.isfinite(best.test_pr_auc_mean):
                    metrics[BEST_TEST_PR_AUC] = best.test_pr_auc_mean
            run.log_metrics(metrics)


def _register_best(tracker: Any, rows: dict[str, list[PairResult]], progress: SearchProgress) -> dict[str, str]:
    """Make each behaviour's best-CV refit the newest version of ``mbr-bench.<behaviour>``."""
    client = tracker.client
    registered = {}
    for behaviour, behaviour_rows in rows.items():
        best = next((r for r in behaviour_rows if r.ok and r.refit_run_id), None)
        if best is None:
            continue
        name = registered_model_name(behaviour)
        try:
            try:
                client.create_registered_model(name, description=f"best {behaviour} model of the mbr-bench leaderboard")
            except MlflowException:
                pass  # it exists already
            versions = client.search_model_versions(f"name = '{name}'")
            latest = max(versions, key=lambda v: int(v.version)) if versions else None
            if latest is None or latest.run_id != best.refit_run_id:
                latest = tracker.register_model_version(name, best.refit_run_id, MODEL_ARTIFACT, {TAG_PAIR: best.pair})
            registered[behaviour] = f"{name}/{latest.version}"
        except MlflowException as error:  # a store without a model registry: the run id still works
            progress.message(f"could not register {name}: {str(error).splitlines()[0][:160]}; "
                             f"use --model {best.refit_run_id}")
    return registered

