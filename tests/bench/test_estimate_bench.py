"""Target 9: `mbr-bench estimate` against the time the run and its leaderboard then take.

On a small synthetic open field, the estimate is taken first (its per-frame costs measured on this
machine into a fresh calibration file), then the same plan runs through `mbr-bench run` and
`mbr-bench leaderboard`, and their wall time is compared with the estimate's total. The ratio is the
larger of measured/estimated and estimated/measured: 1 is exact, the target is within 2x either way.
The estimate is an upper bound of the work (every fold trains max_epochs, no pruning), so it may
come out above the measurement; the parts are recorded side by side.

Run by `make bench`; skipped in the normal run (pyproject's --benchmark-skip).
"""

from __future__ import annotations

import time

from mbr_bench.benchmark import estimate as estimate_module
from mbr_bench.benchmark.cli import main
from mbr_bench.benchmark.data.synthetic import generate
from mbr_bench.benchmark.progress import SearchProgress
from mbr_bench.benchmark.runner import RunOptions, estimate_run, plan_run
from mbr_bench.search_spaces.loader import default_space_path

from .conftest import mobilenet_weights

TARGET = 2.0
BEHAVIOUR = "wall_rearing"
BACKBONES, HEADS, TRIALS = ["pose", "mobilenet_v2"], ["lstm", "frame_mlp"], 2


def test_estimate_against_the_run(benchmark, tmp_path, monkeypatch):
    monkeypatch.setenv(estimate_module.CALIBRATION_ENV, str(tmp_path / "calibration.json"))
    manifest = generate(tmp_path / "data", n_videos=5, n_frames=900, seed=3, n_test=1)
    workdir = tmp_path / "work"
    weights = mobilenet_weights()
    options = RunOptions(study=BEHAVIOUR, workdir=workdir, dataset=manifest, backbones=BACKBONES, heads=HEADS,
                         n_trials=TRIALS, search_space=default_space_path("demo"), weights=weights, progress=False)
    common = ["--study", BEHAVIOUR, "--workdir", str(workdir), "--no-progress"]
    run_args = ["run", *common, "--dataset", str(manifest), "--backbones", *BACKBONES, "--heads", *HEADS,
                "--n-trials", str(TRIALS), "--search-space", str(default_space_path("demo")), "--weights", weights]
    measured: dict = {}

    def measure():
        started = time.perf_counter()
        measured["estimate"] = estimate_run(options, plan_run(options, SearchProgress(enabled=False)),
                                            SearchProgress(enabled=False))
        measured["estimate_seconds"] = time.perf_counter() - started
        started = time.perf_counter()
        assert main(run_args) == 0
        measured["run"] = time.perf_counter() - started
        started = time.perf_counter()
        assert main(["leaderboard", *common]) == 0
        measured["leaderboard"] = time.perf_counter() - started

    benchmark.pedantic(measure, rounds=1, iterations=1)
    estimate = measured["estimate"]
    total = measured["run"] + measured["leaderboard"]
    ratio = max(total / estimate.total, estimate.total / total)
    benchmark.extra_info.update(
        target=f"9. Estimate: run + leaderboard time vs `mbr-bench estimate` (x, either way; <= {TARGET:g})",
        ratio=round(ratio, 3), comparison="<=", target_value=TARGET,
        note=(f"estimated {estimate.total:.0f} s (embedding {sum(estimate.embedding.values()):.0f}, search "
              f"{estimate.search:.0f}, leaderboard {estimate.leaderboard:.0f}); measured {total:.0f} s (run "
              f"{measured['run']:.0f}, leaderboard {measured['leaderboard']:.0f}); calibration took "
              f"{measured['estimate_seconds']:.0f} s; {len(BACKBONES)} backbones x {len(HEADS)} heads x {TRIALS} "
              "trials, 5 videos x 900 frames"),
        estimated_seconds=estimate.total, measured_seconds=total,
        pairs={f"{p.backbone}+{p.head}": {"search": p.search, "leaderboard": p.leaderboard} for p in estimate.pairs},
    )
    assert estimate.total > 0 and total > 0
