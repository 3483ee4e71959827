"""A trained model as one folder: everything `mbr-bench predict` needs, nothing to re-specify.

    model/
      bundle.json        behaviour, backbone (name, weights, settings), crop, pose settings,
                         decision threshold and post-processing, where it came from, its scores
      head/              the fitted temporal head (`Head.save`): a model refit on all training videos
      head_0/ head_1/..  or the K fold models of the search, whose probabilities are averaged (an
                         ``ensemble`` final model: the models the threshold was tuned on)

The folder is logged as the ``model`` artifact of a refit run, so a model loads by run id, by
registered model name (``mbr-bench.<behaviour>``, optionally ``/<version>``), or from a copy of
the folder on disk (`resolve_bundle`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.exceptions import MlflowException

from ..core.errors import ConfigError, DataError
from ..core.jsonio import to_jsonable
from ..core.stores import redact
from ..tracking.queries import (  # the queries module quiets MLflow's download bars
    MlflowClient,
    quote_filter_value,
)
from ..tracking.schema import MODEL_ARTIFACT
from .backbones import CROP_KINDS, build_backbone, part_kinds
from .data.crops import CropSettings
from .data.manifest import Dataset, PartNames, VideoEntry
from .heads import load_head
from .postprocess import PostProcess

BUNDLE_FILE = "bundle.json"
BACKBONE_STATE_FILE = "backbone_state.npz"  # only for backbones fitted on the training videos (fused)
HEAD_FOLDER = "head"
FORMAT = "mbr-bench-model"
FORMAT_VERSION = 2  # 2: a list of heads (ensembles); version 1 bundles (one head) still load


@dataclass
class ModelBundle:
    """One behaviour's model: backbone recipe + fitted head(s) + decision rule."""

    behaviour: str
    backbone: str  # registered backbone name
    weights: str  # as given to `build_backbone`: imagenet, none, or a weights file
    backbone_config: dict[str, Any]  # `Backbone.describe()` when trained; checked when rebuilt
    crop: CropSettings
    heading: tuple[str, str]
    individual: str | None
    heads: list[Any]  # fitted `Head`s: one (a refit) or the K fold models (an ensemble), probabilities averaged
    threshold: float
    threshold_rule: str
    postprocess: PostProcess
    info: dict[str, Any] = field(default_factory=dict)  # provenance and scores, for people
    parts: PartNames = field(default_factory=PartNames)  # pose body-part renames and ignores
    motion: dict[str, Any] = field(default_factory=dict)  # the dataset's motion: settings
    backbone_state: dict[str, np.ndarray] = field(default_factory=dict)  # a fused backbone's scaling
    postprocess_fps: float | None = None  # the rate the post-processing sizes are in frames of (None: any)
    # The training videos' mouse for an image backbone's crops: length_px, measured_by, resolution [w, h]
    animal: dict[str, Any] = field(default_factory=dict)
    bodyparts: tuple[str, ...] = ()  # the pose features' parts (after rename / ignore); () when unknown

    # -- decisions ----------------------------------------------------------------------------

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Per-frame probabilities of one video's embeddings: the mean over the bundle's heads."""
        if len(self.heads) == 1:
            return self.heads[0].predict_proba(X)
        return np.mean([head.predict_proba(X) for head in self.heads], axis=0).astype(np.float32)

    def decide(self, proba: np.ndarray, fps: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Per-frame probabilities of a video at `fps` -> (labels at the threshold, labels after
        post-processing), int8. Post-processing keeps its durations in seconds at any frame rate."""
        raw = (np.asarray(proba) >= self.threshold).astype(np.int8)
        return raw, self.postprocess.at_fps(self.postprocess_fps, fps).apply(raw).astype(np.int8)

    # -- backbone -----------------------------------------------------------------------------

    def dataset_for(self, videos: list[VideoEntry], where: Path) -> Dataset:
        """A dataset of new videos that embeds exactly as the training videos did."""
        return Dataset(path=Path(where), name="predict", behaviours=(self.behaviour,), videos=tuple(videos),
                       crop=self.crop, heading=self.heading, individual=self.individual, parts=self.parts,
                       motion=self.motion)

    def build_backbone(self, dataset: Dataset) -> Any:
        """The training backbone, rebuilt; DataError if its settings no longer match."""
        crops = self.heads[0].reads_crops
        # A fine-tuned network is in its head: its crops need no checkpoint file (the one it started from).
        backbone = build_backbone(self.backbone, dataset, weights="none" if crops else self.weights, crops=crops)
        if self.backbone_state and hasattr(backbone, "load_state"):
            backbone.load_state(self.backbone_state)
        if to_jsonable(backbone.describe()) != to_jsonable(self.backbone_config):
            raise DataError(
                f"backbone {self.backbone}: built as {backbone.describe()} but the model was trained with "
                f"{self.backbone_config}; use the same weights file and mbr-bench version as the training run"
            )
        return backbone

    def needs_pose(self) -> bool:
        """Whether embedding a video needs its pose file (pose features, or crops centred on the pose)."""
        kinds = part_kinds(self.backbone)  # UnknownComponentError if unknown
        return "pose" in kinds or (self.crop.mode == "pose" and bool(set(kinds) & set(CROP_KINDS)))

    def embedding_key(self) -> str:
        """Models with equal keys share one embedding of a video."""
        return json.dumps({"backbone": self.backbone_config, "crop": self.crop.key(), "heading": self.heading,
                           "individual": self.individual, "parts": self.parts.key(), "motion": self.motion},
                          sort_keys=True)

    # -- files --------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "behaviour": self.behaviour,
            "backbone": {"name": self.backbone, "weights": self.weights, "config": to_jsonable(self.backbone_config)},
            "crop": {"mode": self.crop.mode, "size": self.crop.size, "centre": list(self.crop.centre),
                     "min_likelihood": self.crop.min_likelihood},
            "pose": {"heading": list(self.heading), "individual": self.individual, "bodyparts": list(self.bodyparts),
                     "rename": dict(self.parts.rename), "ignore": list(self.parts.ignore)},
            "motion": dict(self.motion),
            "heads": [{"name": head.name, "folder": folder} for head, folder in zip(self.heads, self._folders())],
            "decision": {"threshold": float(self.threshold), "rule": self.threshold_rule,
                         "postprocess": self.postprocess.to_dict(), "fps": self.postprocess_fps},
            "animal": to_jsonable(self.animal),
            "info": to_jsonable(self.info),
        }

    def save(self, folder: str | Path) -> Path:
        """Write the bundle to `folder` (replaced as a whole: a crash leaves the old one or none)."""
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
        try:
            for head, head_folder in zip(self.heads, self._folders()):
                head.save(staging / head_folder)
            if self.backbone_state:
                np.savez(staging / BACKBONE_STATE_FILE, **self.backbone_state)
            (staging / BUNDLE_FILE).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True))
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(staging, folder)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return folder

    def _folders(self) -> list[str]:
        return [HEAD_FOLDER] if len(self.heads) == 1 else [f"{HEAD_FOLDER}_{k}" for k in range(len(self.heads))]


