"""Behaviour labels: per-frame CSV, DeepLabCut CSV with label columns, interval exports, bouts."""

import numpy as np
import pytest

from mbr_bench.benchmark.data.labels import bout_spans, label_names, read_labels
from mbr_bench.core.errors import DataError

SCORER = "DLC_resnet50_testOct30shuffle1_1000"


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def _check_frame(frame, expected: dict):
    assert list(frame.columns) == list(expected)
    assert frame.index.name == "frame"
    np.testing.assert_array_equal(frame.index, np.arange(len(frame)))
    for name, values in expected.items():
        assert frame[name].dtype == np.int8
        np.testing.assert_array_equal(frame[name].to_numpy(), values)


# --- per-frame CSV ------------------------------------------------------------------------------


def test_per_frame_csv(tmp_path):
    path = _write(tmp_path / "l.csv", ["frame,grooming,rearing,other", "0,0,1,0", "1,1,1,0", "2,1,0,1"])
    frame = read_labels(path, ["rearing", "grooming"], n_frames=3)  # requested order wins
    _check_frame(frame, {"rearing": [1, 1, 0], "grooming": [0, 1, 1]})
    assert label_names(path) == ["grooming", "rearing", "other"]


def test_per_frame_csv_without_frame_column_and_float_cells(tmp_path):
    path = _write(tmp_path / "l.csv", ["grooming", "1.0", "0.0", "1"])
    _check_frame(read_labels(path, ["grooming"]), {"grooming": [1, 0, 1]})


def test_per_frame_csv_with_pandas_index_column(tmp_path):
    path = _write(tmp_path / "l.csv", [",grooming", "0,1", "1,0"])
    _check_frame(read_labels(path, ["grooming"]), {"grooming": [1, 0]})
    assert label_names(path) == ["grooming"]


def test_frame_column_must_be_consecutive(tmp_path):
    path = _write(tmp_path / "l.csv", ["frame,grooming", "0,1", "2,0", "3,0"])
    with pytest.raises(DataError, match=r"l\.csv: column 'frame' must count 0\.\.2 consecutively but line 3 has '2' \(expected 1\)"):
        read_labels(path, ["grooming"])


def test_per_frame_length_must_match_video(tmp_path):
    path = _write(tmp_path / "l.csv", ["grooming", "0", "1", "0"])
    with pytest.raises(DataError, match=r"l\.csv: has 3 label rows but the video has 5 frames"):
        read_labels(path, ["grooming"], n_frames=5)


def test_frame_count_source_is_named(tmp_path):
    # A pose-only entry has no video: its frame count comes from the pose file, and messages say so.
    path = _write(tmp_path / "l.csv", ["grooming", "0", "1", "0"])
    with pytest.raises(DataError, match=r"l\.csv: has 3 label rows but its pose file m1\.csv has 5 frames; "
                                        r"labels need one row per frame$"):
        read_labels(path, ["grooming"], n_frames=5, source="its pose file m1.csv")
    intervals = _write(tmp_path / "iv.csv", ["behaviour,start,stop", "grooming,2,12"])
    with pytest.raises(DataError, match=r"ends at frame 12 but its pose file m1\.csv has 10 frames"):
        read_labels(intervals, ["grooming"], n_frames=10, source="its pose file m1.csv")


def test_values_other_than_0_1(tmp_path):
    path = _write(tmp_path / "l.csv", ["frame,grooming", "0,0", "1,1", "2,2", "3,yes", "4,1"])
    with pytest.raises(
        DataError,
        match=r"l\.csv: behaviour 'grooming' has values other than 0/1: first at frame 2 \(line 4\) value '2', 2 such value",
    ):
        read_labels(path, ["grooming"])


def test_nan_values(tmp_path):
    path = _write(tmp_path / "l.csv", ["frame,grooming", "0,0", "1,", "2,NaN", "3,1"])
    with pytest.raises(DataError, match=r"behaviour 'grooming' has 2 empty/NaN value\(s\), first at frame 1 \(line 3\)"):
        read_labels(path, ["grooming"])


