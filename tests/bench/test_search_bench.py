"""Target 5: seeded TPE + pruning reaches the grid's best CV PR-AUC (within 0.01) with <= 30 % of its fold-epochs.

How it is measured, so that several seeds fit in minutes:

1. Every configuration of a reference-shaped grid (`search_efficiency.yaml`, 27 LSTM configurations)
   is cross-validated once through the product's `cross_validate` (leave-one-video-out on the
   synthetic open field's pose features, early stopping on the held-out video's PR-AUC). Per fold it
   keeps the PR-AUC and the epochs run: a table of what each configuration costs and scores.
2. The searches are then replayed against that table with the product's own sampler and pruner
   (`make_sampler`, `make_pruner`): the objective reports the running fold mean after each fold,
   exactly as `make_objective` does, and is charged the fold's epochs; a pruned trial stops there.
   Training is seeded, so a configuration scores the same whenever a search picks it, and the
   replay costs what a real search would, without training each configuration again per seed.

The grid is replayed without pruning, as the reference ran it, over shuffled orders (one per seed).
The target ratio is the median over seeds of the fold-epochs TPE needed to come within 0.01 of the
grid's best, divided by the fold-epochs of the whole grid.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

TARGET = 0.30
TOLERANCE = 0.01
SEEDS = range(30)  # replaying is cheap: seeds cost milliseconds once the grid is trained
BEHAVIOUR = "wall_rearing"
SPACE_FILE = Path(__file__).with_name("search_efficiency.yaml")
N_VIDEOS, N_FRAMES = 5, 1500  # 4 train videos (4 folds) + 1 test video, as `mbr-bench synth` writes them
TRAINING_SEED = 0
RESULTS_DIR = Path(os.environ.get("MBR_BENCH_RESULTS", "bench-results"))
FIGURE = "search_efficiency.png"


@dataclass(frozen=True)
class Scored:
    """One grid configuration's cross-validation: per fold, PR-AUC and epochs run."""

    params: dict
    pr_auc: tuple[float, ...]
    epochs: tuple[int, ...]

    @property
    def score(self) -> float:
        return float(np.nanmean(self.pr_auc))

    @property
    def fold_epochs(self) -> int:
        return int(sum(self.epochs))


def _key(params: dict, names: list[str]) -> tuple:
    return tuple(params[name] for name in names)


def score_grid(space, data, folds) -> dict[tuple, Scored]:
    """Cross-validate every grid configuration through the product's training path."""
    import itertools

    from mbr_bench.benchmark.heads import HEADS
    from mbr_bench.benchmark.search import cross_validate

    grid = space.grid()
    names = list(grid)
    table: dict[tuple, Scored] = {}
    for values in itertools.product(*grid.values()):
        params = space.with_fixed(dict(zip(names, values)))
        cv = cross_validate(lambda params=params: HEADS.build("lstm", seed=TRAINING_SEED, **params), data, folds)
        fold_metrics = [result.metrics for result in cv.folds]
        table[tuple(values)] = Scored(params, tuple(float(m["pr_auc"]) for m in fold_metrics),
                                      tuple(int(m["epochs_run"]) for m in fold_metrics))
    return table


