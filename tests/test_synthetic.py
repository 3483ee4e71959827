"""Synthetic open field: files and formats, determinism, label statistics, behaviours that differ
in the pose CSV and in the pixels, and unlabelled distractors (stretches, pauses) that look partly
like them (measured from the written files, not internal state)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from mbr_bench.benchmark.data.synthetic import (
    BEHAVIOURS,
    BOUT_BEHAVIOURS,
    BODY_PARTS,
    REFERENCE_MEAN_BOUT_FRAMES,
    SCORER,
    arena_geometry,
    default_crop_size,
    generate,
)
from mbr_bench.core.errors import ConfigError

N_VIDEOS, N_FRAMES, N_TEST, SIZE, FPS = 6, 1500, 2, 256, 10
STATES = ("walking", *BOUT_BEHAVIOURS)  # walking = no bout (locomotion, pauses, stretches)
PART = {name: i for i, name in enumerate(BODY_PARTS)}
ARENA = arena_geometry(SIZE)
BODY = ARENA.body_length
FRAME_STEP = 5  # frames sampled for pixel measurements


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default dataset (6 videos x 1500 frames), generated once for this module."""
    return generate(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture(scope="module")
def manifest(dataset: Path) -> dict:
    return yaml.safe_load(dataset.read_text())


def _read_pose(path: Path) -> np.ndarray:
    """(n, parts, 3) x, y, likelihood from a DeepLabCut CSV, parts in BODY_PARTS order."""
    table = pd.read_csv(path, header=[0, 1, 2], index_col=0).droplevel("scorer", axis=1)
    return np.stack([table[part][["x", "y", "likelihood"]].to_numpy() for part in BODY_PARTS], axis=1)


def _state_per_frame(labels: np.ndarray) -> np.ndarray:
    """0 = walking, 1 + index into BOUT_BEHAVIOURS otherwise."""
    return np.where(labels.any(axis=1), labels.argmax(axis=1) + 1, 0)


@pytest.fixture(scope="module")
def videos(dataset: Path, manifest: dict) -> list[dict]:
    """Per video: labels (n, 3), pose (n, parts, 3), the state per frame and the mp4 path."""
    root = dataset.parent
    out = []
    for entry in manifest["videos"]:
        table = pd.read_csv(root / entry["labels"])
        labels = table[list(BOUT_BEHAVIOURS)].to_numpy()
        out.append(
            {
                "id": entry["id"],
                "labels": labels,
                "locomotion": table["locomotion"].to_numpy(),
                "state": _state_per_frame(labels),
                "pose": _read_pose(root / entry["pose"]),
                "video": root / entry["video"],
            }
        )
    return out


def _elongation(grey: np.ndarray, centre: np.ndarray) -> float:
    """Major/minor axis ratio of the dark body blob around `centre` (the thin tail opened away)."""
    half = int(1.1 * BODY)
    padded = cv2.copyMakeBorder(grey, half, half, half, half, cv2.BORDER_REPLICATE)
    x, y = int(round(centre[0])), int(round(centre[1]))
    mask = (padded[y : y + 2 * half, x : x + 2 * half] < 100).astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    count, components, stats, _ = cv2.connectedComponentsWithStats(mask)
    if count < 2:
        return float("nan")
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    ys, xs = np.nonzero(components == biggest)
    small, large = np.linalg.eigvalsh(np.cov(np.stack([xs, ys]).astype(float)))
    return float(np.sqrt(large / max(small, 1e-9)))


@pytest.fixture(scope="module")
def pixels(videos: list[dict]) -> pd.DataFrame:
    """Every FRAME_STEP-th frame where the midbody is well tracked: grey level at the midbody, at
    the floor corner farthest from the mouse, and the body blob's elongation."""
    lo, hi = (int(v) for v in ARENA.inset(0.5 * BODY))
    corners = np.array([(lo, lo), (lo, hi), (hi, lo), (hi, hi)])
    rows = []
    for video in videos:
        capture = cv2.VideoCapture(str(video["video"]))
        index = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            x, y, likelihood = video["pose"][index, PART["midbody"]]
            if index % FRAME_STEP == 0 and likelihood > 0.9:
                grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
                far = corners[np.argmax(np.linalg.norm(corners - [x, y], axis=1))]
                rows.append(
                    {
                        "state": STATES[video["state"][index]],
                        "mouse": int(grey[int(round(y)), int(round(x))]),
                        "floor": int(grey[far[1], far[0]]),
                        "elongation": _elongation(grey, np.array([x, y])),
                    }
                )
            index += 1
        capture.release()
    return pd.DataFrame(rows)


def _bouts(column: np.ndarray) -> np.ndarray:
    """Lengths of the runs of 1 in a 0/1 column."""
    edges = np.diff(np.concatenate([[0], column, [0]]))
    return np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)


