"""Behaviour labels: per-frame 0/1 tables, DeepLabCut CSVs with label columns, and interval exports.

Three formats are recognised from the content of the file:

* per-frame CSV: an optional `frame` column (0..T-1) plus one 0/1 column per behaviour;
* a DeepLabCut CSV (3- or 4-row header) with per-frame 0/1 behaviour columns appended, the
  behaviour name in any header row;
* an interval CSV (BORIS-style): a `behaviour` / `behavior` column and `start`, `stop`
  (optionally with a `unit` column, frames or seconds), or `start_s`, `stop_s`, or BORIS's
  `Start (s)`, `Stop (s)`. Intervals are half-open: [start, stop), stop exclusive.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ...core.errors import ConfigError, DataError
from ...core.textfiles import check_text_file
from .pose import POSE_COORDS, dlc_csv_header, read_csv_columns

_BEHAVIOUR_COLUMNS = ("behaviour", "behavior")
_FRAME_UNITS = ("frames", "frame", "f")
_SECOND_UNITS = ("seconds", "second", "s", "sec")
_INTERVAL_COLUMNS = (("start", "stop", None), ("start_s", "stop_s", "seconds"), ("start (s)", "stop (s)", "seconds"))
# Times within this many frames of a whole frame count as that frame (float round-off in exports).
_FRAME_TOLERANCE = 1e-6


def read_labels(
    path: str | Path,
    behaviours: Sequence[str],
    n_frames: int | None = None,
    fps: float | None = None,
    source: str = "the video",
) -> pd.DataFrame:
    """Per-frame labels: a DataFrame indexed 0..T-1 (name 'frame'), one int8 0/1 column per behaviour.

    Columns follow the order of `behaviours`. The format is detected from the content (see the
    module docstring). Per-frame and DeepLabCut files give T = their row count and must match
    `n_frames` when it is given. Interval files need `n_frames` (the video's length) and, for
    times in seconds, `fps`: frame i (shown at time i / fps) is labelled when start <= i / fps < stop.
    Interval frames are [start, stop) with stop exclusive; overlapping intervals are merged. A
    requested behaviour with no interval in an interval file is all 0 (no bout in this video),
    unless the file names it with different capitalisation, which is an error. `source` names what
    `n_frames` was counted from in messages ("the video", or e.g. "its pose file m1.csv" for a
    pose-only entry). Raises DataError with a one-line message naming the file, the problem and the fix.
    """
    path = Path(path)
    wanted = _check_behaviours(behaviours)
    kind, header = _detect(path)
    if kind == "dlc":
        frame = _read_dlc(path, wanted)
    elif kind == "interval":
        frame = _read_intervals(path, header, wanted, n_frames, fps, source)
    else:
        frame = _read_per_frame(path, header, wanted)
    if n_frames is not None and kind != "interval" and len(frame) != n_frames:
        raise DataError(
            f"{path}: has {len(frame)} label rows but {source} has {n_frames} frames; "
            f"labels need one row per {'video frame' if source == 'the video' else 'frame'}"
        )
    return frame


def label_names(path: str | Path) -> list[str]:
    """The behaviours a labels file provides, in file order (for 'unknown behaviour' checks)."""
    path = Path(path)
    kind, header = _detect(path)
    if kind == "dlc":
        levels, rows = dlc_csv_header(path)
        names = [_dlc_label_name(levels, col) for col in _dlc_label_columns(levels, rows).values()]
        return list(dict.fromkeys(n for n in names if n))
    if kind == "interval":
        data = read_csv_columns(path, 1, range(len(header)), len(header))
        col = _find_column(header, _BEHAVIOUR_COLUMNS)
        values = data[col].dropna().astype(str).str.strip()
        return list(dict.fromkeys(v for v in values if v))
    frame_col = _frame_column(header)
    return [name for j, name in enumerate(header) if j != frame_col and name and name.lower() not in _TIME_COLUMNS]


# Per-frame exports often carry a clock column next to the behaviours; it is not a behaviour.
_TIME_COLUMNS = {"time", "time_s", "time (s)", "timestamp", "seconds"}


def bout_spans(y: np.ndarray) -> np.ndarray:
    """(n_bouts, 2) int64 [start, stop) of the runs of positive entries (1 / True) in a 1-D array."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"bout_spans expects a 1-D array, got shape {y.shape}")
    on = np.concatenate([[0], (y > 0).astype(np.int8), [0]])
    edges = np.diff(on)
    return np.stack([np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)], axis=1).astype(np.int64)


