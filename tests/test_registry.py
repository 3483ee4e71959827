import pytest

from mbr_bench.core.errors import DuplicateComponentError, MbrError, UnknownComponentError
from mbr_bench.core.registry import Registry


def test_build_by_name_passes_params():
    registry: Registry[dict] = Registry("widget")

    @registry.register("box")
    def box(**params):
        return {"kind": "box", **params}

    assert registry.build("box", side=3) == {"kind": "box", "side": 3}
    assert registry.list() == ["box"]
    assert "box" in registry and "tube" not in registry


def test_registry_names_a_registered_class():
    registry: Registry[object] = Registry("head")

    @registry.register("lstm")
    class Recurrent:
        def __init__(self, units=1):
            self.units = units

    class Deeper(Recurrent):  # a subclass, not registered: inherits the name
        pass

    assert Recurrent.name == "lstm"
    assert registry.build("lstm", units=4).name == "lstm"
    assert Deeper.name == "lstm"

    @registry.register("box")
    def box():
        return object()

    assert not hasattr(box, "name")  # functions are left as they are


def test_kind_of_reads_the_class_kind():
    registry: Registry[object] = Registry("backbone")

    class Image:
        kind = "image"

    @registry.register("cnn")
    class CNN(Image):
        pass

    @registry.register("features")
    class Features:
        kind = "pose"

    registry.register("plain")(lambda: None)
    assert registry.kind_of("cnn") == "image"
    assert registry.kind_of("features") == "pose"
    assert registry.kind_of("plain") is None
    with pytest.raises(UnknownComponentError, match=r"^unknown backbone 'cn'; known: cnn, features, plain$"):
        registry.kind_of("cn")


def test_unknown_name_lists_known_names_sorted():
    registry: Registry[object] = Registry("backbone")
    for name in ("resnet50v2", "mobilenet_v2", "pose"):
        registry.register(name)(type(name, (), {}))
    with pytest.raises(UnknownComponentError) as info:
        registry.build("resnt50v2")
    assert str(info.value) == "unknown backbone 'resnt50v2'; known: mobilenet_v2, pose, resnet50v2"
    assert isinstance(info.value, (KeyError, MbrError))


def test_duplicate_name_names_the_holder():
    registry: Registry[object] = Registry("head")

    @registry.register("lstm")
    class First:
        pass

    class Second:
        name = "second"

    with pytest.raises(DuplicateComponentError) as info:
        registry.register("lstm")(Second)
    assert str(info.value) == (
        f"head 'lstm' is already registered by {__name__}.test_duplicate_name_names_the_holder.<locals>.First; "
        "choose another name"
    )
    assert isinstance(info.value, MbrError)
    assert registry.get("lstm") is First
    assert Second.name == "second"  # a refused class is not renamed


def test_builtin_backbones_are_registered():
    from mbr_bench.benchmark.backbones import BACKBONES

    assert BACKBONES.list() == ["flow_hof", "flow_mobilenet_v2", "i3d", "i3d_inflated_mobilenet_v2",
                                "inception_resnet_v2", "mobilenet_v2", "pose", "pose_v1", "r2plus1d_18", "resnet50v2",
                                "track"]
    with pytest.raises(UnknownComponentError,
                       match="known: flow_hof, flow_mobilenet_v2, i3d, i3d_inflated_mobilenet_v2, inception_resnet_v2, mobilenet_v2, "
                             "pose, pose_v1, r2plus1d_18, resnet50v2, track"):
        BACKBONES.build("vgg16")
    assert {name: BACKBONES.kind_of(name) for name in BACKBONES.list()} == {
        "flow_hof": "flow", "flow_mobilenet_v2": "flow", "i3d": "clip", "i3d_inflated_mobilenet_v2": "clip", "inception_resnet_v2": "image", "mobilenet_v2": "image", "pose": "pose", "pose_v1": "pose",
        "r2plus1d_18": "clip", "resnet50v2": "image", "track": "track"}


@pytest.mark.parametrize("registry_path", ["backbones", "heads"])
def test_builtin_components_are_named_by_their_registration(registry_path):
    import importlib

    package = importlib.import_module(f"mbr_bench.benchmark.{registry_path}")
    registry = package.BACKBONES if registry_path == "backbones" else package.HEADS
    for name in registry.list():
        assert registry.get(name).name == name


def test_check_names_lists_every_unknown_name_with_its_option():
    from mbr_bench.core.errors import ConfigError
    from mbr_bench.core.registry import check_names

    check_names("--heads", "head", ["lstm"], ["lstm", "tcn"])  # all known: nothing raised
    with pytest.raises(ConfigError) as caught:
        check_names("--heads", "head", ["lstm", "gru", "mlp"], ["lstm", "tcn"])
    assert str(caught.value) == "--heads gru mlp: unknown head 'gru', 'mlp'; known: lstm, tcn"
