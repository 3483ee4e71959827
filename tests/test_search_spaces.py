"""Search spaces as YAML: packaged files, the reference grids, Optuna sampling and every user error."""

from pathlib import Path

import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from mbr_bench.core.errors import ConfigError
from mbr_bench.search_spaces.loader import (
    FUSION_BALANCE_RANGE,
    SearchSpace,
    default_space_path,
    load_search_space,
    packaged_heads,
)

HEADS = ("lstm", "tcn", "frame_mlp")
LSTM_PARAMS = {
    "sequence_length", "n_layers", "units", "batch_size", "learning_rate", "dropout", "max_epochs", "patience",
    "feature_norm",
}
FEATURE_NORM = CategoricalDistribution(["none", "train", "per_video"])

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _write(tmp_path: Path, text: str, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _one_line_error(path: Path, fragments, **kwargs) -> str:
    with pytest.raises(ConfigError) as caught:
        load_search_space(kwargs.pop("head", "lstm"), path, **kwargs)
    message = str(caught.value)
    assert "\n" not in message, message
    assert str(path) in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_packaged_files_ship_for_every_head():
    assert packaged_heads() == sorted([*HEADS, "finetune"])
    assert default_space_path("demo").is_file()
    for path in default_space_path("lstm").parent.glob("*.yaml"):
        assert path.read_text().startswith("#"), f"{path.name}: no header comment on where its values come from"


@pytest.mark.parametrize("head", HEADS)
def test_packaged_space_loads_and_round_trips(head):
    space = load_search_space(head)
    assert space.head == head and space.source == default_space_path(head)
    assert space.distributions and not space.fixed
    again = SearchSpace.from_dict(head, space.to_dict())
    assert again == space
    assert again.distributions == space.distributions and again.grid_values == space.grid_values
    # through YAML text as well: what `to_dict` writes must read back the same
    assert SearchSpace.from_dict(head, yaml.safe_load(yaml.safe_dump(space.to_dict()))) == space


def test_lstm_is_the_reference_grid():
    space = load_search_space("lstm")
    assert space.grid() == {
        "sequence_length": [300, 600, 1650],
        "n_layers": [1, 2, 3],
        "units": [64, 128, 256],
        "batch_size": [8, 16, 32],
        "learning_rate": [1e-3],
        "dropout": [0.5],
        "feature_norm": ["per_video"],
    }
    assert space.grid_size() == 3 * 3 * 3 * 3 == 81
    assert space.distributions["learning_rate"] == FloatDistribution(1e-4, 1e-2, log=True)
    assert space.distributions["dropout"] == FloatDistribution(0.0, 0.6)
    assert space.distributions["units"] == CategoricalDistribution([64, 128, 256])
    assert space.distributions["feature_norm"] == FEATURE_NORM  # searched, but the grid keeps the default


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("demo", [False, True])
def test_feature_norm_is_searched_and_pinned_to_the_default_in_the_grid(head, demo):
    space = load_search_space(head, default_space_path("demo") if demo else None)
    assert space.distributions["feature_norm"] == FEATURE_NORM
    assert space.grid()["feature_norm"] == ["per_video"]


def test_finetune_grid_is_the_second_reference_protocol():
    space = load_search_space("finetune")
    assert space.grid() == {"batch_size": [8, 16], "learning_rate": [1e-3], "dropout": [0.64]}  # keep-prob 0.36
    assert space.fixed["momentum"] == 0.9 and space.fixed["final_learning_rate"] == 5e-5
    assert space.fixed["clip_length"] == 16 and space.fixed["clip_stride"] == 1  # 8 frames before, 7 after
    assert space.fixed["decay_epochs"] == space.fixed["max_epochs"]
    demo = load_search_space("finetune", default_space_path("demo"))
    assert demo.grid_size() == 1 and demo.fixed["clips_per_epoch"] <= 64 and demo.fixed["max_epochs"] <= 3


def test_tcn_is_the_reference_grid():
    grid = load_search_space("tcn").grid()
    assert grid["n_layers"] == [1, 2, 3]
    assert grid["nb_filters"] == [256, 512, 1024]
    assert grid["kernel_size"] == [3, 5]
    assert grid["norm"] == ["batch", "layer", "weight", "none"]
    assert grid["sequence_length"] == [300, 600, 1650]
    assert grid["batch_size"] == [8, 16, 32]
    assert grid["learning_rate"] == [1e-3] and grid["dropout"] == [0.5]
    assert grid["feature_norm"] == ["per_video"]
    assert load_search_space("tcn").grid_size() == 3 * 3 * 2 * 4 * 3 * 3 == 648


@pytest.mark.parametrize("head", HEADS)
def test_demo_spaces_are_small(head):
    space = load_search_space(head, default_space_path("demo"))
    assert space.head == head
    assert space.grid_size() <= 8
    assert space.fixed["max_epochs"] == 15 and space.fixed["patience"] == 3
    assert max(space.grid()["sequence_length"]) <= 200


def test_demo_tcn_fixes_small_dilations():
    space = load_search_space("tcn", default_space_path("demo"))
    assert space.fixed["dilations"] == [1, 2, 4, 8]
    assert "dilations" not in space.distributions
    assert space.to_dict()["dilations"] == {"fixed": [1, 2, 4, 8]}


def test_suggest_stays_inside_the_space_and_is_reproducible():
    space = load_search_space("lstm", default_space_path("demo"))

    def sample(seed):
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=3))
        drawn = []

        def objective(trial):
            params = space.suggest(trial)
            drawn.append(params)
            return params["units"] * params["learning_rate"]

        study.optimize(objective, n_trials=8)
        return study, drawn

    study, drawn = sample(7)
    for params, trial in zip(drawn, study.trials):
        assert params["units"] in (16, 32) and params["n_layers"] in (1, 2)
        assert params["sequence_length"] in (100, 200) and params["batch_size"] == 8
        assert 1e-3 <= params["learning_rate"] <= 1e-2
        assert params["max_epochs"] == 15 and params["patience"] == 3  # fixed values merged in
        assert "max_epochs" not in trial.params  # ... but never sampled
        assert space.with_fixed(trial.params) == params
        for name, dist in space.distributions.items():
            assert trial.distributions[name] == dist
    assert len({round(p["learning_rate"], 12) for p in drawn}) > 1
    assert sample(7)[1] == drawn
    assert sample(8)[1] != drawn