def load_bundle(folder: str | Path) -> ModelBundle:
    """Read a bundle folder written by `ModelBundle.save`."""
    folder = Path(folder)
    path = folder / BUNDLE_FILE
    if not path.is_file():
        raise DataError(f"{folder}: no {BUNDLE_FILE} here; pass a model folder, a refit run id or a registered "
                        "model name (see `mbr-bench leaderboard`)")
    try:
        spec = json.loads(path.read_text())
        if not isinstance(spec, dict):
            raise ValueError("the file is not a JSON object")
        if spec.get("format") != FORMAT:
            raise ValueError(f"format is {spec.get('format')!r}, not {FORMAT!r}")
        if int(spec.get("version", 0)) > FORMAT_VERSION:
            raise ValueError(f"version {spec['version']} is newer than this mbr-bench reads ({FORMAT_VERSION})")
        decision = spec["decision"]
        heading = tuple(str(part) for part in spec["pose"]["heading"])
        if isinstance(spec["pose"]["heading"], str) or len(heading) != 2:
            raise ValueError(f"pose.heading must name two body parts, got {spec['pose']['heading']!r}")
        heads = spec["heads"] if "heads" in spec else [spec["head"]]  # version 1: one head
        if not isinstance(heads, list) or not heads:
            raise ValueError(f"heads must be a non-empty list, got {heads!r}")
        head_folders = [str(head.get("folder", HEAD_FOLDER)) for head in heads]
        head_names = [head.get("name") for head in heads]
        threshold = decision["threshold"]
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
            # NaN fails this too: a NaN threshold would label every frame 0 without a word
            raise ValueError(f"decision.threshold must be a number in [0, 1], got {threshold!r}")
        postprocess_fps = decision.get("fps")
        if postprocess_fps is not None and (isinstance(postprocess_fps, bool) or not isinstance(postprocess_fps, (int, float))
                                            or not 0 < postprocess_fps < 1e4):
            raise ValueError(f"decision.fps must be a positive frame rate, got {postprocess_fps!r}")
        for head_folder in head_folders:
            if Path(head_folder).name != head_folder or head_folder in ("", ".", ".."):
                raise ValueError(f"head folder must be a folder inside the bundle, got {head_folder!r}")
        bundle = ModelBundle(
            behaviour=str(spec["behaviour"]),
            backbone=str(spec["backbone"]["name"]),
            weights=str(spec["backbone"]["weights"]),
            backbone_config=dict(spec["backbone"]["config"]),
            crop=CropSettings.from_dict(spec["crop"]),
            heading=(heading[0], heading[1]),
            individual=spec["pose"].get("individual"),
            heads=[],
            threshold=float(threshold),
            threshold_rule=str(decision.get("rule", "")),
            postprocess=PostProcess.from_dict(decision["postprocess"]),
            info=dict(spec.get("info") or {}),
            parts=PartNames(tuple(sorted(dict(spec["pose"].get("rename") or {}).items())),
                            tuple(spec["pose"].get("ignore") or ())),
            motion=dict(spec.get("motion") or {}),
            postprocess_fps=None if postprocess_fps is None else float(postprocess_fps),
            animal=_animal(spec.get("animal") or {}),
            bodyparts=tuple(str(part) for part in spec["pose"].get("bodyparts") or ()),
        )
        if (folder / BACKBONE_STATE_FILE).is_file():
            with np.load(folder / BACKBONE_STATE_FILE) as state:
                bundle.backbone_state = {name: state[name] for name in state.files}
    except (ValueError, KeyError, TypeError, AttributeError, OSError, ConfigError) as error:
        raise DataError(f"{path}: not a readable mbr-bench model ({type(error).__name__}: {error}); "
                        "export it again with `mbr-bench leaderboard`, or upgrade mbr-bench") from None
    bundle.heads = [load_head(folder / head_folder) for head_folder in head_folders]
    for name, head_folder, head in zip(head_names, head_folders, bundle.heads, strict=True):
        if name is not None and name != head.name:
            raise DataError(f"{path}: names head '{name}' but {folder / head_folder} holds a '{head.name}' head; "
                            "export the model again with `mbr-bench leaderboard`")
    return bundle


