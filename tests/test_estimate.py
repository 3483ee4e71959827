"""`mbr-bench estimate` and the estimate `run` prints first: the arithmetic against the cost model, the
calibration file, the cache, the day limit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mbr_bench.benchmark import cost_model as cm
from mbr_bench.benchmark import estimate as est
from mbr_bench.benchmark.cli import main
from mbr_bench.benchmark.data.manifest import Dataset, VideoEntry, load_dataset
from mbr_bench.core.errors import ConfigError
from mbr_bench.search_spaces.loader import load_search_space

THESIS = cm.StudyShape()
WIDTH = {"resnet50v2": 2048, "inception_resnet_v2": 1536}
EMBED_SPF = {"resnet50v2": 0.04, "inception_resnet_v2": 0.13}


def _thesis_dataset() -> Dataset:
    """The reference study's shape: 17 videos (12 train, 5 test), three behaviours; no file is read."""
    videos = tuple(VideoEntry(f"v{k:02d}", Path(f"v{k:02d}.mp4"), labels=Path(f"v{k:02d}.csv"),
                              split="train" if k < THESIS.n_train else "test")
                   for k in range(THESIS.n_videos))
    return Dataset(Path("thesis/dataset.yaml"), "thesis", THESIS.behaviours, videos)


def _linear_costs(monkeypatch):
    """Measurements replaced by exact laws: seconds per frame proportional to the parameter count."""
    def model(part, dataset):
        return {"seconds_per_frame": EMBED_SPF[part], "dim": WIDTH[part], "input_size": 224}

    def head(head_name, params, dim, fold_frames=(0, 0)):
        n = cm.head_params(head_name, dim, params)
        return {"n_params": n, "train_seconds_per_frame_epoch": 2e-11 * n, "infer_seconds_per_frame": 5e-12 * n,
                "fit_overhead_seconds": 0.0}

    monkeypatch.setattr(est, "measure_model", model)
    monkeypatch.setattr(est, "measure_head", head)
    monkeypatch.setattr(est, "_decode_seconds_per_frame", lambda *args: 0.0)
    monkeypatch.setattr(est, "TRACKING_SECONDS_PER_FOLD", 0.0)
    monkeypatch.setattr(est, "SINGLE_POINT_EXPONENT", {})  # one probe extrapolates proportionally, as the law


def _thesis_plan(n_trials: int | None) -> est.Plan:
    """The reference grids; with `n_trials`, that many of their configurations (the cost model's TPE
    budget: trials that cost the grid's mean trial)."""
    spaces = {head: load_search_space(head) for head in THESIS.heads}
    return est.Plan(_thesis_dataset(), list(THESIS.behaviours), list(THESIS.backbones), list(THESIS.heads), spaces,
                    n_trials, refit_seeds=1, sampler="grid")


def test_the_reference_grid_costs_what_the_cost_model_projects(monkeypatch, tmp_path):
    """On the thesis' shape, the estimate of a grid run is the benchmark report's grid projection (same
    per-frame costs): the reference-grid figure that `mbr-bench estimate` prints on a thesis-sized manifest."""
    _linear_costs(monkeypatch)
    frames = {f"v{k:02d}": THESIS.frames_per_video for k in range(THESIS.n_videos)}
    store = est.CalibrationStore(tmp_path / "calibration.json")
    grid = est.estimate_plan(_thesis_plan(None), None, store, frames=frames)
    tpe = est.estimate_plan(_thesis_plan(THESIS.tpe_trials), None, store, frames=frames)

    law = cm.PowerLaw(2e-11, 1.0)
    grids = {}
    for head in THESIS.heads:
        configs = est.space_configs(load_search_space(head))
        grids[head] = [(1, {b: cm.head_params(head, WIDTH[b], c) for b in THESIS.backbones}) for c in configs]
    inputs = cm.CostInputs(EMBED_SPF, {h: law for h in THESIS.heads}, {h: cm.PowerLaw(5e-12, 1.0) for h in THESIS.heads},
                           grids)
    projection = cm.project(THESIS, inputs, cm.Epochs.upper(THESIS))
    assert grid.total / 3600 == pytest.approx(projection["total"]["grid"], rel=1e-9)
    assert tpe.total / 3600 == pytest.approx(projection["total"]["tpe"], rel=1e-9)
    assert grid.search / 3600 == pytest.approx(sum(projection["training"]["grid"].values()), rel=1e-9)
    assert [p.trials for p in grid.pairs] == [81, 648, 81, 648]  # the thesis grids, every behaviour
    assert grid.total > 20 * tpe.total  # the grid is what made the reference study cost what it did
    text = "\n".join(est.report_lines(grid))
    assert "17 videos, 112,200 frames; 12 train videos (12 folds), 5 test" in text
    assert f"total {est.fmt_duration(grid.total)}" in text


