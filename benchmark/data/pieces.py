"""Cut one long recording into consecutive pieces, each a pose-only entry of a new dataset.yaml.

Leave-one-video-out cross-validation needs several videos. A lab with one long recording (its
DeepLabCut pose CSV and per-frame labels; the video itself may be archived) cuts it into
`n_pieces` consecutive pieces of (near) equal length:

    out_dir/piece1_pose.csv    the pose CSV's header, then that piece's rows, renumbered from 0
    out_dir/piece1_labels.csv  frame,<behaviour>,... (0/1), one row per pose row of the piece
    ...
    out_dir/dataset.yaml       one pose-only entry per piece (pose, labels, split, fps)

Pieces are numbered from 1, as their ids (`piece1`, `piece2`, ...). Every piece is written under a
temporary name and renamed when complete; the manifest is written last, so a cut that stops half
way leaves no manifest that names missing or partial pieces. Pieces of one recording are not
independent animals or days: scores across them measure within-recording generalisation only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ...core.errors import ConfigError, DataError
from ...core.textfiles import check_text_file
from ...core.files import write_atomic
from .crops import CropSettings
from .labels import label_names, read_labels
from .manifest import load_dataset
from .pose import clean_pose, dlc_csv_header, read_pose, require_parts, require_tracked

# The manifest sections a cut may set (behaviours and videos it writes itself).
MANIFEST_SETTINGS = ("name", "crop", "pose")
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def piece_bounds(n_frames: int, n_pieces: int) -> list[tuple[int, int]]:
    """[start, stop) frames of `n_pieces` consecutive pieces covering 0..n_frames-1, lengths differing by at most 1."""
    edges = [k * n_frames // n_pieces for k in range(n_pieces + 1)]
    return list(pairwise(edges))


def cut_recording(
    pose: str | Path,
    /,
    labels: str | Path,
    out_dir: str | Path,
    fps: float,
    n_pieces: int,
    behaviours: Sequence[str] | str | None = None,
    test_pieces: Iterable[int] = (),
    **manifest_settings: Any,
) -> Path:
    """Cut one recording into `n_pieces` pose-only videos; returns the path of the dataset.yaml written.

    `pose` is a DeepLabCut CSV (3-row header, or the 4-row multi-animal one); `labels` any labels
    file `read_labels` reads (per-frame CSV, DeepLabCut CSV with behaviour columns, intervals),
    one row per pose row. `fps` is the recording's frame rate. `behaviours` (default: every one
    the labels file has) become the manifest's behaviours. `test_pieces` are piece numbers
    (1..n_pieces) put in split test; the others are split train. A labelled manifest needs at
    least one of each, so pass e.g. ``test_pieces=(n_pieces,)``.

    `manifest_settings` are further manifest sections: ``name``, ``crop`` (``centre``, the pose
    backbone's centre part(s), and ``min_likelihood``) and ``pose`` (``heading``: back part, front
    part; ``individual``), e.g. ``crop={"centre": ["Mid-Back"]}, pose={"heading": ["Tailbase", "Nose"]}``
    (the pose file itself is the first argument, passed by position, so that ``pose=`` names the section).
    The centre and heading parts must be body parts of the pose file: checked before anything is
    written, with the manifest's defaults (midbody; tailbase, snout) where not given.

    Raises ConfigError for a bad argument or setting, DataError for unreadable or inconsistent
    files; each message is one line naming the file, the problem and the fix.
    """
    pose, labels, out = Path(pose).expanduser(), Path(labels).expanduser(), Path(out_dir).expanduser()
    fps = _check_fps(fps)
    n_pieces = _check_count(n_pieces)
    tests = _check_test_pieces(test_pieces, n_pieces)
    settings = _check_settings(manifest_settings)
    crop = settings.get("crop")
    heading = (settings.get("pose") or {}).get("heading", ["tailbase", "snout"])
    individual = (settings.get("pose") or {}).get("individual")

    header, rows = _pose_lines(pose)
    track = read_pose(pose, individual=individual)  # parses every value: a bad cell is named here
    if track.n_frames != len(rows):
        raise DataError(f"{pose}: {len(rows)} data lines but {track.n_frames} pose rows read; "
                        "remove blank or broken lines from the pose CSV")
    n_frames = len(rows)
    if n_pieces > n_frames:
        raise ConfigError(f"{pose}: n_pieces {n_pieces} is more than its {n_frames} frames; cut into fewer pieces")
    _check_parts(track, crop, heading)

    names = _behaviours(labels, behaviours)
    frame = read_labels(labels, names, n_frames=n_frames, fps=fps, source=f"the pose file {pose.name}")
    values = frame[list(names)].to_numpy(dtype=np.int8)

    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: is a file; give a folder for the pieces and their dataset.yaml")
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "dataset.yaml"
    # A manifest left from an earlier cut must not describe pieces that are being rewritten.
    manifest_path.unlink(missing_ok=True)

    entries, provenance = [], []
    for number, (start, stop) in enumerate(piece_bounds(n_frames, n_pieces), start=1):
        video_id = f"piece{number}"
        piece_rows = (_renumber(line, i) for i, line in enumerate(rows[start:stop]))
        write_atomic(out / f"{video_id}_pose.csv", "\n".join([*header, *piece_rows]) + "\n")
        label_rows = (f"{i},{','.join(map(str, row))}" for i, row in enumerate(values[start:stop]))
        write_atomic(out / f"{video_id}_labels.csv", "\n".join([f"frame,{','.join(names)}", *label_rows]) + "\n")
        entries.append({
            "id": video_id,
            "pose": f"{video_id}_pose.csv",
            "labels": f"{video_id}_labels.csv",
            "split": "test" if number in tests else "train",
            "fps": int(fps) if float(fps).is_integer() else fps,
        })
        provenance.append(f"#   {video_id}: frames {start}..{stop - 1} ({stop - start} frames)")

    manifest: dict[str, Any] = {}
    if "name" in settings:
        manifest["name"] = settings["name"]
    manifest["behaviours"] = list(names)
    for section in ("crop", "pose"):
        if settings.get(section):
            manifest[section] = settings[section]
    manifest["videos"] = entries
    comment = [f"# {n_pieces} consecutive pieces of one recording, cut by mbr_bench.benchmark.data.pieces",
               f"#   pose: {pose.resolve()}", f"#   labels: {labels.resolve()}", *provenance]
    write_atomic(manifest_path, "\n".join(comment) + "\n" + yaml.safe_dump(manifest, sort_keys=False))
    load_dataset(manifest_path)  # what was written loads; raises (one line) if not
    return manifest_path


# --------------------------------------------------------------------------------------------
# argument checks


def _check_fps(fps: Any) -> float:
    if isinstance(fps, bool) or not isinstance(fps, (int, float, np.number)) or not np.isfinite(fps) or fps <= 0:
        raise ConfigError(f"fps is {fps!r}; give the recording's frame rate, a positive number")
    return float(fps)


def _check_count(n_pieces: Any) -> int:
    if isinstance(n_pieces, bool) or not isinstance(n_pieces, (int, np.integer)) or n_pieces < 1:
        raise ConfigError(f"n_pieces is {n_pieces!r}; give a whole number of pieces, 1 or more")
    return int(n_pieces)


def _check_test_pieces(test_pieces: Iterable[int], n_pieces: int) -> set[int]:
    if isinstance(test_pieces, (int, np.integer)) and not isinstance(test_pieces, bool):
        test_pieces = [test_pieces]
    chosen = list(test_pieces)
    bad = [k for k in chosen if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n_pieces]
    if bad:
        raise ConfigError(f"test_pieces {bad} are not piece numbers; pieces are numbered 1..{n_pieces}")
    tests = {int(k) for k in chosen}
    if not tests:
        raise ConfigError(
            "test_pieces is empty, but a labelled dataset.yaml needs at least one test video; "
            f"name the piece(s) to hold out, e.g. test_pieces=({n_pieces},)"
        )
    if len(tests) == n_pieces:
        raise ConfigError(f"test_pieces names all {n_pieces} pieces; leave at least one (two for "
                          "leave-one-video-out) in split train")
    return tests


def _check_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(settings) - set(MANIFEST_SETTINGS))
    if unknown:
        raise ConfigError(f"unknown manifest setting(s) {unknown}; cut_recording takes {list(MANIFEST_SETTINGS)} "
                          "(behaviours, fps and the videos it writes itself)")
    out = dict(settings)
    if out.get("crop") is not None:
        crop = out["crop"]
        CropSettings.from_dict(crop)  # ConfigError naming the bad crop setting
        out["crop"] = {key: list(value) if isinstance(value, tuple) else value for key, value in crop.items()}
    if out.get("pose") is not None:
        pose = out["pose"]
        if not isinstance(pose, Mapping) or set(pose) - {"heading", "individual"}:
            raise ConfigError(f"pose setting {pose!r}; give a mapping with heading: [back, front] and/or individual")
        heading = pose.get("heading", ["tailbase", "snout"])
        if isinstance(heading, str) or len(list(heading)) != 2:
            raise ConfigError(f"pose heading {heading!r}; name two body parts, back then front, e.g. [Tailbase, Nose]")
        out["pose"] = {key: list(value) if isinstance(value, tuple) else value for key, value in pose.items()}
    return out


def _check_parts(track: Any, crop: Mapping[str, Any] | None, heading: Sequence[str]) -> None:
    """The pose backbone's centre and heading parts exist and are tracked somewhere in the recording."""
    settings = CropSettings.from_dict(crop)
    cleaned = clean_pose(track, settings.min_likelihood)
    centre = require_parts(track, settings.centre, "crop.centre")
    require_tracked(track, cleaned, centre, "crop.centre", settings.min_likelihood)
    parts = require_parts(track, list(heading), "pose.heading")
    require_tracked(track, cleaned, parts, "pose.heading", settings.min_likelihood)


