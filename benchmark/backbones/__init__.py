from . import clips, flow, keras_apps, pose, track  # noqa: F401  (registration side effect)
from ...core.errors import ConfigError
from ...core.registry import check_names
from .base import BACKBONES, Backbone, FlowBackbone, ImageBackbone, PoseBackbone, TrackBackbone
from .fused import FusedBackbone, part_names

__all__ = ["BACKBONES", "Backbone", "FlowBackbone", "FusedBackbone", "ImageBackbone", "PoseBackbone", "TrackBackbone"]

# Kinds that embed mouse-centred crops of the video (one crop pass serves them all).
CROP_KINDS = ("image", "flow", "clip")


def build_backbone(name: str, dataset=None, weights: str | None = None, crops: bool = False,  # noqa: ANN001, ANN201
                   **params):
    """Build a registered backbone, or a fused one (`a+b`), taking pose and motion settings from
    `dataset` if given. `weights` applies to the image parts of a fused backbone. `crops`: the clip
    backbone's input crops instead of its embeddings (for a head that trains the network itself)."""
    if crops:
        if len(part_names(name)) > 1 or BACKBONES.kind_of(name) != "clip":
            raise ConfigError(f"backbone {name}: the finetune head trains a clip network end to end, so it pairs "
                              f"with a clip backbone only ({', '.join(names_of_kind('clip'))}); use another head "
                              f"with {name}")
        return build_backbone(name, dataset, weights, **params).crops()
    parts = part_names(name)
    if len(parts) > 1:
        return FusedBackbone([build_backbone(part, dataset, weights if BACKBONES.kind_of(part) in CROP_KINDS else None)
                              for part in parts])
    factory = BACKBONES.get(name)
    kind = BACKBONES.kind_of(name)
    if dataset is not None and kind == "pose":
        params.setdefault("centre", dataset.crop.centre)
        params.setdefault("heading", dataset.heading)
        params.setdefault("min_likelihood", dataset.crop.min_likelihood)
    if dataset is not None and kind in ("pose", "track") and hasattr(factory, "groups"):
        for setting, value in dataset.motion.items():  # windows, causal: the motion features' time scales
            params.setdefault(setting, value)
    if weights is not None:
        params["weights"] = weights
    return factory(**params)


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


__all__ += ["CROP_KINDS", "backbone_kind", "crop_parts", "build_backbone", "check_backbone_names", "names_of_kind",
            "part_kinds", "part_names"]
