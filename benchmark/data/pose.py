"""Pose files: read (DeepLabCut CSV or H5, LightningPose CSV, SLEAP .slp or analysis .h5; single- or
multi-animal), clean, and track a centre point.

A DeepLabCut CSV starts with a header of three rows (scorer / bodyparts / coords) or, for
multi-animal projects, four (scorer / individuals / bodyparts / coords); the first column holds
the frame index. The H5 files carry the same header as pandas MultiIndex columns. Columns whose
coords cell is not x, y or likelihood (for example per-frame behaviour labels appended to the
CSV) are not pose data and are ignored here; `mbr_bench.benchmark.data.labels` reads them.
LightningPose writes the same CSV layout. SLEAP files (HDF5, like DeepLabCut's .h5) are told apart
by their content and read through sleap-io (the `sleap` extra), the SLEAP team's own reader.
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ...core.errors import ConfigError, DataError
from ...core.textfiles import check_text_file

POSE_COORDS = ("x", "y", "likelihood")
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_SINGLE_LEVELS = ("scorer", "bodyparts", "coords")
_MULTI_LEVELS = ("scorer", "individuals", "bodyparts", "coords")


@dataclass(frozen=True, eq=False)  # eq=False: comparing arrays with == is ambiguous
class Pose:
    """One video's pose track.

    xy is (n_frames, n_parts, 2) float64 pixel coordinates, NaN where the file has no value;
    likelihood is (n_frames, n_parts) float64, all 1.0 when the file carries no likelihood.
    """

    path: Path
    bodyparts: tuple[str, ...]
    xy: np.ndarray
    likelihood: np.ndarray

    def __post_init__(self) -> None:
        n_parts = len(self.bodyparts)
        if self.xy.ndim != 3 or self.xy.shape[1:] != (n_parts, 2):
            raise ValueError(f"xy must be (T, {n_parts}, 2), got {self.xy.shape}")
        if self.likelihood.shape != self.xy.shape[:2]:
            raise ValueError(f"likelihood must be {self.xy.shape[:2]}, got {self.likelihood.shape}")

    @property
    def n_frames(self) -> int:
        """Number of frames (rows) in the pose file."""
        return int(self.xy.shape[0])

    def part(self, name: str) -> int:
        """Index of body part `name`; DataError listing the available parts when it is unknown."""
        try:
            return self.bodyparts.index(name)
        except ValueError:
            raise DataError(
                f"{self.path}: body part '{name}' not found; available: {', '.join(self.bodyparts)}; "
                "use one of these names in dataset.yaml (or map the file's name with pose.rename)"
            ) from None


# --------------------------------------------------------------------------------------------
# reading


def read_pose(
    path: str | Path,
    individual: str | None = None,
    rename: Mapping[str, str] | Sequence[tuple[str, str]] = (),
    ignore: Sequence[str] = (),
) -> Pose:
    """Read a pose file: DeepLabCut or LightningPose CSV, DeepLabCut H5, SLEAP .slp or analysis .h5
    (detected from the content, not the extension).

    Body parts are renamed (`rename`: file name -> dataset name), those in `ignore` dropped, and the
    rest ordered by name, so that two projects that order or name the same parts differently give
    the same columns.

    For multi-animal files `individual` names the animal to read; None takes the first individual
    in the header (the benchmark tracks one mouse per video, so extra individuals are ignored).
    Single-animal files hold one animal, so `individual` is ignored for them.
    Non-pose columns (appended behaviour labels, coords other than x/y/likelihood) are skipped.
    Raises DataError for a missing, empty or malformed file.
    """
    path = Path(path)
    magic = b""
    if path.is_file():
        if path.stat().st_size == 0:
            raise DataError(f"{path}: pose file is empty; re-export it from DeepLabCut")
        with path.open("rb") as fh:
            magic = fh.read(len(_HDF5_MAGIC))
    if magic == _HDF5_MAGIC:
        sleap = _sleap_kind(path)
        pose = _read_sleap(path, individual, sleap) if sleap else _read_pose_h5(path, individual)
    else:
        check_text_file(path, "pose file", "check the pose path in dataset.yaml")
        pose = _read_pose_csv(path, individual)
    return by_name(pose, dict(rename), ignore)


def by_name(pose: Pose, rename: Mapping[str, str], ignore: Sequence[str]) -> Pose:
    """`pose` with parts renamed, ignored ones dropped, the rest in name order."""
    names = [rename.get(part, part) for part in pose.bodyparts]
    clashes = sorted({n for n in names if names.count(n) > 1 and n not in ignore})
    if clashes:
        sources = [part for part, name in zip(pose.bodyparts, names) if name in clashes]
        raise DataError(f"{pose.path}: body parts {', '.join(sources)} all become '{clashes[0]}'; "
                        "change pose.rename in dataset.yaml so that each part keeps its own name")
    keep = sorted((name, k) for k, name in enumerate(names) if name not in set(ignore))
    if not keep:
        raise DataError(f"{pose.path}: pose.ignore drops every body part ({', '.join(names)}); keep some")
    order = [k for _, k in keep]
    return Pose(path=pose.path, bodyparts=tuple(name for name, _ in keep),
                xy=pose.xy[:, order, :], likelihood=pose.likelihood[:, order])


def dlc_csv_header(path: Path) -> tuple[tuple[str, ...], list[list[str]]]:
    """The level names and header rows of a DeepLabCut CSV (first cell of each row dropped).

    Raises DataError when the file does not start with a DeepLabCut header.
    """
    rows: list[list[str]] = []
    with path.open(newline="", encoding="utf-8-sig") as fh:
        for row in csv.reader(fh):
            rows.append([cell.strip() for cell in row])
            if len(rows) == 4:
                break
    if not rows or not any(cell for row in rows for cell in row):
        raise DataError(f"{path}: file is empty; re-export it from DeepLabCut")
    firsts = [row[0].lower() if row else "" for row in rows]
    for levels in (_MULTI_LEVELS, _SINGLE_LEVELS):
        if tuple(firsts[: len(levels)]) == levels:
            width = max(len(row) for row in rows[: len(levels)])
            # Short header rows (trailing empty cells dropped by some editors) are padded.
            header = [row[1:] + [""] * (width - len(row)) for row in rows[: len(levels)]]
            return levels, header
    seen = ", ".join(repr(row[0] if row else "") for row in rows[:4])
    raise DataError(
        f"{path}: not a DeepLabCut header: first cells of the first rows are {seen}; expected "
        "'scorer', 'bodyparts', 'coords' (or 'scorer', 'individuals', 'bodyparts', 'coords' for "
        "multi-animal); export the pose with DeepLabCut's CSV writer"
    )


def read_csv_columns(path: Path, n_header: int, columns: Sequence[int], width: int) -> pd.DataFrame:
    """Data rows of a CSV with an `n_header`-row header: the given 0-based columns, as strings.

    Empty cells are NaN. Raises DataError when a row has more cells than the header.
    """
    try:
        # No usecols, and pandas' "more cells than names" warning as an error: otherwise rows
        # longer than the header are silently truncated or shifted.
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(
                path,
                header=None,
                skiprows=n_header,
                names=list(range(width)),
                index_col=False,
                dtype=str,
                encoding="utf-8-sig",
            )
        return frame[list(columns)]
    except pd.errors.EmptyDataError:
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in columns})
    except (pd.errors.ParserError, pd.errors.ParserWarning, ValueError) as exc:
        raise DataError(
            f"{path}: cannot parse the data rows ({str(exc).splitlines()[0]}); "
            "each row needs one cell per header column"
        ) from None


def to_float(path: Path, values: pd.Series, what: str, line_offset: int | None) -> np.ndarray:
    """Strings -> float64 (empty cells NaN); DataError naming the first non-numeric cell.

    `line_offset` is the file line of frame 0 in a CSV (None for other formats).
    """
    as_num = pd.to_numeric(values, errors="coerce")
    bad = as_num.isna().to_numpy() & values.notna().to_numpy()
    if bad.any():
        rows = np.flatnonzero(bad)
        first = int(rows[0])
        where = f" (line {first + line_offset})" if line_offset is not None else ""
        raise DataError(
            f"{path}: non-numeric value {values.iloc[first]!r} in {what} at frame {first}{where}, "
            f"{len(rows)} such cell(s); fix or blank these cells"
        )
    return as_num.to_numpy(dtype=np.float64)


def _read_pose_csv(path: Path, individual: str | None) -> Pose:
    levels, header = dlc_csv_header(path)
    # Column 0 of the file is the frame index, so header column j is file column j + 1.
    columns = list(zip(*header, strict=True))
    if len(levels) == 4:
        individuals = [c[1] for c in columns]
        bodyparts = [c[2] for c in columns]
    else:
        individuals = None
        bodyparts = [c[1] for c in columns]
    coords = [c[-1] for c in columns]
    parts, layout = _layout(path, individuals, bodyparts, coords, individual)
    wanted = sorted({j for cols in layout.values() for j in cols.values()})
    data = read_csv_columns(path, len(levels), [j + 1 for j in wanted], len(columns) + 1)
    if len(data) == 0:
        raise DataError(f"{path}: the DeepLabCut header has no data rows below it; re-export the pose")

    def column(j: int, part: str, coord: str) -> np.ndarray:
        return to_float(path, data[j + 1], f"{part}/{coord}", len(levels) + 1)

    return _assemble(path, parts, layout, len(data), column)


# SLEAP's two HDF5 files: a project or predictions file (.slp) and an analysis export (.h5).
_SLEAP_SLP_KEYS, _SLEAP_ANALYSIS_KEYS = {"metadata", "instances", "points"}, {"tracks", "node_names"}


def _sleap_kind(path: Path) -> str | None:
    """"analysis" or "slp" for a SLEAP HDF5 file, None for any other (a DeepLabCut .h5)."""
    import h5py

    try:
        with h5py.File(path, "r") as file:
            keys = set(file.keys())
    except OSError:
        return None  # not readable by h5py: let the DeepLabCut reader say what is wrong
    if _SLEAP_ANALYSIS_KEYS <= keys:
        return "analysis"
    return "slp" if _SLEAP_SLP_KEYS <= keys else None


def _read_sleap(path: Path, individual: str | None, kind: str) -> Pose:
    """A SLEAP file's first video as a Pose: the track named `individual` (default: the first track,
    or the first untracked instance), point scores as likelihood (1.0 where SLEAP keeps none)."""
    try:
        import sleap_io
    except ImportError:
        raise DataError(f"{path}: reading SLEAP pose files needs sleap-io; pip install 'mbr-bench[sleap]', "
                        "or export the pose as a DeepLabCut CSV") from None
    try:
        with warnings.catch_warnings():  # sleap-io warns about videos it cannot open: none is needed here
            warnings.simplefilter("ignore")
            labels = sleap_io.load_analysis_h5(str(path)) if kind == "analysis" else sleap_io.load_slp(
                str(path), open_videos=False)
        if not labels.videos or not labels.skeletons:
            raise ValueError("no video or no skeleton in the file")
        tracks = [track.name for track in labels.tracks]
        points = labels.numpy(video=labels.videos[0], untracked=not tracks, return_confidence=True)
    except Exception as exc:  # noqa: BLE001 - any sleap-io failure means the same to the user
        raise DataError(f"{path}: cannot read as a SLEAP file ({type(exc).__name__}: {str(exc)[:160]}); "
                        "export it again from SLEAP") from None
    if individual is not None and tracks:
        if individual not in tracks:
            raise DataError(f"{path}: individual '{individual}' not found; tracks in the file: {', '.join(tracks)}; "
                            "set pose.individual in dataset.yaml to one of them")
        animal = points[:, tracks.index(individual)]
    else:
        animal = points[:, 0]
    if len(animal) == 0:
        raise DataError(f"{path}: the SLEAP file has no labelled frame; export the predictions of the whole video")
    xy = animal[..., :2].astype(np.float64)
    likelihood = animal[..., 2].astype(np.float64)
    likelihood[~np.isfinite(likelihood) & np.isfinite(xy).all(axis=-1)] = 1.0  # a user-labelled point
    likelihood[~np.isfinite(xy).all(axis=-1)] = 0.0
    return Pose(path=path, bodyparts=tuple(node.name for node in labels.skeletons[0].nodes), xy=xy,
                likelihood=likelihood)


def _read_pose_h5(path: Path, individual: str | None) -> Pose:
    try:
        with pd.HDFStore(path, mode="r") as store:
            keys = [k.lstrip("/") for k in store.keys()]
    except ImportError:  # pandas reads HDF5 through PyTables, an optional extra
        raise DataError(f"{path}: reading DeepLabCut .h5 pose files needs PyTables; pip install 'mbr-bench[h5]', "
                        "or export the pose as CSV") from None
    except Exception as exc:  # noqa: BLE001 - any HDF5/PyTables failure means the same to the user
        raise DataError(f"{path}: cannot open as HDF5 ({type(exc).__name__}: {exc}); re-export the pose") from None
    if "df_with_missing" in keys:
        key = "df_with_missing"
    elif len(keys) == 1:
        key = keys[0]
    else:
        raise DataError(
            f"{path}: no 'df_with_missing' key and {len(keys)} other keys ({', '.join(keys) or 'none'}); "
            "store the DeepLabCut frame under key 'df_with_missing'"
        )
    try:
        frame = pd.read_hdf(path, key=key)
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{path}: cannot read key '{key}' ({type(exc).__name__}: {exc}); re-export the pose") from None
    if not isinstance(frame, pd.DataFrame) or not isinstance(frame.columns, pd.MultiIndex):
        raise DataError(
            f"{path}: key '{key}' is not a DeepLabCut table (expected MultiIndex columns "
            "scorer/bodyparts/coords); re-export the pose from DeepLabCut"
        )
    names = tuple(str(n).lower() if n is not None else None for n in frame.columns.names)
    n_levels = frame.columns.nlevels
    if n_levels not in (3, 4) or (all(names) and names not in (_SINGLE_LEVELS, _MULTI_LEVELS)):
        raise DataError(
            f"{path}: key '{key}' has column levels {list(frame.columns.names)}; expected "
            "scorer/bodyparts/coords or scorer/individuals/bodyparts/coords; re-export the pose"
        )
    columns = [tuple(str(v).strip() for v in c) for c in frame.columns]
    individuals = [c[1] for c in columns] if n_levels == 4 else None
    bodyparts = [c[-2] for c in columns]
    coords = [c[-1] for c in columns]
    parts, layout = _layout(path, individuals, bodyparts, coords, individual)
    if len(frame) == 0:
        raise DataError(f"{path}: key '{key}' has no rows; re-export the pose")

    def column(j: int, part: str, coord: str) -> np.ndarray:
        values = frame.iloc[:, j]
        if pd.api.types.is_numeric_dtype(values.dtype):
            return values.to_numpy(dtype=np.float64, na_value=np.nan)
        return to_float(path, values.astype(object), f"{part}/{coord}", None)

    return _assemble(path, parts, layout, len(frame), column)


def _layout(
    path: Path,
    individuals: list[str] | None,
    bodyparts: list[str],
    coords: list[str],
    individual: str | None,
) -> tuple[list[str], dict[str, dict[str, int]]]:
    """Body parts in header order and, for each, the header column of x / y / likelihood."""
    pose_cols = [j for j, c in enumerate(coords) if c.lower() in POSE_COORDS]
    if individuals is not None:
        names = list(dict.fromkeys(individuals[j] for j in pose_cols))
        if individual is None:
            individual = names[0] if names else None
        elif individual not in names:
            raise DataError(
                f"{path}: individual '{individual}' not found; available: {', '.join(names)}; "
                "set the individual in dataset.yaml to one of these"
            )
        pose_cols = [j for j in pose_cols if individuals[j] == individual]
    layout: dict[str, dict[str, int]] = {}
    for j in pose_cols:
        part, coord = bodyparts[j], coords[j].lower()
        if not part:
            raise DataError(f"{path}: header column {j + 2} has coords '{coord}' but no body part name; fix the header")
        cols = layout.setdefault(part, {})
        if coord in cols:
            raise DataError(
                f"{path}: body part '{part}' has two '{coord}' columns (header columns "
                f"{cols[coord] + 2} and {j + 2}); keep one"
            )
        cols[coord] = j
    if not layout:
        raise DataError(
            f"{path}: DeepLabCut header has no x/y columns in its coords row; re-export the pose"
        )
    for part, cols in layout.items():
        for need, have in (("y", "x"), ("x", "y")):
            if have in cols and need not in cols:
                raise DataError(
                    f"{path}: body part '{part}' has an {have} column but no {need} column; "
                    "every body part needs both x and y"
                )
        if "x" not in cols:
            raise DataError(f"{path}: body part '{part}' has a likelihood column but no x/y columns; fix the header")
    return list(layout), layout


def _assemble(path, parts, layout, n_frames, column) -> Pose:
    xy = np.empty((n_frames, len(parts), 2), dtype=np.float64)
    likelihood = np.ones((n_frames, len(parts)), dtype=np.float64)
    for p, part in enumerate(parts):
        cols = layout[part]
        xy[:, p, 0] = column(cols["x"], part, "x")
        xy[:, p, 1] = column(cols["y"], part, "y")
        if "likelihood" in cols:
            likelihood[:, p] = column(cols["likelihood"], part, "likelihood")
    return Pose(path=path, bodyparts=tuple(parts), xy=xy, likelihood=likelihood)


# --------------------------------------------------------------------------------------------
# cleaning


def _check_min_likelihood(min_likelihood: float) -> float:
    value = float(min_likelihood)
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"min_likelihood is {min_likelihood}; it must be between 0 and 1 (DeepLabCut likelihoods)")
    return value


def good_points(pose: Pose, min_likelihood: float = 0.6) -> np.ndarray:
    """(T, P) bool: both coordinates finite and likelihood >= min_likelihood (NaN counts as bad)."""
    min_likelihood = _check_min_likelihood(min_likelihood)
    with np.errstate(invalid="ignore"):
        return np.isfinite(pose.xy).all(axis=2) & (pose.likelihood >= min_likelihood)


def clean_pose(pose: Pose, min_likelihood: float = 0.6) -> Pose:
    """Replace unreliable points by linear interpolation in time, per body part and coordinate.

    A point is unreliable when a coordinate is NaN or its likelihood is below `min_likelihood`
    (or NaN). Before the first and after the last good point the nearest good value is held.
    A body part with no good point at all stays NaN. Likelihoods are returned unchanged.
    """
    good = good_points(pose, min_likelihood)
    xy = pose.xy.copy()
    t = np.arange(pose.n_frames, dtype=np.float64)
    for p in range(len(pose.bodyparts)):
        ok = good[:, p]
        if ok.all():
            continue
        if not ok.any():
            xy[:, p, :] = np.nan
            continue
        for c in range(2):
            # np.interp holds the end values constant outside the good range.
            xy[:, p, c] = np.interp(t, t[ok], pose.xy[ok, p, c])
    return Pose(path=pose.path, bodyparts=pose.bodyparts, xy=xy, likelihood=pose.likelihood.copy())


def require_parts(pose: Pose, parts: Sequence[str], setting: str) -> list[int]:
    """Indices of `parts`; DataError naming the unknown part, the available ones and `setting`."""
    if isinstance(parts, str):
        parts = [parts]
    if len(parts) == 0:
        raise ConfigError(f"{setting} is empty; name at least one body part of {pose.path}")
    indices = []
    for name in parts:
        if name not in pose.bodyparts:
            raise DataError(
                f"{pose.path}: body part '{name}' not found; available: {', '.join(pose.bodyparts)}; "
                f"set {setting} in dataset.yaml to some of these, or map a file's name onto it with pose.rename"
            )
        indices.append(pose.bodyparts.index(name))
    return indices


def require_tracked(pose: Pose, cleaned: Pose, indices: Sequence[int], setting: str, min_likelihood: float) -> None:
    """DataError when one of the parts has no usable point in the whole file (still NaN after cleaning)."""
    for i in indices:
        if np.isnan(cleaned.xy[:, i, :]).all():
            raise DataError(
                f"{pose.path}: body part '{pose.bodyparts[i]}' is all-NaN / below likelihood "
                f"{min_likelihood} everywhere ({pose.n_frames} frames); choose other parts for {setting} "
                "in dataset.yaml or a lower min_likelihood"
            )


def heading_track(pose: Pose, heading: Sequence[str], min_likelihood: float = 0.6) -> np.ndarray | None:
    """(T,) float64: the direction from the back to the front part of `heading` in each frame, in
    radians in image axes, after `clean_pose` (NaN where a part is never tracked); None when the
    pose has no such part."""
    if any(part not in pose.bodyparts for part in heading):
        return None
    cleaned = clean_pose(pose, min_likelihood)
    back, front = (cleaned.xy[:, pose.part(part), :] for part in heading)
    return np.arctan2(front[:, 1] - back[:, 1], front[:, 0] - back[:, 0])


def centre_track(pose: Pose, parts: Sequence[str], min_likelihood: float = 0.6) -> np.ndarray:
    """(T, 2) float64: the mean position of `parts` in each frame, after `clean_pose`.

    Raises DataError for an unknown part (listing the available ones) or a part with no usable
    point anywhere in the file.
    """
    indices = require_parts(pose, parts, "crop.centre")
    cleaned = clean_pose(pose, min_likelihood)
    require_tracked(pose, cleaned, indices, "crop.centre", min_likelihood)
    return cleaned.xy[:, indices, :].mean(axis=1)
