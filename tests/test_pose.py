"""DeepLabCut pose reading (CSV 3/4-row headers, H5), cleaning and the centre track."""

import csv
import hashlib
import sys

import numpy as np
import pandas as pd
import pytest

from mbr_bench.core.hashing import file_sha256
from mbr_bench.benchmark.data.pose import centre_track, clean_pose, read_pose
from mbr_bench.core.errors import DataError

SCORER = "DLC_resnet50_testOct30shuffle1_1000"


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def _single_csv(path, rows, parts=("snout", "tailbase"), extra_header=None, extra_cells=None):
    """rows: per frame, per part (x, y, likelihood)."""
    scorer = ["scorer"] + [SCORER] * 3 * len(parts)
    bodyparts = ["bodyparts"] + [p for p in parts for _ in range(3)]
    coords = ["coords"] + ["x", "y", "likelihood"] * len(parts)
    header = [scorer, bodyparts, coords]
    if extra_header:
        for row, cell in zip(header, extra_header):
            row.append(cell)
    lines = [",".join(r) for r in header]
    for t, frame in enumerate(rows):
        cells = [str(t)] + [str(v) for point in frame for v in point]
        if extra_cells is not None:
            cells.append(str(extra_cells[t]))
        lines.append(",".join(cells))
    return _write(path, lines)


def test_three_row_csv(tmp_path):
    rows = [[(1.0, 2.0, 0.9), (3.0, 4.0, 0.8)], [(5.0, 6.0, 0.7), (7.0, 8.0, 0.95)]]
    pose = read_pose(_single_csv(tmp_path / "p.csv", rows))
    assert pose.bodyparts == ("snout", "tailbase")
    assert pose.n_frames == 2
    assert pose.xy.shape == (2, 2, 2) and pose.xy.dtype == np.float64
    np.testing.assert_array_equal(pose.xy[1, 1], [7.0, 8.0])
    np.testing.assert_array_equal(pose.likelihood, [[0.9, 0.8], [0.7, 0.95]])
    assert pose.part("tailbase") == 1


def test_behaviour_columns_and_foreign_coords_are_ignored(tmp_path):
    # A behaviour column appended with the name in the bodyparts row and an empty coords cell,
    # and one whose only header cell is the top one.
    path = tmp_path / "p.csv"
    _write(path, [
        f"scorer,{SCORER},{SCORER},{SCORER},{SCORER},grooming",
        "bodyparts,snout,snout,snout,rearing,",
        "coords,x,y,likelihood,,",
        "0,1,2,0.9,1,0",
        "1,3,4,0.9,0,1",
    ])
    pose = read_pose(path)
    assert pose.bodyparts == ("snout",)
    np.testing.assert_array_equal(pose.xy[:, 0, 0], [1, 3])


def test_csv_without_likelihood_is_all_one(tmp_path):
    path = _write(tmp_path / "p.csv", [
        f"scorer,{SCORER},{SCORER}", "bodyparts,snout,snout", "coords,x,y", "0,1,2", "1,,4",
    ])
    pose = read_pose(path)
    np.testing.assert_array_equal(pose.likelihood, [[1.0], [1.0]])
    assert np.isnan(pose.xy[1, 0, 0]) and pose.xy[1, 0, 1] == 4.0  # empty cell -> NaN


def _multi_csv(path):
    individuals = ["mouse1", "mouse1", "mouse1", "mouse2", "mouse2", "mouse2"]
    return _write(path, [
        "scorer," + ",".join([SCORER] * 6),
        "individuals," + ",".join(individuals),
        "bodyparts,snout,snout,snout,snout,snout,snout",
        "coords,x,y,likelihood,x,y,likelihood",
        "0,1,2,0.9,10,20,0.5",
        "1,3,4,0.8,30,40,0.6",
    ])


def test_multi_animal_csv(tmp_path):
    path = _multi_csv(tmp_path / "ma.csv")
    first = read_pose(path)  # None -> the first individual
    np.testing.assert_array_equal(first.xy[:, 0, :], [[1, 2], [3, 4]])
    second = read_pose(path, individual="mouse2")
    np.testing.assert_array_equal(second.xy[:, 0, :], [[10, 20], [30, 40]])
    np.testing.assert_array_equal(second.likelihood[:, 0], [0.5, 0.6])
    with pytest.raises(DataError, match=r"ma\.csv: individual 'mouse9' not found; available: mouse1, mouse2"):
        read_pose(path, individual="mouse9")