# --------------------------------------------------------------------------------------------
# detection


def _check_behaviours(behaviours: Sequence[str]) -> list[str]:
    if isinstance(behaviours, str):
        behaviours = [behaviours]
    wanted = [str(b) for b in behaviours]
    if not wanted:
        raise ConfigError("behaviours is empty; list at least one behaviour in dataset.yaml")
    seen: set[str] = set()
    for name in wanted:
        if name in seen:
            raise ConfigError(f"behaviour '{name}' is listed twice in behaviours; list each once in dataset.yaml")
        seen.add(name)
    return wanted


def _detect(path: Path) -> tuple[str, list[str]]:
    """('dlc' | 'interval' | 'frames', header cells of the first row)."""
    check_text_file(path, "labels file", "check the labels path in dataset.yaml")
    with path.open(newline="", encoding="utf-8-sig") as fh:
        first = next(csv.reader(fh), None)
    if first is None or not any(cell.strip() for cell in first):
        raise DataError(f"{path}: labels file is empty; export the labels again")
    header = [cell.strip() for cell in first]
    if header[0].lower() == "scorer":
        return "dlc", header
    if any(h.lower() in _BEHAVIOUR_COLUMNS for h in header):
        return "interval", header
    return "frames", header


def _find_column(header: list[str], names: Sequence[str]) -> int | None:
    lowered = [h.lower() for h in header]
    for name in names:
        if name in lowered:
            return lowered.index(name)
    return None


def _absent(path: Path, name: str, available: Sequence[str]) -> DataError:
    near = [a for a in available if a.lower() == name.lower()]
    hint = f" (did you mean '{near[0]}'?)" if near else ""
    return DataError(
        f"{path}: behaviour '{name}' not found{hint}; the file has: {', '.join(available) or 'none'}; "
        "fix `behaviours` in dataset.yaml or the column name in the file"
    )


def _binary(path: Path, values: pd.Series, name: str, line_offset: int) -> np.ndarray:
    """A column of strings -> int8 0/1; DataError on NaN or any other value."""
    missing = values.isna().to_numpy()
    if missing.any():
        rows = np.flatnonzero(missing)
        raise DataError(
            f"{path}: behaviour '{name}' has {len(rows)} empty/NaN value(s), first at frame {rows[0]} "
            f"(line {rows[0] + line_offset}); every frame needs 0 or 1"
        )
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isin(numbers, (0.0, 1.0))  # non-numeric cells are NaN here and count as bad
    if bad.any():
        rows = np.flatnonzero(bad)
        first = int(rows[0])
        raise DataError(
            f"{path}: behaviour '{name}' has values other than 0/1: first at frame {first} "
            f"(line {first + line_offset}) value {values.iloc[first]!r}, {len(rows)} such value(s); "
            "use 0 or 1 per frame"
        )
    return numbers.astype(np.int8)


def _result(columns: dict[str, np.ndarray], order: Sequence[str], n_rows: int) -> pd.DataFrame:
    frame = pd.DataFrame({name: columns[name] for name in order}, index=pd.RangeIndex(n_rows, name="frame"))
    return frame.astype(np.int8)


# --------------------------------------------------------------------------------------------
# per-frame CSV


def _frame_column(header: list[str]) -> int | None:
    found = _find_column(header, ("frame",))
    if found is not None:
        return found
    # pandas' to_csv writes its index as an unnamed first column: treat it as the frame number.
    return 0 if header[0] == "" and len(header) > 1 else None