def replay(table: dict[tuple, Scored], space, sampler_for, pruner, budget_fold_epochs: float,
           max_trials: int) -> tuple[list[tuple[float, float]], list[int]]:
    """Run a study whose objective reads `table`; returns (fold-epochs spent, best score) after every
    trial, and the fold-epochs charged to each trial.

    Mirrors the runner: before each trial the sampler is `sampler_for(number of trials so far)`, as
    `workers.run_trials` reseeds it; and `search.make_objective`: a repeat of a complete trial's parameters reuses its score at
    no cost; otherwise after each fold the running mean is reported and the pruner asked, except
    after the last fold (a finished trial is complete, not pruned).
    """
    import optuna

    from mbr_bench.benchmark.search import earlier_result

    names = list(space.distributions)
    spent = 0.0
    curve: list[tuple[float, float]] = []
    charged: list[int] = []
    study = optuna.create_study(direction="maximize", sampler=sampler_for(0), pruner=pruner)

    def objective(trial: optuna.Trial) -> float:
        nonlocal spent
        scored = table[_key(space.suggest(trial), names)]
        earlier = earlier_result(trial)
        if earlier is not None:
            charged.append(0)
            return float(earlier.value)
        running: list[float] = []
        cost = 0
        try:
            for step, (pr_auc, epochs) in enumerate(zip(scored.pr_auc, scored.epochs)):
                cost += epochs
                running.append(pr_auc)
                trial.report(float(np.nanmean(running)), step=step)
                if step < len(scored.pr_auc) - 1 and trial.should_prune():
                    raise optuna.TrialPruned()
            return scored.score
        finally:
            spent += cost
            charged.append(cost)

    def record(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        complete = [t.value for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
        curve.append((spent, max(complete) if complete else float("nan")))
        if spent >= budget_fold_epochs:
            study.stop()

    for _ in range(max_trials):
        study.sampler = sampler_for(len(study.get_trials(deepcopy=False)))
        study.optimize(objective, n_trials=1, callbacks=[record])
        if spent >= budget_fold_epochs:
            break
    return curve, charged


def fold_epochs_to_reach(curve: list[tuple[float, float]], goal: float) -> float:
    """Fold-epochs spent when the best score first reached `goal` (inf if it never did)."""
    for spent, best in curve:
        if best >= goal:
            return spent
    return math.inf


def _synthetic_pair_data(folder: Path):
    from mbr_bench.benchmark.backbones import build_backbone
    from mbr_bench.benchmark.cv import leave_one_video_out
    from mbr_bench.benchmark.data.labels import read_labels
    from mbr_bench.benchmark.data.manifest import load_dataset
    from mbr_bench.benchmark.data.synthetic import generate
    from mbr_bench.benchmark.features.cache import EmbeddingCache
    from mbr_bench.benchmark.features.embed import embed_dataset
    from mbr_bench.benchmark.search import PairData

    dataset = load_dataset(generate(folder / "synthetic", n_videos=N_VIDEOS, n_frames=N_FRAMES, seed=0, n_test=1,
                                    size=96))
    train = dataset.split("train")
    results = embed_dataset(dataset, build_backbone("pose", dataset), EmbeddingCache(folder / "cache"),
                            video_ids=[v.id for v in train], progress=False)
    embeddings = {r.video_id: np.load(r.path) for r in results}
    labels = {v.id: read_labels(v.labels, dataset.behaviours, n_frames=len(embeddings[v.id]), fps=v.fps)[BEHAVIOUR]
              .to_numpy() for v in train}
    return PairData(embeddings, labels), leave_one_video_out(dataset)


def _median_curve(curves, grid_total: float, points: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """The median over seeds of best-so-far, on a common fold-epochs axis (NaN before any score)."""
    x = np.linspace(0.0, 1.0, points)
    values = []
    for curve in curves:
        spent = np.array([c[0] for c in curve]) / grid_total
        best = np.array([c[1] for c in curve])
        index = np.searchsorted(spent, x, side="right") - 1
        values.append(np.where(index >= 0, best[np.clip(index, 0, None)], np.nan))
    values = np.array(values)
    scored = ~np.isnan(values).all(axis=0)  # before any seed has a complete trial there is no median
    return x[scored], np.nanmedian(values[:, scored], axis=0)


def _figure(grid_curves, tpe_curves, grid_total: float, goal: float, path: Path) -> None:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.5, 4.5), dpi=110)
    axes = figure.add_subplot()
    for curves, colour, label in ((grid_curves, "0.55", "reference grid, no pruning"),
                                  (tpe_curves, "tab:blue", "seeded TPE + median pruning")):
        for index, curve in enumerate(curves):
            x = [spent / grid_total for spent, best in curve if not math.isnan(best)]
            y = [best for spent, best in curve if not math.isnan(best)]
            axes.step(x, y, where="post", color=colour, alpha=0.35, linewidth=1.0)
        axes.plot(*_median_curve(curves, grid_total), color=colour, linewidth=2.5, label=f"{label} (median)")
    axes.axhline(goal, color="tab:red", linestyle="--", linewidth=1, label=f"grid best - {TOLERANCE}")
    axes.axvline(TARGET, color="black", linestyle=":", linewidth=1, label=f"{TARGET:.0%} of the grid's fold-epochs")
    axes.set_xlabel("fold-epochs spent / fold-epochs of the whole grid")
    axes.set_ylabel("best CV PR-AUC so far")
    axes.set_xlim(0, 1.0)
    axes.set_title(f"Best-so-far CV PR-AUC, {len(tpe_curves)} seeds each (synthetic open field, {BEHAVIOUR})")
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)