def _animal(raw: Any) -> dict[str, Any]:
    """The bundle's `animal` record, checked: a positive length, how it was measured, a resolution."""
    if not isinstance(raw, dict):
        raise ValueError(f"animal must be a mapping, got {type(raw).__name__}")
    if not raw:
        return {}
    length, how, resolution = raw.get("length_px"), raw.get("measured_by"), raw.get("resolution")
    if isinstance(length, bool) or not isinstance(length, (int, float)) or not 0 < length < 1e5:
        raise ValueError(f"animal.length_px must be a positive number of pixels, got {length!r}")
    if not isinstance(how, str) or not how:
        raise ValueError(f"animal.measured_by must name how the length was measured, got {how!r}")
    if resolution is not None and (not isinstance(resolution, list) or len(resolution) != 2
                                   or not all(isinstance(v, int) and v > 0 for v in resolution)):
        raise ValueError(f"animal.resolution must be [width, height] in pixels, got {resolution!r}")
    return {"length_px": float(length), "measured_by": how, "resolution": resolution}


_RUN_ID = re.compile(r"[0-9a-f]{32}")


def resolve_bundle(model: str, tracking_uri: str, download_root: Path) -> ModelBundle:
    """Load a model given as a folder, an MLflow run id, or a registered model name[/version].

    Models from MLflow are downloaded once into `download_root/<run id>` and read from there after.
    """
    path = Path(model).expanduser()
    if path.is_dir():
        return load_bundle(path / MODEL_ARTIFACT if (path / MODEL_ARTIFACT / BUNDLE_FILE).is_file() else path)
    client = MlflowClient(tracking_uri=tracking_uri)
    if _RUN_ID.fullmatch(model):
        run_id = model
    else:
        run_id = _registered_run_id(client, model, tracking_uri)
    local = Path(download_root) / run_id
    if not (local / BUNDLE_FILE).is_file():
        local.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{run_id}-", dir=local.parent))
        try:
            downloaded = Path(client.download_artifacts(run_id, MODEL_ARTIFACT, str(staging)))
            if local.exists():
                shutil.rmtree(local)
            os.replace(downloaded, local)
        except MlflowException as error:
            raise DataError(f"--model {model}: run {run_id} in {tracking_uri} has no model "
                            f"({str(error).splitlines()[0][:120]}); pass the run id of a refit run "
                            "(the leaderboard's refit_run_id column)") from None
        except OSError as error:
            raise DataError(f"--model {model}: cannot download the model from {tracking_uri} "
                            f"({error}); check the tracking URI and the artifact store") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return load_bundle(local)


def _registered_run_id(client: Any, model: str, tracking_uri: str) -> str:
    name, _, version = model.partition("/")
    try:
        versions = client.search_model_versions(f"name = {quote_filter_value(name)}")
    except MlflowException:
        versions = []
    if not versions:
        raise DataError(
            f"--model {model}: not a folder, not a run id, and no registered model {name!r} in "
            f"{redact(tracking_uri)}; pass a model folder, a refit run id, or e.g. mbr-bench.wall_rearing "
            "(registered by `mbr-bench leaderboard`)")
    if not version:
        return str(max(versions, key=lambda v: int(v.version)).run_id)
    found = [v for v in versions if str(v.version) == version]
    if not found:
        known = ", ".join(sorted((str(v.version) for v in versions), key=int))
        raise DataError(f"--model {model}: {name} has no version {version}; its versions: {known}; pass one of "
                        f"them, or {name} alone for the latest")
    found = found[0]
    return str(found.run_id)