def test_h5_round_trip(tmp_path):
    columns = pd.MultiIndex.from_product(
        [[SCORER], ["snout", "tailbase"], ["x", "y", "likelihood"]], names=["scorer", "bodyparts", "coords"]
    )
    rng = np.random.default_rng(0)
    values = rng.uniform(0, 100, (7, 6))
    values[:, 2::3] = rng.uniform(0, 1, (7, 2))
    frame = pd.DataFrame(values, columns=columns)
    path = tmp_path / "pose.h5"
    frame.to_hdf(path, key="df_with_missing", mode="w")
    pose = read_pose(path)
    assert pose.bodyparts == ("snout", "tailbase")
    np.testing.assert_array_equal(pose.xy[:, 1, 0], values[:, 3])
    np.testing.assert_array_equal(pose.xy[:, 0, 1], values[:, 1])
    np.testing.assert_array_equal(pose.likelihood[:, 1], values[:, 5])

    # Multi-animal H5 under another (single) key.
    ma_columns = pd.MultiIndex.from_product(
        [[SCORER], ["m1", "m2"], ["snout"], ["x", "y", "likelihood"]],
        names=["scorer", "individuals", "bodyparts", "coords"],
    )
    other = tmp_path / "ma.h5"
    pd.DataFrame(values, columns=ma_columns).to_hdf(other, key="poses", mode="w")
    np.testing.assert_array_equal(read_pose(other, individual="m2").xy[:, 0, 0], values[:, 3])


def test_real_openfield_file(openfield_pose):
    pose = read_pose(openfield_pose)
    assert pose.n_frames == 2330
    assert pose.bodyparts == ("leftear", "rightear", "snout", "tailbase")  # by name, not file order
    with open(openfield_pose, newline="") as fh:
        rows = list(csv.reader(fh))
    # Row 3 is frame 0; columns: index, then x, y, likelihood per part in file order.
    file_order = ("snout", "leftear", "rightear", "tailbase")
    for frame, part, coord in [(0, 0, 0), (100, 3, 1), (2329, 2, 0)]:
        expected = float(rows[3 + frame][1 + 3 * part + coord])
        assert pose.xy[frame, pose.part(file_order[part]), coord] == expected
    assert pose.likelihood[1234, pose.part("leftear")] == float(rows[3 + 1234][1 + 3 * 1 + 2])
    centres = centre_track(pose, ["leftear", "rightear", "tailbase"])
    assert centres.shape == (2330, 2) and np.isfinite(centres).all()


def _pose_from_arrays(tmp_path, xy, likelihood, parts):
    rows = [[(xy[t, p, 0], xy[t, p, 1], likelihood[t, p]) for p in range(len(parts))] for t in range(len(xy))]
    return read_pose(_single_csv(tmp_path / "p.csv", rows, parts=parts))


def test_clean_pose_interpolates_and_holds_ends(tmp_path):
    t = np.arange(8, dtype=float)
    xy = np.stack([np.stack([10 * t, 100 - 2 * t], axis=1)], axis=1)  # (8, 1, 2)
    like = np.full((8, 1), 0.99)
    like[0, 0] = 0.1  # bad first frame -> held at frame 1's value
    like[3:5, 0] = 0.2  # bad run in the middle -> linear between frames 2 and 5
    like[7, 0] = 0.0  # bad last frame -> held at frame 6's value
    xy_noisy = xy.copy()
    xy_noisy[[0, 3, 4, 7], 0] = [[999, 999], [-5, 7], [np.nan, np.nan], [999, 999]]
    pose = _pose_from_arrays(tmp_path, xy_noisy, like, ("snout",))
    cleaned = clean_pose(pose, min_likelihood=0.6)
    expected = xy[:, 0].copy()
    expected[0] = xy[1, 0]
    expected[7] = xy[6, 0]
    np.testing.assert_allclose(cleaned.xy[:, 0], expected)
    np.testing.assert_array_equal(cleaned.likelihood, pose.likelihood)
    # The input is left as it was.
    assert pose.xy[0, 0, 0] == 999


def test_clean_pose_keeps_an_all_bad_part_nan(tmp_path):
    xy = np.ones((4, 2, 2))
    like = np.array([[0.9, 0.1]] * 4)
    cleaned = clean_pose(_pose_from_arrays(tmp_path, xy, like, ("snout", "tailbase")))
    assert np.isnan(cleaned.xy[:, 1]).all() and not np.isnan(cleaned.xy[:, 0]).any()