def test_int_and_float_ranges(tmp_path):
    path = _write(
        tmp_path,
        "n_layers: {low: 1, high: 4}\n"
        "units: {low: 16, high: 256, log: true, grid: [16, 64]}\n"
        "dropout: {low: 0.0, high: 0.5, step: 0.1, grid: [0.1, 0.3]}\n"
        "learning_rate: {low: 1e-4, high: 1e-2, log: true}\n"  # YAML 1.1 would read 1e-4 as text
        "window: {low: 10, high: 50, step: 20}\n",
    )
    space = load_search_space("lstm", path)
    assert space.distributions["n_layers"] == IntDistribution(1, 4)
    assert space.distributions["units"] == IntDistribution(16, 256, log=True)
    assert space.distributions["dropout"] == FloatDistribution(0.0, 0.5, step=0.1)
    assert space.distributions["learning_rate"] == FloatDistribution(1e-4, 1e-2, log=True)
    assert space.distributions["window"] == IntDistribution(10, 50, step=20)
    assert space.grid_values == {"units": [16, 64], "dropout": [0.1, 0.3]}
    assert SearchSpace.from_dict("lstm", space.to_dict()) == space
    with pytest.raises(ConfigError, match=r"no grid values for 'n_layers', 'learning_rate', 'window'.*add grid:"):
        space.grid()
    with pytest.raises(ConfigError, match="no grid values"):
        space.grid_size()


