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


def test_unknown_name_lists_known_names_sorted():
    registry: Registry[object] = Registry("backbone")
    for name in ("resnet50v2", "mobilenet_v2", "pose"):
        registry.register(name)(object)
    with pytest.raises(UnknownComponentError) as info:
        registry.build("resnt50v2")
    assert str(info.value) == "unknown backbone 'resnt50v2'; known: mobilenet_v2, pose, resnet50v2"
    assert isinstance(info.value, (KeyError, MbrError))


def test_duplicate_name_names_the_holder():
    registry: Registry[object] = Registry("head")

    @registry.register("lstm")
    class First:
        pass

    with pytest.raises(DuplicateComponentError, match=r"head 'lstm' is already registered by .*First"):
        registry.register("lstm")(object)
    assert registry.get("lstm") is First


def test_builtin_backbones_are_registered():
    from mbr_bench.benchmark.backbones import BACKBONES

    assert BACKBONES.list() == ["inception_resnet_v2", "mobilenet_v2", "pose", "resnet50v2"]
    with pytest.raises(UnknownComponentError, match="known: inception_resnet_v2, mobilenet_v2, pose, resnet50v2"):
        BACKBONES.build("vgg16")