def test_probes_differ_in_parameters_only_and_one_probe_extrapolates_with_the_measured_exponent():
    space = load_search_space("lstm")  # batch 8/16/32, sequence 300/600/1650
    probes = est._probe_configs("lstm", est.space_configs(space), 2048, {})
    assert [(p["n_layers"], p["units"], p["batch_size"], p["sequence_length"]) for p in probes] == [
        (1, 64, 8, 300), (3, 256, 8, 300)]
    point = {"n_params": 4e6, "train_seconds_per_frame_epoch": 1e-4, "infer_seconds_per_frame": 1e-5,
             "fit_overhead_seconds": 2.0}
    cost = est.head_cost([point], "tcn")
    assert cost.train(4e6) == pytest.approx(1e-4) and cost.train(8e6) == pytest.approx(1e-4 * 2 ** 1.21)
    assert est.head_cost([point], "frame_mlp").train(8e6) == pytest.approx(2e-4)
    wild = est.head_cost([point, {**point, "n_params": 4.4e6, "train_seconds_per_frame_epoch": 1e-2}], "tcn")
    assert wild.train.k == est.EXPONENT_RANGE[1]  # two noisy close points do not extrapolate wildly


def test_a_timeout_caps_each_study_and_a_day_needs_yes(monkeypatch, tmp_path):
    _linear_costs(monkeypatch)
    frames = {f"v{k:02d}": THESIS.frames_per_video for k in range(THESIS.n_videos)}
    plan = _thesis_plan(THESIS.tpe_trials)
    store = est.CalibrationStore(tmp_path / "calibration.json")
    unbounded = est.estimate_plan(plan, None, store, frames=frames)
    plan.timeout = 600.0
    bounded = est.estimate_plan(plan, None, store, frames=frames)
    assert all(p.capped and p.search == pytest.approx(600.0 * 3) for p in bounded.pairs)
    assert bounded.total < unbounded.total
    assert unbounded.total > est.ONE_DAY
    with pytest.raises(ConfigError, match=r"thesis/dataset.yaml: this run is estimated at .*(more than a day).*--yes"):
        est.check_budget(unbounded, yes=False, timeout=None)
    est.check_budget(unbounded, yes=True, timeout=None)
    est.check_budget(unbounded, yes=False, timeout=600.0)


def test_tpe_is_costed_over_what_it_draws(tmp_path):
    space = load_search_space("lstm", _write(tmp_path, "lstm: {units: {choices: [64, 128, 256], grid: [128]}, "
                                             "n_layers: {low: 1, high: 3}, learning_rate: {low: 1.0e-4, high: 1.0e-2, "
                                             "log: true}, max_epochs: 7}\n"))
    tpe = est.space_configs(space, grid=False)
    assert sorted((c["units"], c["n_layers"]) for c in tpe) == [(64, 1), (64, 3), (128, 1), (128, 3), (256, 1),
                                                               (256, 3)]
    assert all(c["learning_rate"] == pytest.approx(1e-3) and c["max_epochs"] == 7 for c in tpe)
    with pytest.raises(ConfigError, match="no grid values"):
        est.space_configs(space, grid=True)


