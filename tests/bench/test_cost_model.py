"""The cost model's arithmetic (benchmark/cost_model.py) and the report's section (cost_report.py), from
hand-made inputs (an ordinary test, run by `make test`)."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import pytest

from mbr_bench.benchmark import cost_model as cm

HERE = Path(__file__).parent


def _cost_report():
    """The report's section, loaded by path as report.py loads it (tests/bench is not a package)."""
    spec = importlib.util.spec_from_file_location("bench_cost_report", HERE / "cost_report.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


cost_section = _cost_report().cost_section
SHAPE = cm.StudyShape()


def _info(embed=(0.04, 0.13), train=((1e-4, 0.0), (2e-4, 1e-10)), infer=((5e-5, 0.0), (5e-5, 1e-11)),
          grid_configs=((81, 1e6), (648, 5e7))) -> dict:
    """A target-6 extra_info with exact linear costs: two calibration points per head on a + b * params,
    and one grid architecture per head (all its configurations, the same params for both backbones)."""
    calibration, grids = {}, {}
    for head, (ta, tb), (ia, ib), (configs, params) in zip(("lstm", "tcn"), train, infer, grid_configs):
        calibration[head] = [{"params": {"n_layers": 1}, "n_params": n, "frames": 4800,
                              "train_seconds_per_frame_epoch": ta + tb * n, "infer_seconds_per_frame": ia + ib * n}
                             for n in (1e6, 1e8)]
        grids[head] = {"n_configs": configs, "architectures": [
            {"params": {"n_layers": 1}, "configs": configs, "n_params": {b: params for b in SHAPE.backbones}}]}
    embedding = {b: {"frames": 96, "seconds_per_frame": s, "batch_size": 32, "weights": "none", "output_dim": 2048}
                 for b, s in zip(SHAPE.backbones, embed)}
    return {"target": "6. Cost model: reference study, TPE budget / reference grid (hours)", "ratio": 0.1,
            "comparison": "<=", "note": "", "cores": 2, "embedding": embedding, "calibration": calibration,
            "grids": grids}


def _data(info=None, search=None) -> dict:
    benchmarks = [{"name": "test_other", "extra_info": {"target": "1. pipeline", "ratio": 0.9}}]
    if info is not None:
        benchmarks.append({"name": "test_cost_model_inputs", "extra_info": info})
    if search is not None:
        benchmarks.append({"name": "test_search", "extra_info": {"target": "5. Search: fold-epochs", **search}})
    return {"machine_info": {"cpu_model": "Test CPU", "cpu_affinity": 2}, "benchmarks": benchmarks}


def _project(info, epochs=None, shape=SHAPE):
    return cm.project(shape, cm.inputs_from_info(info), epochs or cm.Epochs.upper(shape))


def test_fit_linear_recovers_a_and_b():
    xs = [5e5, 2e6, 3e7, 2e8]
    ys = [3e-5 + 4e-11 * x for x in xs]
    for model in (cm.fit_linear(xs, ys), cm.fit_relative(xs, ys)):
        assert model.a == pytest.approx(3e-5, rel=1e-9)
        assert model.b == pytest.approx(4e-11, rel=1e-9)
        assert max(abs(r) for r in cm.residuals(model, xs, ys)) < 1e-9
    single = cm.fit_linear([7.0], [2.0])
    assert (single.a, single.b) == (2.0, 0.0)
    assert cm.Linear(-1.0, 1e-6)(10) == 0.0  # extrapolation never goes negative
    with pytest.raises(ValueError):
        cm.fit_linear([1.0, 2.0], [1.0])


def test_power_exponent_and_fit_sensitivity():
    assert cm.power_exponent([1e6, 2e6, 4e6], [3e-5, 6e-5, 12e-5]) == pytest.approx(1.0)
    assert cm.power_exponent([1e6, 2e6, 4e6], [1e-5, 4e-5, 16e-5]) == pytest.approx(2.0)
    # Costs proportional to params: the power law (k = 1) and both straight lines fit them exactly.
    proportional = _info(train=((0.0, 2e-12), (0.0, 1e-10)), infer=((0.0, 1e-12), (0.0, 1e-11)))
    text = cost_section(_data(proportional))
    line = next(line for line in text.splitlines() if line.startswith("- Fit sensitivity"))
    assert line.count("(1.00x)") == 4
    power = cm.fit_power([1e6, 1e7, 1e8], [2e-5 * (n / 1e6) ** 1.3 for n in (1e6, 1e7, 1e8)])
    assert (power.k, power(1e7)) == (pytest.approx(1.3), pytest.approx(2e-5 * 10 ** 1.3))
    info = _info()
    points = info["calibration"]["tcn"]  # a third, off-line point: the fits now differ
    points.append({**points[-1], "n_params": 3e8, "train_seconds_per_frame_epoch": 0.2})
    line = next(line for line in cost_section(_data(info)).splitlines() if line.startswith("- Fit sensitivity"))
    assert "(1.00x)" not in line


def test_parameter_formulas_match_keras_counts():
    # count_params() of the heads' Keras models, recorded once (test_cost_bench checks them on every run).
    assert cm.lstm_params(2048, 1, 64) == 540993
    assert cm.lstm_params(2048, 3, 256) == 2606913
    assert cm.tcn_params(1536, 1, 256, 3, "batch") == 3751425
    assert cm.tcn_params(1536, 1, 256, 3, "weight") == 3742209
    assert cm.tcn_params(1536, 2, 512, 5, "layer") == 34903041
    assert cm.tcn_params(1536, 3, 1024, 5, "none") == 192976897
    assert cm.head_params("tcn", 1536, {"n_layers": 2, "nb_filters": 256, "kernel_size": 3}) == 6126081
    assert cm.head_params("frame_mlp", 2048, {"n_layers": 2, "units": 64}) == 135361
    assert cm.head_params("tcn", 97, {"n_layers": 1, "nb_filters": 16, "kernel_size": 3, "norm": "layer",
                                      "dilations": [1, 2, 4, 8]}) == 12001  # 4 residual blocks, not 6
    with pytest.raises(ValueError):
        cm.head_params("gru", 2048, {})


def test_trial_arithmetic_by_hand():
    info = _info(train=((1e-4, 0.0), (1e-4, 0.0)), infer=((0.0, 0.0), (0.0, 0.0)), grid_configs=((2, 1e6), (3, 1e6)))
    p = _project(info)
    trial = 12 * 50 * 72_600 * 1e-4  # folds x epochs x training frames x s/frame-epoch
    assert p["training"]["grid"]["resnet50v2+lstm"] == pytest.approx(3 * 2 * trial / 3600)
    assert p["training"]["grid"]["resnet50v2+tcn"] == pytest.approx(3 * 3 * trial / 3600)
    assert p["training"]["tpe"]["resnet50v2+tcn"] == pytest.approx(3 * 20 * trial / 3600)
    assert p["embedding"]["resnet50v2"] == pytest.approx(17 * 6600 * 0.04 / 3600)
    assert p["refit"]["resnet50v2+lstm"] == pytest.approx(3 * 50 * 12 * 6600 * 1e-4 / 3600)
    assert p["n_trials"] == {"grid": 3 * 2 * (2 + 3), "tpe": 12 * 20}
    assert p["total"]["grid"] == pytest.approx(sum(cm.parts(p, "grid").values()))


def test_doubling_per_frame_costs_doubles_training_hours():
    base = _project(_info())
    doubled = _project(_info(train=((2e-4, 0.0), (4e-4, 2e-10)), infer=((1e-4, 0.0), (1e-4, 2e-11))))
    for search in cm.SEARCHES:
        for pair, hours in base["training"][search].items():
            assert doubled["training"][search][pair] == pytest.approx(2 * hours)
    assert doubled["embedding"] == base["embedding"]


def test_grid_hours_scale_with_grid_configs_and_tpe_does_not():
    base = _project(_info(grid_configs=((81, 1e6), (648, 5e7))))
    bigger = _project(_info(grid_configs=((162, 1e6), (1296, 5e7))))
    for pair, hours in base["training"]["grid"].items():
        assert bigger["training"]["grid"][pair] == pytest.approx(2 * hours)
        assert bigger["training"]["tpe"][pair] == pytest.approx(base["training"]["tpe"][pair])


def test_batch_size_factor_scales_training_only():
    info = _info(infer=((0.0, 0.0), (0.0, 0.0)))
    info["grids"]["lstm"]["batch_sizes"] = [8, 16, 32]
    points = [{"batch_size": 16, "train_seconds_per_frame_epoch": 1e-4},
              {"batch_size": 32, "train_seconds_per_frame_epoch": 0.6e-4}]
    info["batch_checks"] = {"lstm": {"reference_seconds_per_frame_epoch": 2e-4, "points": points}}
    assert cm.batch_factors(info, "lstm") == pytest.approx({16: 0.5, 32: 0.3})
    assert cm.mean_batch_factor(info, "lstm") == pytest.approx((1.0 + 0.5 + 0.3) / 3)  # batch 8 is the reference
    assert cm.mean_batch_factor(info, "tcn") == 1.0  # nothing measured: the calibration batch's cost
    base, scaled = _project(_info(infer=((0.0, 0.0), (0.0, 0.0)))), _project(info)
    for search in cm.SEARCHES:
        assert scaled["training"][search]["resnet50v2+lstm"] == pytest.approx(
            base["training"][search]["resnet50v2+lstm"] * 0.6)
        assert scaled["training"][search]["resnet50v2+tcn"] == pytest.approx(base["training"][search]["resnet50v2+tcn"])
    assert "grid mean 0.60x" in cost_section(_data(info))


def test_typical_epochs_and_tpe_fraction_from_target_5():
    typical = cm.Epochs.typical(SHAPE, {"search_mean_epochs_fraction": 0.4, "search_tpe_trial_cost_fraction": 0.5})
    assert (typical.epochs, typical.tpe_fraction, typical.refit_epochs(SHAPE)) == (20.0, 0.5, 15.0)
    fallback = cm.Epochs.typical(SHAPE, None)
    assert (fallback.epochs, fallback.tpe_fraction, fallback.refit_epochs(SHAPE)) == (50.0, 1.0, 50.0)
    info = _info(infer=((0.0, 0.0), (0.0, 0.0)))
    upper, low = _project(info), _project(info, typical)
    for pair, hours in upper["training"]["tpe"].items():
        assert low["training"]["tpe"][pair] == pytest.approx(hours * 0.4 * 0.5)
        assert low["training"]["grid"][pair] == pytest.approx(upper["training"]["grid"][pair] * 0.4)


def test_workers_divide_wall_clock_until_the_caps():
    shape = cm.StudyShape(n_videos=16)
    p = _project(_info(grid_configs=((64, 1e6), (64, 1e6))), shape=shape)
    embed = sum(p["embedding"].values())
    assert cm.embedding_wall(shape, p, 1) == pytest.approx(embed)
    assert cm.embedding_wall(shape, p, 4) == pytest.approx(embed / 4)
    assert cm.embedding_wall(shape, p, 16) == pytest.approx(embed / 16)
    assert cm.embedding_wall(shape, p, 64) == pytest.approx(embed / 16)  # one worker per video
    assert cm.embedding_wall(cm.StudyShape(), _project(_info()), 16) == pytest.approx(
        2 * sum(_project(_info())["embedding"].values()) / 17)  # 17 videos on 16 workers: two rounds
    train = sum(p["training"]["grid"].values())
    assert cm.training_wall(p, "grid", 4) == pytest.approx(train / 4)
    assert cm.training_wall(p, "grid", 16) == pytest.approx(train / 16)
    refit = sum(p["refit"].values())
    assert cm.wall_clock(shape, p, "grid", 4) == pytest.approx(embed / 4 + train / 4 + refit)
    # One trial in all: more workers do not help, and a study never ends before its longest trial.
    single = cm.StudyShape(behaviours=("grooming",), backbones=("resnet50v2",), heads=("lstm",), tpe_trials=1)
    q = _project(_info(), shape=single)
    assert q["n_trials"]["tpe"] == 1
    assert cm.training_wall(q, "tpe", 16) == pytest.approx(cm.training_wall(q, "tpe", 1))


def test_cache_saving_is_six_embeddings_for_three_behaviours_and_two_heads():
    p = _project(_info())
    saving = cm.cache_saving(SHAPE, p)
    once = sum(p["embedding"].values())
    assert SHAPE.searches_per_backbone == 6
    assert saving["without_cache"] == pytest.approx(6 * once)
    assert saving["saved"] == pytest.approx(5 * once)
    assert saving["with_cache"] == saving["per_rerun"] == pytest.approx(once)


def test_section_names_the_dominant_part():
    embedding_heavy = _info(embed=(500.0, 900.0), train=((1e-9, 0.0), (1e-9, 0.0)), infer=((0.0, 0.0), (0.0, 0.0)))
    text = cost_section(_data(embedding_heavy))
    assert "**embedding dominates**" in text and "**training dominates**" not in text
    assert cm.dominant(_project(embedding_heavy), "tpe")[0] == "embedding"
    training_heavy = _info(embed=(1e-4, 1e-4))
    text = cost_section(_data(training_heavy))
    assert "**training dominates**" in text and "**embedding dominates**" not in text
    name, share = cm.dominant(_project(training_heavy), "grid")
    assert name == "training" and 0.5 < share <= 1.0


def test_section_contents_and_fallback_without_target_5():
    text = cost_section(_data(_info()))
    assert text.startswith("## Cost model: the reference study on this machine")
    assert "hours on this machine (2 cores)" in text and "core-hours are 2x" in text
    assert "Target 5 (search efficiency) is absent" in text and "no pruning" in text
    header = next(line for line in text.splitlines() if line.startswith("| Part"))
    assert "typical" not in header and header.count("|") == 4  # the upper bound only: grid, TPE
    for needle in ("resnet50v2+lstm", "inception_resnet_v2+tcn", "N = 1", "N = 4", "N = 16", "TPE 20",
                   "leaderboard refit + test", "the cache saves", "Fit residual"):
        assert needle in text, needle
    with_search = cost_section(_data(_info(), {"search_mean_epochs_fraction": 0.3,
                                                  "search_tpe_trial_cost_fraction": 0.6}))
    assert "Target 5 (search efficiency) is absent" not in with_search
    assert "typical, 15.0 epochs" in with_search and "0.60 of a full grid trial" in with_search
    header = next(line for line in with_search.splitlines() if line.startswith("| Part"))
    assert header.count("typical") == 2 and header.count("|") == 6  # grid and TPE, each at 50 and typical epochs


def test_no_section_without_target_6():
    assert cost_section(_data()) == ""
    assert cost_section({}) == ""
    assert math.isfinite(_project(_info())["total"]["tpe"])


def test_importable_as_report_does_without_tensorflow():
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from cost_report import cost_section; "
            "assert cost_section({}) == ''; assert 'tensorflow' not in sys.modules")
    subprocess.run([sys.executable, "-c", code, str(HERE)], check=True, timeout=60)