def _read_per_frame(path: Path, header: list[str], wanted: list[str]) -> pd.DataFrame:
    named = [h for h in header if h]
    dupes = sorted({h for h in named if named.count(h) > 1})
    if dupes:
        raise DataError(f"{path}: column(s) {', '.join(dupes)} appear more than once; keep one column per behaviour")
    frame_col = _frame_column(header)
    available = [h for j, h in enumerate(header) if j != frame_col and h]
    for name in wanted:
        if name not in header or header.index(name) == frame_col:
            raise _absent(path, name, available)
    data = read_csv_columns(path, 1, range(len(header)), len(header))
    if len(data) == 0:
        raise DataError(f"{path}: labels file has a header but no rows; export the labels again")
    if frame_col is not None:
        _check_frame_numbers(path, data[frame_col], header[frame_col] or "index")
    columns = {name: _binary(path, data[header.index(name)], name, 2) for name in wanted}
    return _result(columns, wanted, len(data))


def _check_frame_numbers(path: Path, values: pd.Series, column: str) -> None:
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    expected = np.arange(len(numbers), dtype=np.float64)
    wrong = np.flatnonzero(~(numbers == expected))  # NaN compares unequal, so it is caught too
    if wrong.size:
        i = int(wrong[0])
        raise DataError(
            f"{path}: column '{column}' must count 0..{len(numbers) - 1} consecutively but line {i + 2} "
            f"has {values.iloc[i]!r} (expected {i}); sort the rows and fill gaps, or drop the column"
        )


# --------------------------------------------------------------------------------------------
# DeepLabCut CSV with label columns


def _dlc_label_columns(levels: tuple[str, ...], rows: list[list[str]]) -> dict[int, tuple[str, ...]]:
    """Header column -> header cells, for the columns that are not x/y/likelihood pose data."""
    columns = list(zip(*rows, strict=True))
    return {j: col for j, col in enumerate(columns) if col[-1].lower() not in POSE_COORDS and any(col)}


def _dlc_label_name(levels: tuple[str, ...], col: tuple[str, ...]) -> str:
    # The name usually sits in the bodyparts row; otherwise in the top (scorer) row.
    by_level = dict(zip(levels, col, strict=True))
    for level in ("bodyparts", "scorer", *levels):
        if by_level.get(level):
            return by_level[level]
    return ""


def _read_dlc(path: Path, wanted: list[str]) -> pd.DataFrame:
    levels, rows = dlc_csv_header(path)
    candidates = _dlc_label_columns(levels, rows)
    available = list(dict.fromkeys(n for n in (_dlc_label_name(levels, c) for c in candidates.values()) if n))
    chosen: dict[str, int] = {}
    for name in wanted:
        matches = [j for j, col in candidates.items() if name in col]
        if not matches:
            raise _absent(path, name, available)
        if len(matches) > 1:
            raise DataError(
                f"{path}: behaviour '{name}' names {len(matches)} columns (header columns "
                f"{', '.join(str(j + 2) for j in matches)}); keep one column per behaviour"
            )
        chosen[name] = matches[0]
    width = len(rows[0]) + 1  # the frame index column precedes the header cells
    data = read_csv_columns(path, len(levels), [j + 1 for j in chosen.values()], width)
    if len(data) == 0:
        raise DataError(f"{path}: the DeepLabCut header has no data rows below it; export the labels again")
    columns = {name: _binary(path, data[j + 1], name, len(levels) + 1) for name, j in chosen.items()}
    return _result(columns, wanted, len(data))


# --------------------------------------------------------------------------------------------
# interval CSV