def test_centre_track_is_the_mean_of_parts(tmp_path):
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 50, (6, 3, 2))
    like = np.full((6, 3), 0.95)
    pose = _pose_from_arrays(tmp_path, xy, like, ("snout", "midbody", "tailbase"))
    centre = centre_track(pose, ["snout", "tailbase"])
    # The reader orders parts by name: midbody, snout, tailbase.
    assert pose.bodyparts == ("midbody", "snout", "tailbase")
    np.testing.assert_allclose(centre, (xy[:, 0] + xy[:, 2]) / 2)
    np.testing.assert_allclose(centre_track(pose, ["midbody"]), xy[:, 1])


def test_unknown_part_lists_available(tmp_path):
    pose = _pose_from_arrays(tmp_path, np.ones((2, 2, 2)), np.ones((2, 2)), ("snout", "tailbase"))
    with pytest.raises(DataError, match=r"p\.csv: body part 'midbody' not found; available: snout, tailbase"):
        centre_track(pose, ["midbody"])
    with pytest.raises(DataError, match="available: snout, tailbase"):
        pose.part("nose")


def test_all_bad_part_is_reported(tmp_path):
    like = np.array([[0.9, 0.3]] * 5)
    pose = _pose_from_arrays(tmp_path, np.ones((5, 2, 2)), like, ("snout", "tailbase"))
    with pytest.raises(DataError, match=r"'tailbase' is all-NaN / below likelihood 0\.6 everywhere.*lower min_likelihood"):
        centre_track(pose, ["snout", "tailbase"])
    # A lower threshold accepts it.
    assert np.isfinite(centre_track(pose, ["snout", "tailbase"], min_likelihood=0.2)).all()


def test_malformed_header(tmp_path):
    path = _write(tmp_path / "bad.csv", ["frame,x,y", "0,1,2"])
    with pytest.raises(DataError, match=r"bad\.csv: not a DeepLabCut header: first cells .* 'frame', '0'; expected 'scorer', 'bodyparts', 'coords'"):
        read_pose(path)


def test_x_without_y(tmp_path):
    path = _write(tmp_path / "p.csv", [
        f"scorer,{SCORER},{SCORER},{SCORER}", "bodyparts,snout,snout,tail", "coords,x,y,x", "0,1,2,3",
    ])
    with pytest.raises(DataError, match="body part 'tail' has an x column but no y column"):
        read_pose(path)


def test_non_numeric_value(tmp_path):
    rows = [[(1.0, 2.0, 0.9)], [(1.0, "oops", 0.9)], [(1.0, "bad", 0.9)]]
    path = _single_csv(tmp_path / "p.csv", rows, parts=("snout",))
    with pytest.raises(DataError, match=r"non-numeric value 'oops' in snout/y at frame 1 \(line 5\), 2 such"):
        read_pose(path)


def test_missing_empty_and_headless_files(tmp_path):
    with pytest.raises(DataError, match=r"nope\.csv: pose file not found"):
        read_pose(tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match=r"empty\.csv: pose file is empty"):
        read_pose(tmp_path / "empty.csv")
    path = _write(tmp_path / "header_only.csv", [f"scorer,{SCORER},{SCORER}", "bodyparts,a,a", "coords,x,y"])
    with pytest.raises(DataError, match="no data rows"):
        read_pose(path)
    ragged = _write(tmp_path / "ragged.csv", [f"scorer,{SCORER},{SCORER}", "bodyparts,a,a", "coords,x,y", "0,1,2,3"])
    with pytest.raises(DataError, match=r"ragged\.csv: cannot parse the data rows"):
        read_pose(ragged)
    (tmp_path / "broken.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    with pytest.raises(DataError, match=r"broken\.h5: cannot open as HDF5"):
        read_pose(tmp_path / "broken.h5")


def test_file_sha256(tmp_path):
    path = tmp_path / "blob.bin"
    data = bytes(range(256)) * 9000  # > 1 MiB: more than one chunk
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()


def test_h5_without_pytables_names_the_extra(tmp_path, monkeypatch):
    (tmp_path / "pose.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    monkeypatch.setitem(sys.modules, "tables", None)  # `import tables` now raises ImportError
    with pytest.raises(DataError, match=r"pose\.h5: reading DeepLabCut \.h5 pose files needs PyTables; "
                                        r"pip install 'mbr-bench\[h5\]'"):
        read_pose(tmp_path / "pose.h5")
