"""`--weights`: one value for every backbone with weights, NAME=VALUE for one, and the weights a model is rebuilt with."""

from __future__ import annotations

import pytest

from mbr_bench.benchmark.backbones import backbone_weights, build_backbone, check_weights, weights_for
from mbr_bench.benchmark.backbones.weights_choice import WeightsChoice
from mbr_bench.benchmark.cli import main
from mbr_bench.core.errors import ConfigError


@pytest.mark.parametrize(("spec", "default", "named"), [
    (None, None, {}),
    ("imagenet", "imagenet", {}),
    ("/data/mobilenet.weights.h5", "/data/mobilenet.weights.h5", {}),
    ("r2plus1d_18=r21d.npz", None, {"r2plus1d_18": "r21d.npz"}),
    ("none, mobilenet_v2=imagenet ,i3d=/w/i3d.npz", "none", {"mobilenet_v2": "imagenet", "i3d": "/w/i3d.npz"}),
])
def test_weights_values_parse(spec, default, named) -> None:
    choice = WeightsChoice.parse(spec)
    assert choice.default == default and dict(choice.named) == named


@pytest.mark.parametrize(("spec", "message"), [
    ("imagenet,none", "two values for every backbone"),
    ("i3d=a.npz,i3d=b.npz", "i3d is given twice"),
    ("imagenet,,i3d=a.npz", "is empty"),
    ("i3d=", "is empty"),
])
def test_bad_weights_values_are_refused_in_one_line(spec, message) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        WeightsChoice.parse(spec)
    assert "\n" not in str(error.value) and "--weights" in str(error.value)


def test_each_backbone_gets_its_own_weights(tmp_path) -> None:
    checkpoint = tmp_path / "r21d.npz"
    checkpoint.write_bytes(b"converted once")  # building reads only its hash; loading waits for the network
    spec = f"none,r2plus1d_18={checkpoint}"
    assert build_backbone("mobilenet_v2", weights=spec).weights == "none"
    assert build_backbone("r2plus1d_18", weights=spec).weights == str(checkpoint)
    assert build_backbone("mobilenet_v2", weights=f"r2plus1d_18={checkpoint}").weights == "imagenet"  # its default
    # Computed features take no weights: a value for every backbone passes them by.
    assert weights_for("imagenet", "pose") is None and weights_for("imagenet", "flow_hof") is None
    assert build_backbone("mobilenet_v2+track", weights="none").parts[0].weights == "none"
    with pytest.raises(ConfigError, match="backbone track has no weights"):
        build_backbone("track", weights="track=x.npz")


@pytest.mark.parametrize("name", ["mobilenet_v2", "flow_mobilenet_v2", "mobilenet_v2+track", "pose+flow_mobilenet_v2",
                                  "i3d_inflated_mobilenet_v2", "pose", "flow_hof"])
def test_a_backbone_is_rebuilt_as_it_was_built(name) -> None:
    # What the refit writes into a saved model, and `predict` rebuilds from: with default weights a fused
    # or flow backbone once recorded "none" and rebuilt with random weights, which the bundle refused.
    built = build_backbone(name)
    rebuilt = build_backbone(name, weights=backbone_weights(built))
    assert rebuilt.describe() == built.describe()
    if "mobilenet_v2" in name:
        assert "imagenet" in backbone_weights(built)


def test_check_weights_names_what_is_wrong() -> None:
    check_weights("imagenet,r2plus1d_18=a.npz", ["mobilenet_v2", "pose+r2plus1d_18"])
    with pytest.raises(ConfigError, match="unknown backbone 'r2plus1d'"):
        check_weights("r2plus1d=a.npz", ["r2plus1d_18"])
    with pytest.raises(ConfigError, match="i3d is not in this run"):
        check_weights("i3d=a.npz", ["mobilenet_v2"])
    with pytest.raises(ConfigError, match="pose has no weights"):
        check_weights("pose=a.npz", ["pose"])


def test_run_refuses_weights_for_a_backbone_it_does_not_use_before_writing_anything(tiny_dataset, tmp_path, capsys):
    path = tiny_dataset()
    workdir = tmp_path / "work"
    assert main(["run", "--study", "rearing", "--dataset", str(path), "--backbones", "pose", "--heads", "frame_mlp",
                 "--weights", "mobilenet_v2=imagenet", "--workdir", str(workdir), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mobilenet_v2 is not in this run" in err[0] and "drop mobilenet_v2=" in err[0]
    assert not (workdir / "optuna.db").exists() and not (workdir / "mlflow.db").exists()