def _read_intervals(
    path: Path, header: list[str], wanted: list[str], n_frames: int | None, fps: float | None,
    source: str = "the video",
) -> pd.DataFrame:
    if n_frames is None:
        raise DataError(
            f"{path}: interval labels need the video's frame count (n_frames) to build per-frame labels; "
            "pass the video's length"
        )
    if int(n_frames) != n_frames or n_frames < 1:
        raise DataError(f"{path}: n_frames is {n_frames}; it must be a positive whole number of video frames")
    n_frames = int(n_frames)
    beh_col = _find_column(header, _BEHAVIOUR_COLUMNS)
    unit_col: int | None = None
    # (start, stop, unit) in order of preference; unit None means "from the unit column, else frames".
    for start_name, stop_name, fixed_unit in _INTERVAL_COLUMNS:
        start_col, stop_col = _find_column(header, (start_name,)), _find_column(header, (stop_name,))
        if start_col is not None and stop_col is not None:
            break
    else:
        raise DataError(
            f"{path}: has a '{header[beh_col]}' column but no interval columns; expected start, stop "
            "(optionally unit), or start_s, stop_s, or 'Start (s)', 'Stop (s)'"
        )
    if fixed_unit is None:
        unit_col = _find_column(header, ("unit",))
        fixed_unit = None if unit_col is not None else "frames"
    data = read_csv_columns(path, 1, range(len(header)), len(header))
    names = data[beh_col].astype(object).where(data[beh_col].notna(), "").astype(str).str.strip()
    available = list(dict.fromkeys(n for n in names if n))
    for name in wanted:
        if name not in available and any(a.lower() == name.lower() for a in available):
            raise _absent(path, name, available)
    columns = {name: np.zeros(n_frames, dtype=np.int8) for name in wanted}
    for i in np.flatnonzero(names.isin(wanted).to_numpy()):
        line = int(i) + 2
        name = names.iloc[i]
        unit = fixed_unit or _unit(path, data[unit_col].iloc[i], line)
        start = _time(path, data[start_col].iloc[i], header[start_col], line)
        stop = _time(path, data[stop_col].iloc[i], header[stop_col], line)
        first, last = _to_frames(path, start, stop, unit, fps, line)
        if last > n_frames:
            raise DataError(
                f"{path}: line {line} ('{name}') ends at frame {last} but {source} has {n_frames} frames "
                f"(stop is exclusive, so at most {n_frames}); fix the interval or the video's fps/length"
            )
        columns[name][first:last] = 1  # setting 1 twice merges overlapping intervals
    return _result(columns, wanted, n_frames)


def _unit(path: Path, value: object, line: int) -> str:
    text = "" if pd.isna(value) else str(value).strip().lower()
    if text in _FRAME_UNITS:
        return "frames"
    if text in _SECOND_UNITS:
        return "seconds"
    raise DataError(f"{path}: line {line} has unit {value!r}; use 'frames' or 'seconds'")


def _time(path: Path, value: object, column: str, line: int) -> float:
    if pd.isna(value):
        raise DataError(f"{path}: line {line} has an empty/NaN '{column}'; every interval needs a start and a stop")
    try:
        number = float(str(value).strip())
    except ValueError:
        raise DataError(f"{path}: line {line} has non-numeric '{column}' {value!r}; use a number") from None
    if not math.isfinite(number):
        raise DataError(f"{path}: line {line} has '{column}' {value!r}; use a finite number")
    return number


def _to_frames(path: Path, start: float, stop: float, unit: str, fps: float | None, line: int) -> tuple[int, int]:
    if unit == "seconds":
        if fps is None:
            raise DataError(f"{path}: intervals are in seconds but no fps is known; set fps in dataset.yaml")
        if not (math.isfinite(fps) and fps > 0):
            raise DataError(f"{path}: fps is {fps}; set a positive fps in dataset.yaml")
        # Frame i is shown at i / fps, so it is inside [start, stop) when ceil(start * fps) <= i < ceil(stop * fps).
        first = math.ceil(start * fps - _FRAME_TOLERANCE)
        last = math.ceil(stop * fps - _FRAME_TOLERANCE)
    else:
        if abs(start - round(start)) > _FRAME_TOLERANCE or abs(stop - round(stop)) > _FRAME_TOLERANCE:
            raise DataError(
                f"{path}: line {line} has fractional frame numbers ({start}, {stop}); "
                "use whole frames or set unit to seconds"
            )
        first, last = round(start), round(stop)
    if first < 0:
        raise DataError(f"{path}: line {line} starts before the video (start {start}); starts must be >= 0")
    if last < first:
        raise DataError(f"{path}: line {line} stops before it starts ({start} > {stop}); swap or fix them")
    return int(first), int(last)
