"""Body parts by name: pose.rename / pose.ignore, name order, one part set per dataset; manifest geometry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mbr_bench.benchmark.backbones import build_backbone
from mbr_bench.benchmark.cli import main
from mbr_bench.benchmark.data.check import check_dataset
from mbr_bench.benchmark.data.manifest import load_dataset
from mbr_bench.benchmark.features.cache import EmbeddingCache
from mbr_bench.benchmark.features.embed import cache_key, embed_dataset
from mbr_bench.core.errors import DataError

N = 120
ALIASES = {"Nose": "snout", "LED": "led"}  # file names -> the simulated part they show


def _dlc(path: Path, parts: list[str], xy: dict[str, np.ndarray]) -> Path:
    """A DeepLabCut CSV with `parts` in this column order."""
    header = [["scorer"] + ["DLC"] * 3 * len(parts), ["bodyparts"] + [p for p in parts for _ in range(3)],
              ["coords"] + ["x", "y", "likelihood"] * len(parts)]
    lines = [",".join(row) for row in header]
    for t in range(N):
        lines.append(",".join([str(t)] + [f"{v:.4f}" for p in parts for v in (*xy[ALIASES.get(p, p)][t], 0.99)]))
    path.write_text("\n".join(lines) + "\n")
    return path


def _track(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    centre = np.cumsum(rng.normal(0, 2, (N, 2)), axis=0) + 200
    return {"snout": centre + [25, 0], "midbody": centre, "tailbase": centre - [25, 0],
            "led": np.full((N, 2), 10.0) + rng.normal(0, 0.1, (N, 2))}


def _dataset(tmp_path: Path, files: list[tuple[list[str], int]], pose_cfg: dict) -> Path:
    videos = []
    for k, (parts, seed) in enumerate(files):
        pose = _dlc(tmp_path / f"v{k}.csv", parts, _track(seed))
        labels = tmp_path / f"v{k}_labels.csv"
        pd.DataFrame({"grooming": (np.arange(N) % 40 < 10).astype(int)}).to_csv(labels, index=False)
        videos.append({"id": f"v{k}", "pose": pose.name, "labels": labels.name, "fps": 25,
                       "split": "test" if k == len(files) - 1 else "train"})
    manifest = tmp_path / "dataset.yaml"
    manifest.write_text(yaml.safe_dump({"behaviours": ["grooming"], "crop": {"centre": ["midbody"]},
                                        "pose": {"heading": ["tailbase", "snout"], **pose_cfg}, "videos": videos}))
    return manifest


def test_renamed_reordered_parts_give_the_same_features(tmp_path):
    """Two projects: `Nose` 1st with an LED point vs `snout` last: with rename and ignore, identical features."""
    manifest = _dataset(tmp_path, [(["Nose", "LED", "midbody", "tailbase"], 0), (["tailbase", "midbody", "snout"], 0)],
                        {"rename": {"Nose": "snout"}, "ignore": ["LED"]})
    dataset = load_dataset(manifest)
    report = check_dataset(dataset)
    assert [v.bodyparts for v in report.videos] == [("midbody", "snout", "tailbase")] * 2
    cache = EmbeddingCache(tmp_path / "cache")
    first, second = embed_dataset(dataset, build_backbone("pose", dataset), cache, progress=False)
    np.testing.assert_array_equal(np.load(first.path), np.load(second.path))


def test_a_different_part_set_fails_check_in_one_line(tmp_path, capsys):
    manifest = _dataset(tmp_path, [(["snout", "LED", "midbody", "tailbase"], 0), (["snout", "midbody", "tailbase"], 1)],
                        {})
    with pytest.raises(DataError) as raised:
        check_dataset(load_dataset(manifest))
    message = str(raised.value)
    assert "\n" not in message
    assert "v1.csv: body parts differ from" in message and "v0.csv" in message
    assert "only in v0.csv: LED" in message and "only in v1.csv: none" in message and "pose.ignore" in message
    assert main(["dataset", "check", str(manifest)]) == 2
    assert "pose.rename" in capsys.readouterr().err
    # `run` refuses it too, before embedding anything (it need not have been checked first)
    workdir = tmp_path / "work"
    assert main(["run", "--study", "grooming", "--dataset", str(manifest), "--backbones", "pose", "--heads",
                 "frame_mlp", "--workdir", str(workdir), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "v1.csv: body parts differ from" in err, err
    assert not (workdir / "cache").exists()


def test_a_rename_onto_an_existing_part_is_refused(tmp_path):
    manifest = _dataset(tmp_path, [(["Nose", "snout", "midbody", "tailbase"], 0), (["snout", "midbody", "tailbase"], 1)],
                        {"rename": {"Nose": "snout"}})
    with pytest.raises(DataError, match="body parts Nose, snout all become 'snout'"):
        check_dataset(load_dataset(manifest))


def test_part_names_are_in_the_cache_key(tmp_path):
    plain = load_dataset(_dataset(tmp_path, [(["snout", "midbody", "tailbase", "LED"], 0)] * 2, {}))
    ignoring = load_dataset(_dataset(tmp_path, [(["snout", "midbody", "tailbase", "LED"], 0)] * 2, {"ignore": ["LED"]}))
    backbone = build_backbone("pose", plain)
    entry = plain.videos[0]
    assert cache_key(plain, entry, backbone, plain.crop).digest != cache_key(ignoring, entry, backbone, plain.crop).digest


@pytest.mark.parametrize("bad, message", [
    ({"pose": {"rename": ["Nose"]}}, "pose.rename is"),
    ({"pose": {"rename": {"a": "x", "b": "x"}}}, "maps two parts onto one name"),
    ({"arena": [10, 0, 5, 100]}, "left < right"),
    ({"px_per_cm": -2}, "px_per_cm is -2"),
    ({"motion": {"windows": [0.5, 0]}}, "motion.windows is"),
    ({"motion": {"causal": "yes"}}, "motion.causal is"),
])
def test_bad_settings_are_one_line_errors(tmp_path, bad, message):
    manifest = _dataset(tmp_path, [(["snout", "midbody", "tailbase"], 0)] * 2, {})
    raw = yaml.safe_load(manifest.read_text())
    for key, value in bad.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    manifest.write_text(yaml.safe_dump(raw))
    with pytest.raises(DataError, match=message) as raised:
        load_dataset(manifest)
    assert "\n" not in str(raised.value)


def test_geometry_and_motion_reach_the_backbone(tmp_path):
    manifest = _dataset(tmp_path, [(["snout", "midbody", "tailbase"], 0)] * 2, {})
    raw = yaml.safe_load(manifest.read_text())
    raw.update(px_per_cm=4.0, arena=[0, 0, 400, 400], motion={"windows": [0.5, 1.0], "causal": True})
    raw["videos"][1]["arena"] = [50, 50, 350, 350]
    manifest.write_text(yaml.safe_dump(raw))
    dataset = load_dataset(manifest)
    assert dataset.videos[0].geometry.arena == (0.0, 0.0, 400.0, 400.0)
    assert dataset.videos[1].geometry.arena == (50.0, 50.0, 350.0, 350.0)
    assert all(v.geometry.px_per_cm == 4.0 for v in dataset.videos)
    backbone = build_backbone("pose", dataset)
    assert backbone.describe()["windows"] == [0.5, 1.0] and backbone.describe()["causal"] is True
    keys = {cache_key(dataset, v, backbone, dataset.crop).digest for v in dataset.videos}
    assert len(keys) == 2
    raw["videos"][1].pop("arena")
    raw.pop("px_per_cm")
    raw["videos"][0]["px_per_cm"] = 4.0
    manifest.write_text(yaml.safe_dump(raw))
    with pytest.raises(DataError, match="px_per_cm is given for v0 but not for v1"):
        load_dataset(manifest)