# ------------------------------------------------------------------ files and formats


def test_manifest_lists_every_file_with_relative_paths(dataset: Path, manifest: dict) -> None:
    assert dataset.name == "dataset.yaml"
    assert manifest["name"] == "synthetic_open_field"
    assert manifest["behaviours"] == list(BEHAVIOURS)
    assert manifest["crop"] == {
        "mode": "pose",
        "size": default_crop_size(SIZE),
        "centre": ["midbody"],
        "min_likelihood": 0.6,
    }
    assert isinstance(manifest["crop"]["size"], int)
    assert 2.0 * BODY <= manifest["crop"]["size"] <= 2.4 * BODY
    assert manifest["pose"] == {"heading": ["tailbase", "snout"]}
    assert manifest["synthetic"] == {"seed": 0, "n_videos": N_VIDEOS, "n_frames": N_FRAMES, "fps": FPS}

    entries = manifest["videos"]
    assert [e["id"] for e in entries] == [f"ofs{i:02d}" for i in range(1, N_VIDEOS + 1)]
    assert [e["split"] for e in entries] == ["train"] * (N_VIDEOS - N_TEST) + ["test"] * N_TEST
    for entry in entries:
        assert entry["fps"] == FPS
        for key, folder in (("video", "videos"), ("pose", "poses"), ("labels", "labels")):
            relative = Path(entry[key])
            assert not relative.is_absolute() and relative.parts[0] == folder
            assert (dataset.parent / relative).is_file()
    assert not list(dataset.parent.rglob("*partial*")), "temporary files left behind"


def test_pose_csv_has_deeplabcut_header_and_one_row_per_frame(dataset: Path, manifest: dict) -> None:
    path = dataset.parent / manifest["videos"][0]["pose"]
    header = [line.split(",") for line in path.read_text().splitlines()[:4]]
    assert [row[0] for row in header[:3]] == ["scorer", "bodyparts", "coords"]
    assert set(header[0][1:]) == {SCORER}
    assert header[1][1:] == [part for part in BODY_PARTS for _ in range(3)]
    assert header[2][1:] == ["x", "y", "likelihood"] * len(BODY_PARTS)
    assert header[3][0] == "0", "the first data row must follow the 3 header rows"

    table = pd.read_csv(path, header=[0, 1, 2], index_col=0)
    assert len(table) == N_FRAMES
    assert table.index.tolist() == list(range(N_FRAMES))


def test_labels_csv_is_frame_plus_one_binary_column_per_behaviour(dataset: Path, manifest: dict) -> None:
    path = dataset.parent / manifest["videos"][0]["labels"]
    assert path.read_text().splitlines()[0] == "frame,grooming,mid_rearing,wall_rearing,locomotion"
    table = pd.read_csv(path)
    assert table["frame"].tolist() == list(range(N_FRAMES))
    assert set(np.unique(table[list(BEHAVIOURS)].to_numpy())) <= {0, 1}


def test_videos_open_with_the_right_frame_count_size_and_fps(videos: list[dict]) -> None:
    for video in videos:
        capture = cv2.VideoCapture(str(video["video"]))
        assert capture.isOpened(), video["video"]
        assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == N_FRAMES
        assert int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)) == SIZE
        assert int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == SIZE
        assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(FPS, abs=0.01)
        ok, frame = capture.read()
        assert ok and frame.shape == (SIZE, SIZE, 3)
        capture.release()


def test_frames_decode_to_the_full_length(pixels: pd.DataFrame) -> None:
    # The pixel fixture decodes every video to its end; sampled frames cover all videos and states.
    assert len(pixels) > 0.8 * N_VIDEOS * N_FRAMES / FRAME_STEP
    assert set(pixels["state"]) == set(STATES)


def test_mouse_is_dark_on_a_bright_floor(pixels: pd.DataFrame) -> None:
    assert pixels["mouse"].median() < 70
    assert pixels["mouse"].max() < 130
    assert pixels["floor"].min() > 150
    assert (pixels["floor"] - pixels["mouse"]).min() > 60


def test_videos_differ_in_lighting(videos: list[dict]) -> None:
    brightness = []
    for video in videos:
        capture = cv2.VideoCapture(str(video["video"]))
        ok, frame = capture.read()
        capture.release()
        assert ok
        brightness.append(float(frame.mean()))
    assert max(brightness) - min(brightness) > 2.0


