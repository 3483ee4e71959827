from . import clips, flow, keras_apps, pose, track  # noqa: F401  (registration side effect)
from ...core.errors import ConfigError
from ...core.registry import check_names
from .base import BACKBONES, Backbone, FlowBackbone, ImageBackbone, PoseBackbone, TrackBackbone
from .fused import FusedBackbone, part_names
from .weights_choice import WeightsChoice

__all__ = ["BACKBONES", "Backbone", "FlowBackbone", "FusedBackbone", "ImageBackbone", "PoseBackbone", "TrackBackbone"]

# Kinds that embed mouse-centred crops of the video (one crop pass serves them all).
CROP_KINDS = ("image", "flow", "clip")


def build_backbone(name: str, dataset=None, weights: str | None = None, crops: bool = False,  # noqa: ANN001, ANN201
                   **params):
    """Build a registered backbone, or a fused one (`a+b`), taking pose and motion settings from
    `dataset` if given. `weights` is a --weights value (`weights_choice`: `VALUE` for every part that has
    weights, `NAME=VALUE` for one; None: each its default). `crops`: the clip
    backbone's input crops instead of its embeddings (for a head that trains the network itself)."""
    if crops:
        if len(part_names(name)) > 1 or BACKBONES.kind_of(name) != "clip":
            raise ConfigError(f"backbone {name}: the finetune head trains a clip network end to end, so it pairs "
                              f"with a clip backbone only ({', '.join(names_of_kind('clip'))}); use another head "
                              f"with {name}")
        return build_backbone(name, dataset, weights, **params).crops()
    parts = part_names(name)
    if len(parts) > 1:
        return FusedBackbone([build_backbone(part, dataset, weights) for part in parts])
    factory = BACKBONES.get(name)
    kind = BACKBONES.kind_of(name)
    if dataset is not None and kind == "pose":
        params.setdefault("centre", dataset.crop.centre)
        params.setdefault("heading", dataset.heading)
        params.setdefault("min_likelihood", dataset.crop.min_likelihood)
    if dataset is not None and kind in ("pose", "track") and hasattr(factory, "groups"):
        for setting, value in dataset.motion.items():  # windows, causal: the motion features' time scales
            params.setdefault(setting, value)
    chosen = weights_for(weights, name)
    if chosen is not None:
        params["weights"] = chosen
    return factory(**params)


def weights_for(weights: str | None, name: str) -> str | None:
    """Registered backbone `name`'s weights under a --weights value (`weights_choice`); None: its default."""
    choice = WeightsChoice.parse(weights)
    if not BACKBONES.get(name).has_weights:
        if name in choice.names():
            raise ConfigError(f"--weights {weights}: backbone {name} has no weights (its features are computed); "
                              f"drop {name}=...")
        return None
    return choice.value_for(name)


def backbone_weights(backbone: Backbone) -> str:
    """The --weights value that rebuilds `backbone` as it is (its parts' when fused; "none" without weights)."""
    return str(getattr(backbone, "weights", "none"))


def check_weights(weights: str | None, names: list[str]) -> None:
    """ConfigError, before any work, for a --weights value that names a backbone this run does not use, one
    without weights, or an unknown one."""
    choice = WeightsChoice.parse(weights)
    used = {part for name in names for part in part_names(name)}
    for name in choice.names():
        check_names("--weights", "backbone", [name], BACKBONES.list())
        if name not in used:
            raise ConfigError(f"--weights {weights}: backbone {name} is not in this run ({', '.join(names)}); "
                              f"drop {name}=... or add {name} to the backbones")
        weights_for(weights, name)


def names_of_kind(kind: str) -> list[str]:
    """The registered backbones of one kind ("clip": those a finetune head can train)."""
    return [name for name in BACKBONES.list() if BACKBONES.kind_of(name) == kind]


def crop_parts(names: list[str], dataset=None, weights: str | None = None) -> list[Backbone]:  # noqa: ANN001
    """The image and flow backbones among `names` and their parts, built once each: what one crop
    pass can embed together (`features.embed`, companions)."""
    seen: dict[str, Backbone] = {}
    for name in names:
        for part in part_names(name):
            if part not in seen and BACKBONES.kind_of(part) in CROP_KINDS:
                seen[part] = build_backbone(part, dataset, weights)
    return list(seen.values())


def backbone_kind(name: str) -> str | None:
    """'image', 'pose', 'track' or 'fused'; UnknownComponentError for an unknown (part) name."""
    parts = part_names(name)
    if len(parts) > 1:
        for part in parts:
            BACKBONES.get(part)
        return "fused"
    return BACKBONES.kind_of(name)


def part_kinds(name: str) -> list[str | None]:
    """The kind of each part of `name` (one entry for a plain backbone)."""
    return [BACKBONES.kind_of(part) for part in part_names(name)]


def check_backbone_names(option: str, names: list[str]) -> None:
    """ConfigError for an unknown backbone or part, or a fused name that repeats a part."""
    check_names(option, "backbone", [part for name in names for part in part_names(name)], BACKBONES.list())
    for name in names:
        parts = part_names(name)
        if len(parts) != len(set(parts)):
            raise ConfigError(f"{option} {name}: a fused backbone names each part once; e.g. mobilenet_v2+track")


__all__ += ["CROP_KINDS", "backbone_kind", "backbone_weights", "crop_parts", "build_backbone", "check_backbone_names", "check_weights",
            "names_of_kind", "part_kinds", "part_names", "weights_for"]