def test_calibration_is_measured_once_per_machine(tiny_dataset, tmp_path, monkeypatch):
    dataset = load_dataset(tiny_dataset(n_frames=120))
    space = load_search_space("frame_mlp", _space(tmp_path))
    plan = est.Plan(dataset, ["rearing"], ["pose"], ["frame_mlp"], {"frame_mlp": space}, 3)
    path = tmp_path / "calibration.json"
    first = est.estimate_plan(plan, None, est.CalibrationStore(path))
    assert first.measured_seconds > 0 and path.is_file()
    stored = json.loads(path.read_text())
    points = [v for k, v in stored["entries"].items() if k.startswith("head|")]
    assert len(points) == 2  # the space's smallest and largest architecture
    assert all(p["train_seconds_per_frame_epoch"] > 0 and p["infer_seconds_per_frame"] > 0 for p in points)
    assert first.search > 0 and first.leaderboard > 0 and first.embedding["pose"] > 0

    again = est.CalibrationStore(path)
    second = est.estimate_plan(plan, None, again)
    assert again.measured == [] and second.measured_seconds == 0
    assert second.search == pytest.approx(first.search)

    monkeypatch.setattr(est, "machine", lambda: {"cpu": "another", "cores": 64})
    assert est.CalibrationStore(path).entries == {}  # another machine measures for itself


def test_cached_videos_cost_nothing_to_embed(tiny_dataset, tmp_path, capsys):
    manifest = tiny_dataset(n_frames=60)
    workdir = tmp_path / "work"
    assert main(["embed", "--dataset", str(manifest), "--backbone", "pose", "--workdir", str(workdir),
                 "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["estimate", "--study", "rearing", "--dataset", str(manifest), "--backbones", "pose", "--heads",
                 "frame_mlp", "--search-space", str(_space(tmp_path)), "--n-trials", "3", "--workdir", str(workdir),
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "tiny: 3 videos, 180 frames; 2 train videos (2 folds), 1 test; behaviours rearing" in out
    assert [line.split() for line in out.splitlines() if line.startswith("pose ")] == [["pose", "3/3", "0", "s"]]
    pair = next(line for line in out.splitlines() if line.startswith("pose+frame_mlp"))
    assert pair.split()[1] == "3"  # trials
    assert "total " in out and "this machine:" in out


def test_run_beyond_a_day_stops_before_any_work_unless_yes(tiny_dataset, tmp_path, capsys, monkeypatch):
    manifest = tiny_dataset(n_frames=60)
    path = tmp_path / "calibration.json"
    monkeypatch.setenv(est.CALIBRATION_ENV, str(path))
    args = ["--study", "rearing", "--dataset", str(manifest), "--backbones", "pose", "--heads", "frame_mlp",
            "--search-space", str(_space(tmp_path)), "--n-trials", "1", "--no-progress"]
    assert main(["estimate", *args, "--workdir", str(tmp_path / "probe")]) == 0
    stored = json.loads(path.read_text())
    for entry in stored["entries"].values():  # a machine a million times slower
        for key in ("train_seconds_per_frame_epoch", "infer_seconds_per_frame", "seconds_per_frame"):
            if key in entry:
                entry[key] *= 1e6
    path.write_text(json.dumps(stored))
    capsys.readouterr()
    workdir = tmp_path / "work"
    assert main(["run", *args, "--workdir", str(workdir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "more than a day" in err[0] and "--yes" in err[0] and str(manifest) in err[0]
    import optuna
    from mlflow import MlflowClient

    # Nothing was started: no study, no run (the stores exist, empty).
    assert optuna.get_all_study_summaries(f"sqlite:///{workdir / 'optuna.db'}") == []
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    assert not client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert not (workdir / "cache").exists()


def _space(tmp_path: Path) -> Path:
    return _write(tmp_path, "frame_mlp: {units: {choices: [8, 32]}, n_layers: {choices: [1, 2]}, sequence_length: 30, "
                            "max_epochs: 3, learning_rate: {low: 1.0e-3, high: 1.0e-2, log: true}}\n")


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path