def test_requested_behaviour_absent(tmp_path):
    path = _write(tmp_path / "l.csv", ["frame,Grooming,rearing", "0,0,1"])
    with pytest.raises(
        DataError,
        match=r"l\.csv: behaviour 'grooming' not found \(did you mean 'Grooming'\?\); the file has: Grooming, rearing; fix `behaviours` in dataset.yaml",
    ):
        read_labels(path, ["grooming"])


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DataError, match=r"nope\.csv: labels file not found"):
        read_labels(tmp_path / "nope.csv", ["grooming"])
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match=r"empty\.csv: labels file is empty"):
        read_labels(tmp_path / "empty.csv", ["grooming"])
    header_only = _write(tmp_path / "header.csv", ["frame,grooming"])
    with pytest.raises(DataError, match=r"header\.csv: labels file has a header but no rows"):
        read_labels(header_only, ["grooming"])


# --- DeepLabCut CSV with behaviour columns -------------------------------------------------------


def test_dlc_csv_with_behaviour_columns(tmp_path):
    # 'grooming' in the bodyparts row (empty coords), 'rearing' only in the top row.
    path = _write(tmp_path / "dlc.csv", [
        f"scorer,{SCORER},{SCORER},{SCORER},{SCORER},rearing",
        "bodyparts,snout,snout,snout,grooming,",
        "coords,x,y,likelihood,,",
        "0,1,2,0.9,0,1",
        "1,3,4,0.9,1,1",
        "2,5,6,0.9,1,0",
    ])
    frame = read_labels(path, ["grooming", "rearing"], n_frames=3)
    _check_frame(frame, {"grooming": [0, 1, 1], "rearing": [1, 1, 0]})
    assert label_names(path) == ["grooming", "rearing"]
    with pytest.raises(DataError, match=r"dlc\.csv: behaviour 'sniffing' not found; the file has: grooming, rearing"):
        read_labels(path, ["sniffing"])
    with pytest.raises(DataError, match=r"dlc\.csv: has 3 label rows but the video has 4 frames"):
        read_labels(path, ["grooming"], n_frames=4)


def test_dlc_csv_four_row_header_and_bad_value(tmp_path):
    path = _write(tmp_path / "dlc.csv", [
        f"scorer,{SCORER},{SCORER},{SCORER},{SCORER}",
        "individuals,m1,m1,m1,",
        "bodyparts,snout,snout,snout,grooming",
        "coords,x,y,likelihood,",
        "0,1,2,0.9,0",
        "1,3,4,0.9,1",
        "2,3,4,0.9,5",
    ])
    with pytest.raises(DataError, match=r"first at frame 2 \(line 7\) value '5', 1 such value"):
        read_labels(path, ["grooming"])


# --- interval CSV --------------------------------------------------------------------------------


def test_interval_frames_stop_exclusive_and_merged(tmp_path):
    path = _write(tmp_path / "iv.csv", [
        "behaviour,start,stop",
        "grooming,2,5",  # frames 2, 3, 4 (stop exclusive)
        "grooming,4,7",  # overlaps the previous: merged into 2..6
        "rearing,0,1",
        "rearing,9,10",  # may end at n_frames
        "sniffing,0,10",  # not requested: ignored
    ])
    frame = read_labels(path, ["grooming", "rearing"], n_frames=10)
    _check_frame(frame, {
        "grooming": [0, 0, 1, 1, 1, 1, 1, 0, 0, 0],
        "rearing": [1, 0, 0, 0, 0, 0, 0, 0, 0, 1],
    })
    assert label_names(path) == ["grooming", "rearing", "sniffing"]


def test_interval_seconds_with_fps(tmp_path):
    # At 10 fps frame i is at i / 10 s: [0.2 s, 0.5 s) holds frames 2, 3, 4.
    path = _write(tmp_path / "iv.csv", ["Behavior,start_s,stop_s", "grooming,0.2,0.5", "grooming,0.81,0.9"])
    frame = read_labels(path, ["grooming"], n_frames=10, fps=10.0)
    _check_frame(frame, {"grooming": [0, 0, 1, 1, 1, 0, 0, 0, 0, 0]})  # 0.81..0.9 holds no frame time
    with pytest.raises(DataError, match=r"iv\.csv: intervals are in seconds but no fps is known; set fps in dataset\.yaml"):
        read_labels(path, ["grooming"], n_frames=10)