def test_grid_sampler_enumerates_every_combination(tmp_path):
    path = _write(
        tmp_path,
        "units: {choices: [8, 16, 32]}\n"
        "norm: {choices: [layer, none]}\n"
        "learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true, grid: [1.0e-3, 3.0e-3]}\n"
        "max_epochs: 2\n",
    )
    space = load_search_space("tcn", path)
    assert space.grid_size() == 3 * 2 * 2
    study = optuna.create_study(sampler=optuna.samplers.GridSampler(space.grid(), seed=0))
    seen = []
    study.optimize(lambda trial: len(seen.append(space.suggest(trial)) or seen), n_trials=50)
    assert len(study.trials) == space.grid_size()  # the sampler stops the study once the grid is done
    combos = {(p["units"], p["norm"], p["learning_rate"]) for p in seen}
    assert len(combos) == space.grid_size()
    assert {p["max_epochs"] for p in seen} == {2}


def test_a_categorical_grid_picks_among_the_choices(tmp_path):
    path = _write(tmp_path, "units: {choices: [1, 2, 4]}\nnorm: {choices: [none, train, per_video], grid: [train, none]}\n")
    space = load_search_space("lstm", path)
    assert space.distributions["norm"] == CategoricalDistribution(["none", "train", "per_video"])
    assert space.grid() == {"units": [1, 2, 4], "norm": ["train", "none"]} and space.grid_size() == 6
    assert space.to_dict() == {
        "units": {"choices": [1, 2, 4]}, "norm": {"choices": ["none", "train", "per_video"], "grid": ["train", "none"]},
    }
    assert SearchSpace.from_dict("lstm", yaml.safe_load(yaml.safe_dump(space.to_dict()))) == space
    study = optuna.create_study(sampler=optuna.samplers.GridSampler(space.grid(), seed=0))
    study.optimize(lambda trial: float(space.suggest(trial)["units"]), n_trials=20)
    assert sorted((t.params["units"], t.params["norm"]) for t in study.trials) == sorted(
        (u, n) for u in (1, 2, 4) for n in ("train", "none")
    )


def test_fixed_scalar_and_single_choice(tmp_path):
    space = load_search_space("lstm", _write(tmp_path, "units: 32\nnorm: none\nn_layers: {choices: [2]}\n"))
    assert space.fixed == {"units": 32, "norm": "none"}
    assert space.distributions == {"n_layers": CategoricalDistribution([2])}
    assert space.grid_size() == 1
    assert space.to_dict() == {"n_layers": {"choices": [2]}, "units": 32, "norm": "none"}


def test_a_fused_pair_also_searches_the_balance_of_its_parts(tmp_path):
    space = load_search_space("lstm", _write(tmp_path, "units: {choices: [8, 16]}\n"))
    fused = space.for_fused()
    assert fused.distributions["fusion_balance"] == FloatDistribution(-2.0, 2.0)
    assert fused.grid() == {"units": [8, 16], "fusion_balance": [0.0]}  # the grid keeps the block-scaled join
    assert "fusion_balance" not in space.distributions  # the plain pairs' space is unchanged
    pinned = load_search_space("lstm", _write(tmp_path, "units: 8\nfusion_balance: -1.0\n"))
    assert pinned.for_fused() == pinned  # a file that sets it wins
    from mbr_bench.benchmark.heads.base import SOLO_BALANCE

    # The range ends are where a fused head sees one side only: the warm start's trials.
    assert FUSION_BALANCE_RANGE == (-SOLO_BALANCE, SOLO_BALANCE)


def test_folder_of_spaces(tmp_path):
    (tmp_path / "lstm.yaml").write_text("units: {choices: [1, 2]}\n")
    assert load_search_space("lstm", tmp_path).grid() == {"units": [1, 2]}