# ------------------------------------------------------------------ determinism and arguments


def _small(out: Path, seed: int) -> Path:
    return generate(out, n_videos=2, n_frames=300, seed=seed, n_test=1, size=96)


def _file_bytes(manifest_path: Path) -> dict[str, bytes]:
    root = manifest_path.parent
    return {
        str(path.relative_to(root)): path.read_bytes()
        for folder in ("poses", "labels", "videos")
        for path in sorted((root / folder).iterdir())
    }


def test_same_seed_gives_identical_files_and_another_seed_does_not(tmp_path: Path) -> None:
    first = _file_bytes(_small(tmp_path / "a", seed=3))
    again = _file_bytes(_small(tmp_path / "b", seed=3))
    other = _file_bytes(_small(tmp_path / "c", seed=4))
    kinds = (("poses", "csv"), ("labels", "csv"), ("videos", "mp4"))
    assert set(first) == {f"{folder}/ofs0{i}.{ext}" for folder, ext in kinds for i in (1, 2)}
    for name in first:
        assert first[name] == again[name], name
        if not name.startswith("videos/"):
            assert first[name] != other[name], name
    # Within one dataset the videos differ from each other, too.
    assert first["poses/ofs01.csv"] != first["poses/ofs02.csv"]


def test_regenerating_into_the_same_folder_overwrites_with_the_same_files(tmp_path: Path) -> None:
    manifest_path = _small(tmp_path, seed=5)
    before = _file_bytes(manifest_path)
    manifest_path.write_text("stale: true\n")
    assert _small(tmp_path, seed=5) == manifest_path
    assert _file_bytes(manifest_path) == before
    assert yaml.safe_load(manifest_path.read_text())["synthetic"]["seed"] == 5
    assert not list(tmp_path.rglob("*partial*"))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n_videos": 1, "n_test": 1}, "n_videos"),
        ({"n_test": 0}, "n_test"),
        ({"n_test": 6}, "n_test"),
        ({"n_frames": 299}, "n_frames"),
        ({"size": 95}, "size"),
        ({"seed": -1}, "seed"),
        ({"fps": 0}, "fps"),
        ({"n_videos": 2.5}, "n_videos"),
    ],
)
def test_invalid_arguments_raise_config_error(tmp_path: Path, kwargs: dict, name: str) -> None:
    out = tmp_path / "never"
    with pytest.raises(ConfigError, match=name) as info:
        generate(out, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert f"got {kwargs[name]!r}" in message
    assert not out.exists(), "nothing may be written for invalid arguments"


def test_out_dir_that_is_a_file_raises_config_error(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(ConfigError, match="out_dir"):
        _small(target, seed=0)


# ------------------------------------------------------------------ label statistics


def test_behaviours_never_overlap(videos: list[dict]) -> None:
    for video in videos:
        assert video["labels"].sum(axis=1).max() <= 1, video["id"]


def test_every_video_has_every_behaviour(videos: list[dict]) -> None:
    for video in videos:
        for column, behaviour in enumerate(BOUT_BEHAVIOURS):
            assert len(_bouts(video["labels"][:, column])) >= 1, (video["id"], behaviour)


@pytest.mark.parametrize("behaviour", BOUT_BEHAVIOURS)
def test_positive_rate_and_bout_length_match_the_reference(videos: list[dict], behaviour: str) -> None:
    column = BOUT_BEHAVIOURS.index(behaviour)
    labels = np.concatenate([video["labels"][:, column] for video in videos])
    bouts = np.concatenate([_bouts(video["labels"][:, column]) for video in videos])
    reference = REFERENCE_MEAN_BOUT_FRAMES[behaviour]
    assert 0.06 <= labels.mean() <= 0.20
    assert abs(bouts.mean() - reference) <= 0.35 * reference, (bouts.mean(), reference)


# ------------------------------------------------------------------ behaviours differ in pose and pixels


def _good(pose: np.ndarray, *parts: str) -> np.ndarray:
    return np.all([pose[:, PART[p], 2] > 0.6 for p in parts], axis=0)


def _per_state(videos: list[dict], measure) -> dict[str, np.ndarray]:
    """Concatenate a per-frame measure (NaN where not measurable) over videos, split by state."""
    values = np.concatenate([measure(video) for video in videos])
    states = np.concatenate([video["state"] for video in videos])
    return {name: values[(states == i) & np.isfinite(values)] for i, name in enumerate(STATES)}


def test_body_is_shorter_when_grooming_or_rearing(videos: list[dict]) -> None:
    def snout_to_tailbase(video: dict) -> np.ndarray:
        pose = video["pose"]
        length = np.linalg.norm(pose[:, PART["snout"], :2] - pose[:, PART["tailbase"], :2], axis=1)
        return np.where(_good(pose, "snout", "tailbase"), length, np.nan)

    length = _per_state(videos, snout_to_tailbase)
    walking = length["walking"].mean()
    assert 0.85 * BODY < walking < 1.1 * BODY
    for behaviour in BOUT_BEHAVIOURS:
        assert length[behaviour].mean() < 0.85 * walking, behaviour
    assert length["mid_rearing"].mean() < length["grooming"].mean()


def test_mouse_stays_put_while_grooming(videos: list[dict]) -> None:
    def centre_speed(video: dict) -> np.ndarray:
        pose, state = video["pose"], video["state"]
        step = np.linalg.norm(np.diff(pose[:, PART["midbody"], :2], axis=0), axis=1)
        ok = _good(pose, "midbody")
        same = (state[1:] == state[:-1]) & ok[1:] & ok[:-1]
        return np.concatenate([[np.nan], np.where(same, step, np.nan)])

    speed = _per_state(videos, centre_speed)
    assert speed["walking"].mean() > 0.04 * BODY
    assert speed["grooming"].mean() < 0.4 * speed["walking"].mean()


def test_wall_rearing_happens_at_a_wall_facing_it(videos: list[dict]) -> None:
    def snout_and_midbody_wall_distance(video: dict) -> np.ndarray:
        pose = video["pose"]
        both = ARENA.wall_distance(pose[:, [PART["snout"], PART["midbody"]], :2])
        return np.where(_good(pose, "snout", "midbody")[:, None], both, np.nan)

    distances = np.concatenate([snout_and_midbody_wall_distance(v) for v in videos])
    states = np.concatenate([v["state"] for v in videos])
    rearing = distances[(states == STATES.index("wall_rearing")) & np.isfinite(distances[:, 0])]
    snout, midbody = rearing[:, 0], rearing[:, 1]
    assert len(rearing) > 100
    assert np.percentile(np.abs(snout), 95) < 0.25 * BODY
    assert np.all(snout < midbody)


def test_mid_rearing_happens_away_from_the_walls(videos: list[dict]) -> None:
    def midbody_wall_distance(video: dict) -> np.ndarray:
        pose = video["pose"]
        return np.where(_good(pose, "midbody"), ARENA.wall_distance(pose[:, PART["midbody"], :2]), np.nan)

    distance = _per_state(videos, midbody_wall_distance)
    assert len(distance["mid_rearing"]) > 100
    assert distance["mid_rearing"].min() > 0.9 * BODY
    # Walking does reach the walls: wall distance alone does not give mid rearing away.
    assert distance["walking"].min() < 0.7 * BODY


def test_pose_has_short_realistic_tracking_failures(videos: list[dict]) -> None:
    likelihood = np.concatenate([video["pose"][..., 2] for video in videos])
    assert np.mean(likelihood >= 0.9) > 0.85
    assert 0.005 < np.mean(likelihood < 0.3) < 0.08
    # Forepaws fail more often while the mouse rears than while it walks.
    states = np.concatenate([video["state"] for video in videos])
    paws = likelihood[:, [PART["leftforepaw"], PART["rightforepaw"]]] < 0.3
    rearing = np.isin(states, [STATES.index("mid_rearing"), STATES.index("wall_rearing")])
    assert paws[rearing].mean() > 2 * paws[states == 0].mean()


def test_body_blob_is_rounder_when_grooming_or_rearing(pixels: pd.DataFrame) -> None:
    elongation = pixels.dropna().groupby("state")["elongation"].median()
    walking = elongation["walking"]
    assert walking > 2.2
    for behaviour in BOUT_BEHAVIOURS:
        assert elongation[behaviour] < 0.8 * walking, (behaviour, elongation.to_dict())


# ------------------------------------------------------------------ unlabelled distractors


def _runs(mask: np.ndarray, least: int) -> list[tuple[int, int]]:
    """(start, stop) of the runs of True at least `least` frames long."""
    edges = np.diff(np.concatenate([[0], mask.astype(int), [0]]))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return [(a, b) for a, b in zip(starts, stops) if b - a >= least]


def _tracked_xy(pose: np.ndarray) -> np.ndarray:
    """(n, parts, 2) positions, NaN where the likelihood is 0.6 or less."""
    return np.where(pose[..., 2:] > 0.6, pose[..., :2], np.nan)


def test_unlabelled_stretches_shorten_the_body_in_the_open_and_at_walls(videos: list[dict]) -> None:
    """A short body is not a rear by itself: unlabelled stretches shorten it too, with the forepaws
    drawn in, both in the open middle and facing walls."""
    in_open = at_wall = 0
    tucked, walking_paws = [], []
    for video in videos:
        xy, free = _tracked_xy(video["pose"]), video["state"] == 0
        body = xy[:, PART["snout"]] - xy[:, PART["tailbase"]]
        length = pd.Series(np.linalg.norm(body, axis=1)).rolling(3, center=True).median().to_numpy()
        walking = np.nanmedian(length[free])
        paws = np.linalg.norm(xy[:, PART["leftforepaw"]] - xy[:, PART["rightforepaw"]], axis=1)
        walking_paws.append(paws[free])
        open_short = free & (length < 0.8 * walking) & (ARENA.wall_distance(xy[:, PART["midbody"]]) > BODY)
        for start, stop in _runs(open_short, 3):
            in_open += 1
            tucked.append(paws[start:stop])
        # Facing a wall the body shortens less, in a wall rear as in a stretch (a walking mouse
        # that merely stops there hunches to about 0.94 of its length).
        at_the_wall = ARENA.wall_distance(xy[:, PART["snout"]]) < 0.3 * BODY
        wall_short = free & (length < 0.88 * walking) & at_the_wall
        at_wall += len(_runs(wall_short, 3))
    assert in_open >= N_VIDEOS // 2, in_open
    assert at_wall >= N_VIDEOS // 2, at_wall
    assert np.nanmean(np.concatenate(tucked)) < 0.8 * np.nanmedian(np.concatenate(walking_paws))


def test_unlabelled_pauses_are_still_without_grooming_strokes(videos: list[dict]) -> None:
    """Stillness is not grooming: the videos have unlabelled stops of 2 s or more (midbody within
    0.05 body lengths, heading steady), and in them the forepaws do not stroke as in grooming."""
    window = 2 * FPS
    videos_with_pauses, pause_paws, grooming_paws = 0, [], []
    for video in videos:
        xy, free = _tracked_xy(video["pose"]), video["state"] == 0
        body = xy[:, PART["snout"]] - xy[:, PART["tailbase"]]
        heading = np.arctan2(body[:, 1], body[:, 0])
        still = np.zeros(len(xy), dtype=bool)
        for start in np.flatnonzero(free[: len(xy) - window + 1]):
            span = slice(start, start + window)
            midbody, turn = xy[span, PART["midbody"]], heading[span][np.isfinite(heading[span])]
            if not free[span].all() or np.isnan(midbody[:, 0]).sum() > 3 or len(turn) < window - 3:
                continue
            spread = np.nanmax(np.linalg.norm(midbody - np.nanmedian(midbody, axis=0), axis=1))
            still[span] |= spread < 0.05 * BODY and np.ptp(np.unwrap(turn)) < 0.3
        videos_with_pauses += bool(_runs(still, window))
        # Forepaw movement relative to the midbody, per frame: grooming strokes, pauses do not.
        paws = xy[:, [PART["leftforepaw"], PART["rightforepaw"]]] - xy[:, [PART["midbody"]]]
        step = np.concatenate([[np.nan], np.linalg.norm(np.diff(paws, axis=0), axis=2).mean(axis=1)])
        pause_paws.append(step[still])
        grooming_paws.append(step[video["state"] == STATES.index("grooming")])
    # Pauses last 1-4 s and each video has a few; allow one video whose pauses all fell short.
    assert videos_with_pauses >= N_VIDEOS - 1, videos_with_pauses
    assert np.nanmean(np.concatenate(pause_paws)) < 0.7 * np.nanmean(np.concatenate(grooming_paws))


# ------------------------------------------------------------------ locomotion: movement only


def test_locomotion_is_labelled_where_the_mouse_walks_and_only_there(videos: list[dict]) -> None:
    walking = np.concatenate([video["locomotion"] for video in videos]).astype(bool)
    bouts = np.concatenate([video["state"] for video in videos]) > 0
    assert 0.15 <= walking.mean() <= 0.6
    assert not (walking & bouts).any()  # never during grooming or rearing

    def centre_speed(video: dict) -> np.ndarray:
        pose = video["pose"]
        step = np.r_[np.nan, np.linalg.norm(np.diff(pose[:, PART["midbody"], :2], axis=0), axis=1)]
        return step * FPS / BODY  # body lengths per second (noisy: pose jitter)

    speed = np.concatenate([centre_speed(video) for video in videos])
    ok = np.isfinite(speed)
    assert np.median(speed[ok & walking]) > 3 * np.median(speed[ok & ~walking & ~bouts])