def test_interval_boris_columns_and_unit_column(tmp_path):
    boris = _write(tmp_path / "boris.csv", [
        "Observation id,Subject,Behavior,Behavior type,Start (s),Stop (s),Duration (s)",
        "obs1,No focal subject,grooming,STATE,0.100,0.300,0.200",
    ])
    _check_frame(read_labels(boris, ["grooming"], n_frames=5, fps=10), {"grooming": [0, 1, 1, 0, 0]})
    mixed = _write(tmp_path / "mixed.csv", [
        "behavior,start,stop,unit", "grooming,0,2,frames", "grooming,0.4,0.5,seconds",
    ])
    _check_frame(read_labels(mixed, ["grooming"], n_frames=6, fps=10), {"grooming": [1, 1, 0, 0, 1, 0]})


def test_interval_without_bouts_is_all_zero(tmp_path):
    path = _write(tmp_path / "iv.csv", ["behaviour,start,stop", "rearing,0,2"])
    _check_frame(read_labels(path, ["grooming"], n_frames=3), {"grooming": [0, 0, 0]})
    # Different capitalisation is taken for a typo, not for "no bout".
    with pytest.raises(DataError, match=r"behaviour 'Rearing' not found \(did you mean 'rearing'\?\)"):
        read_labels(path, ["Rearing"], n_frames=3)


def test_interval_errors(tmp_path):
    beyond = _write(tmp_path / "beyond.csv", ["behaviour,start,stop", "grooming,8,12"])
    with pytest.raises(DataError, match=r"beyond\.csv: line 2 \('grooming'\) ends at frame 12 but the video has 10 frames"):
        read_labels(beyond, ["grooming"], n_frames=10)
    with pytest.raises(DataError, match=r"beyond\.csv: interval labels need the video's frame count"):
        read_labels(beyond, ["grooming"])
    reversed_ = _write(tmp_path / "rev.csv", ["behaviour,start,stop", "grooming,5,3"])
    with pytest.raises(DataError, match=r"rev\.csv: line 2 stops before it starts"):
        read_labels(reversed_, ["grooming"], n_frames=10)
    nan = _write(tmp_path / "nan.csv", ["behaviour,start,stop", "grooming,1,3", "grooming,4,"])
    with pytest.raises(DataError, match=r"nan\.csv: line 3 has an empty/NaN 'stop'"):
        read_labels(nan, ["grooming"], n_frames=10)
    text = _write(tmp_path / "text.csv", ["behaviour,start,stop", "grooming,one,3"])
    with pytest.raises(DataError, match=r"text\.csv: line 2 has non-numeric 'start' 'one'"):
        read_labels(text, ["grooming"], n_frames=10)
    unit = _write(tmp_path / "unit.csv", ["behaviour,start,stop,unit", "grooming,1,3,minutes"])
    with pytest.raises(DataError, match=r"unit\.csv: line 2 has unit 'minutes'; use 'frames' or 'seconds'"):
        read_labels(unit, ["grooming"], n_frames=10)
    no_times = _write(tmp_path / "notimes.csv", ["behaviour,begin,end", "grooming,1,3"])
    with pytest.raises(DataError, match=r"notimes\.csv: has a 'behaviour' column but no interval columns"):
        read_labels(no_times, ["grooming"], n_frames=10)


# --- bouts ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("y", "spans"),
    [
        ([0, 1, 1, 0, 0, 1, 0], [[1, 3], [5, 6]]),
        ([1, 1, 0, 1, 1], [[0, 2], [3, 5]]),  # runs touching both ends
        ([1, 1, 1], [[0, 3]]),
        ([0, 0, 0], []),
        ([], []),
        ([True, False, True], [[0, 1], [2, 3]]),
    ],
)
def test_bout_spans(y, spans):
    out = bout_spans(np.asarray(y))
    assert out.shape == (len(spans), 2)
    assert out.dtype.kind == "i"
    np.testing.assert_array_equal(out, np.asarray(spans, dtype=np.int64).reshape(-1, 2))


def test_clock_columns_are_not_behaviours(tmp_path):
    from mbr_bench.benchmark.data.labels import label_names

    path = tmp_path / "labels.csv"
    path.write_text("frame,time_s,grooming\n0,0.0,0\n1,0.1,1\n")
    assert label_names(path) == ["grooming"]