def test_allowed_keys_pass(tmp_path):
    space = load_search_space("lstm", default_space_path("demo"), allowed=LSTM_PARAMS)
    assert set(space.distributions) | set(space.fixed) <= LSTM_PARAMS


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("units: {choices: [1, 2]\n", ["not valid YAML at line 2", "fix the syntax"]),
        ("units: {choices: [1]}\nunits: {choices: [2]}\n", ["line 2", "key 'units' appears twice"]),
        ("- units\n- n_layers\n", ["must be a YAML mapping", "got list"]),
        ("", ["must be a YAML mapping", "empty file"]),
        ("units: {values: [64]}\nn_layers: 2\n", ["'units'", "neither choices nor a low/high range", "{choices: [...]}"]),
        ("units: {low: 64}\n", ["'units'", "neither choices nor a low/high range"]),
        ("units: [64, 128]\n", ["'units'", "bare list", "{choices: [...]}", "{fixed: [...]}"]),
        ("units: {low: 256, high: 64}\n", ["'units'", "low 256 >= high 64", "make low smaller"]),
        ("units: {low: 64, high: 64}\n", ["low 64 >= high 64"]),
        ("learning_rate: {low: 0.0, high: 0.1, log: true}\n", ["'learning_rate'", "log: true with low 0.0"]),
        ("units: {choices: []}\n", ["'units'", "choices []", "non-empty list"]),
        ("units: {choices: [64, 64]}\n", ["choice twice"]),
        ("units: {choices: [[1, 2]]}\n", ["choice [1, 2]"]),
        ("units: {choices: [1, 2], step: 1}\n", ["mixes choices with ['step']", "only grid"]),
        ("units: {choices: [1, 2], grid: [3]}\n", ["grid value 3", "not among the choices [1, 2]"]),
        ("units: {choices: [1, 2], grid: [true]}\n", ["grid value True", "not among the choices"]),
        ("units: {choices: [1, 2], grid: []}\n", ["grid []", "some of the choices"]),
        ("units: {choices: [1, 2], grid: [1, 1]}\n", ["grid value twice"]),
        ("units: {low: 1, high: 3, lgo: true}\n", ["unknown key(s) ['lgo']"]),
        ("units: {low: a, high: 3}\n", ["low 'a'", "give a number"]),
        ("units: {low: 1, high: 3, log: maybe}\n", ["log 'maybe'"]),
        ("dropout: {low: 0.0, high: 0.5, grid: [0.7]}\n", ["grid value 0.7 outside [0.0, 0.5]"]),
        ("units: {low: 1, high: 8, grid: [2.5]}\n", ["grid value 2.5", "integers"]),
        ("units: {low: 1, high: 8, grid: []}\n", ["grid []", "non-empty list"]),
        ("units: {low: 0.0, high: 1.0, step: 0.3}\n", ["not a whole number of steps"]),
        ("units: {low: 1.0e-3, high: 1.0, step: 0.1, log: true}\n", ["both log and step"]),
        ("units: {fixed: 3, low: 1}\n", ["mixes fixed with ['low']"]),
    ],
)
def test_space_errors(tmp_path, text, fragments):
    _one_line_error(_write(tmp_path, text), fragments)


def test_missing_file_and_unknown_packaged_head(tmp_path):
    _one_line_error(tmp_path / "nope.yaml", ["search space file not found", "fix the path"])
    with pytest.raises(ConfigError) as caught:
        load_search_space("transformer")
    message = str(caught.value)
    assert "transformer.yaml" in message and "no packaged search space for head 'transformer'" in message
    assert "packaged: finetune, frame_mlp, lstm, tcn" in message and "\n" not in message


def test_multi_head_file_without_the_head(tmp_path):
    path = _write(tmp_path, "lstm: {units: {choices: [1]}}\ntcn: {nb_filters: 3}\n")
    assert load_search_space("tcn", path).fixed == {"nb_filters": 3}
    _one_line_error(path, ["no search space for head 'frame_mlp'", "the file has: lstm, tcn"], head="frame_mlp")


def test_unknown_key_lists_the_allowed_ones(tmp_path):
    path = _write(tmp_path, "units: {choices: [1, 2]}\nn_layer: 2\n")
    message = _one_line_error(path, ["'n_layer' is not a parameter of head 'lstm'"], allowed=LSTM_PARAMS)
    assert "use only: " + ", ".join(sorted(LSTM_PARAMS)) in message
    demo = default_space_path("demo")
    _one_line_error(demo, ["'nb_filters' is not a parameter of head 'tcn'"], head="tcn", allowed=LSTM_PARAMS)


def test_from_dict_errors_name_the_source():
    with pytest.raises(ConfigError, match=r"^<dict>: parameter 'units' has choices \[\]"):
        SearchSpace.from_dict("lstm", {"units": {"choices": []}})
    with pytest.raises(ConfigError, match="defines no parameters"):
        SearchSpace.from_dict("lstm", {}, source="spaces.yaml")