def _behaviours(labels: Path, behaviours: Sequence[str] | str | None) -> tuple[str, ...]:
    if behaviours is None:
        names = tuple(label_names(labels))
        if not names:
            raise DataError(f"{labels}: no behaviour column found; add one 0/1 column per behaviour")
        return names
    return (behaviours,) if isinstance(behaviours, str) else tuple(str(b) for b in behaviours)


# --------------------------------------------------------------------------------------------
# pose CSV text


def _pose_lines(path: Path) -> tuple[list[str], list[str]]:
    """(header lines, data lines) of a DeepLabCut CSV, blank lines dropped, text kept as written."""
    if path.is_file():
        with path.open("rb") as handle:
            if handle.read(len(_HDF5_MAGIC)) == _HDF5_MAGIC:
                raise DataError(f"{path}: is a DeepLabCut .h5 file; cutting needs the CSV, export it with "
                                "DeepLabCut's CSV writer (or pandas to_csv)")
    text = check_text_file(path, "pose file", "check the path")
    levels, _ = dlc_csv_header(path)  # DataError unless a DeepLabCut header
    lines = [line for line in text.splitlines() if line.strip()]
    header, rows = lines[: len(levels)], lines[len(levels):]
    if not rows:
        raise DataError(f"{path}: the DeepLabCut header has no data rows below it; export the pose again")
    return header, rows


def _renumber(line: str, index: int) -> str:
    """A data line with its first cell (the frame index) replaced by `index`."""
    _, _, rest = line.partition(",")
    return f"{index},{rest}"