def test_tpe_with_pruning_vs_reference_grid(benchmark, tmp_path):
    import optuna

    from mbr_bench.benchmark.search import make_pruner, make_sampler
    from mbr_bench.search_spaces.loader import load_search_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_search_space("lstm", SPACE_FILE)
    data, folds = _synthetic_pair_data(tmp_path)
    started = time.perf_counter()
    table = benchmark.pedantic(score_grid, args=(space, data, folds), rounds=1, iterations=1)
    table_seconds = time.perf_counter() - started
    assert len(table) == space.grid_size()

    grid_total = float(sum(s.fold_epochs for s in table.values()))
    grid_best = max(s.score for s in table.values())
    goal = grid_best - TOLERANCE
    n_near = sum(s.score >= goal for s in table.values())
    max_trials = 3 * len(table)  # TPE may pick a configuration again: a real search pays for it again

    grid_curves, tpe_curves, tpe_needed, grid_needed, tpe_charged = [], [], [], [], []
    tpe_repeats = tpe_trials = 0
    for seed in SEEDS:
        curve, _ = replay(table, space, lambda n, seed=seed: make_sampler("grid", space, seed),  # one order per seed
                          optuna.pruners.NopPruner(), grid_total, len(table))
        grid_curves.append(curve)
        grid_needed.append(fold_epochs_to_reach(curve, goal) / grid_total)
        curve, charged = replay(table, space, lambda n, seed=seed: make_sampler("tpe", space, seed + n), make_pruner(),
                                grid_total, max_trials)
        tpe_curves.append(curve)
        tpe_charged.extend(c for c in charged if c > 0)  # trials that trained (repeats cost nothing)
        tpe_repeats += charged.count(0)
        tpe_trials += len(charged)
        tpe_needed.append(fold_epochs_to_reach(curve, goal) / grid_total)
    assert grid_curves[0][-1][1] == pytest.approx(grid_best)  # the grid replay visits every configuration

    ratio = statistics.median(tpe_needed)
    full_trial = grid_total / len(table)
    fold_fits = [e for s in table.values() for e in s.epochs]
    max_epochs = space.fixed["max_epochs"]
    met = sum(n <= TARGET for n in tpe_needed)
    _figure(grid_curves, tpe_curves, grid_total, goal, RESULTS_DIR / FIGURE)

    def fractions(values):
        return ", ".join("never" if math.isinf(v) else f"{v:.2f}" for v in values)

    best_params = max(table.values(), key=lambda s: s.score).params
    section = "\n".join([
        "## Search efficiency: seeded TPE + pruning vs the reference grid",
        "",
        f"![best-so-far CV PR-AUC against fold-epochs]({FIGURE})",
        "",
        f"- Grid: {len(table)} LSTM configurations (`tests/bench/search_efficiency.yaml`), {len(folds)} "
        f"leave-one-video-out folds on the synthetic open field's pose features ({BEHAVIOUR}); trained once "
        f"each through `cross_validate` in {table_seconds:.0f} s, {grid_total:.0f} fold-epochs in all.",
        f"- Grid best CV PR-AUC {grid_best:.3f} ({', '.join(f'{k}={v}' for k, v in best_params.items() if k in space.distributions)}); "
        f"{n_near} of {len(table)} configurations are within {TOLERANCE}.",
        f"- Fold-epochs to come within {TOLERANCE} of it, as a fraction of the whole grid, per seed "
        f"({len(SEEDS)} seeds): TPE + pruning {fractions(tpe_needed)}; grid in shuffled order {fractions(grid_needed)}.",
        f"- TPE + pruning met the {TARGET:.0%} target in {met} of {len(SEEDS)} seeds; median "
        f"{ratio:.2f} vs the grid's median {statistics.median(grid_needed):.2f}.",
        f"- A TPE trial that trained cost {statistics.mean(tpe_charged) / full_trial:.2f} of a full trial on average "
        f"(pruning); {tpe_repeats} of {tpe_trials} TPE trials (each replay runs to {max_trials} trials or the grid's "
        f"fold-epochs) repeated a scored configuration and cost nothing; "
        f"fold fits ran {statistics.mean(fold_fits):.1f} of at most {max_epochs} epochs.",
    ])
    benchmark.extra_info.update(
        target="5. Search: fold-epochs for TPE + pruning to reach the grid's best - 0.01 / the grid's",
        ratio=round(ratio, 4),
        comparison="<=",
        target_value=TARGET,
        note=(f"median of {len(SEEDS)} seeds ({met} met); grid of {len(table)} LSTM configs x {len(folds)} folds, "
              f"best {grid_best:.3f}, {n_near} configs within {TOLERANCE}; grid in shuffled order needed a median "
              f"{statistics.median(grid_needed):.2f}; figure {FIGURE}"),
        report_section=section,
        grid_best=round(grid_best, 5),
        grid_fold_epochs=grid_total,
        grid_seconds=round(table_seconds, 1),
        tpe_fractions=[None if math.isinf(v) else round(v, 4) for v in tpe_needed],
        grid_fractions=[None if math.isinf(v) else round(v, 4) for v in grid_needed],
        tpe_curves=tpe_curves,
        grid_curves=grid_curves,
        table=[{"params": s.params, "pr_auc": s.pr_auc, "epochs": s.epochs} for s in table.values()],
        search_mean_epochs_fraction=round(statistics.mean(fold_fits) / max_epochs, 4),
        search_tpe_trial_cost_fraction=round(statistics.mean(tpe_charged) / full_trial, 4),
        search_tpe_repeat_share=round(tpe_repeats / tpe_trials, 4),
    )
