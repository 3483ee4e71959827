"""Bad-input matrix: every broken input gives exactly one stderr line
`mbr-bench: error: <file>: <problem>; <fix>`, exit code 2, and a consistent work directory.

Each case goes through the real CLI in process, with the cheapest command that reaches it
(`dataset check`, `embed --backbone pose`, or `run` with the pose backbone and a tiny frame_mlp).
stderr is captured at the file-descriptor level (capfd), so a library that writes there behind
Python's back (FFmpeg inside OpenCV) breaks the one-line rule as it would for a user.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml

# Importing the data package sets OPENCV_FFMPEG_LOGLEVEL before any test writes or opens a video.
import mbr_bench.benchmark.data.video  # noqa: F401
from mbr_bench.benchmark.cli import main
from mbr_bench.core.stores import redact

N_FRAMES = 60
BEHAVIOUR = "rearing"


# ------------------------------------------------------------------------------------------ helpers
def assert_one_error(rc: int, err: str, file: str | Path, *fragments: str) -> str:
    """rc 2 and exactly one stderr line `mbr-bench: error: <file>: <problem>; <fix>` holding `fragments`."""
    assert rc == 2, f"exit code {rc}, stderr: {err!r}"
    lines = err.splitlines()
    assert len(lines) == 1, f"expected exactly one stderr line, got {len(lines)}: {err!r}"
    line = lines[0]
    prefix = f"mbr-bench: error: {file}: "
    assert line.startswith(prefix), f"expected the line to start with {prefix!r}: {line!r}"
    problem, sep, fix = line[len(prefix):].rpartition("; ")
    assert sep and problem.strip() and fix.strip(), f"no '<problem>; <fix>' after the file: {line!r}"
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    return line


def edit_manifest(path: Path, change: Callable[[dict], None]) -> Path:
    manifest = yaml.safe_load(path.read_text())
    change(manifest)
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return path


def edit_lines(path: Path, change: Callable[[list[str]], list[str] | None]) -> Path:
    lines = path.read_text().splitlines()
    lines = change(lines) or lines
    path.write_text("\n".join(lines) + "\n")
    return path


def set_label_column(path: Path, value: Callable[[int], str]) -> None:
    """Replace the last column of every data row of a per-frame labels CSV."""
    edit_lines(path, lambda lines: [lines[0]] + [line.rsplit(",", 1)[0] + "," + value(i)
                                                 for i, line in enumerate(lines[1:])])


def write_avi(path: Path, n_frames: int, size: int = 64) -> Path:
    """An MJPG AVI: its header is written first, so a cut copy still opens and claims every frame."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (size, size))
    for i in range(n_frames):
        frame = np.full((size, size, 3), 235, np.uint8)
        cv2.circle(frame, (size // 2 + (i % 9), size // 2), 6, (30, 30, 30), -1)
        writer.write(frame)
    writer.release()
    return path


def tiny_space(folder: Path) -> Path:
    """A frame_mlp space small enough that a trial takes about a second: bookkeeping, not learning."""
    path = folder / "tiny_space.yaml"
    path.write_text("frame_mlp: {units: 8, n_layers: 1, sequence_length: 30, max_epochs: 2, patience: 1,"
                    " batch_size: 8, learning_rate: {low: 1.0e-3, high: 1.0e-2, log: true}}\n")
    return path


@pytest.fixture
def dataset(tiny_dataset) -> Path:
    """dataset.yaml of 3 labelled videos of N_FRAMES frames (t0, t1 train; t2 test) with DLC poses."""
    return tiny_dataset(n_frames=N_FRAMES)


@pytest.fixture
def cli(capfd):
    """Run the CLI in process: returns (rc, stderr) with stderr read at the fd level."""

    def call(*argv: str | Path) -> tuple[int, str]:
        capfd.readouterr()  # drop what fixtures printed
        rc = main([str(a) for a in argv])
        return rc, capfd.readouterr().err

    return call


def run_argv(manifest: Path, workdir: Path, *extra: str | Path) -> list[str | Path]:
    return ["run", "--study", BEHAVIOUR, "--dataset", manifest, "--workdir", workdir, "--backbones", "pose",
            "--heads", "frame_mlp", "--n-trials", "1", "--search-space", tiny_space(manifest.parent),
            "--no-progress", *extra]


def check_argv(manifest: Path) -> list[str | Path]:
    return ["dataset", "check", manifest]


def embed_argv(manifest: Path, workdir: Path, *extra: str | Path) -> list[str | Path]:
    return ["embed", "--dataset", manifest, "--backbone", "pose", "--workdir", workdir, "--no-progress", *extra]


def files(manifest: Path, video_id: str = "t0") -> tuple[Path, Path, Path]:
    """(video, pose, labels) of a video of the tiny dataset."""
    root = manifest.parent
    return root / "videos" / f"{video_id}.mp4", root / "poses" / f"{video_id}.csv", root / "labels" / f"{video_id}.csv"


# ------------------------------------------------------------------------------ 1-3: broken videos
def _cut_mp4(manifest: Path) -> Path:
    video = files(manifest)[0]
    data = video.read_bytes()
    video.write_bytes(data[: len(data) // 2])  # OpenCV's mp4 writer puts the index (moov) at the end
    return video


def _cut_avi(manifest: Path) -> Path:
    video = write_avi(manifest.parent / "videos" / "t0.avi", N_FRAMES)
    data = video.read_bytes()
    video.write_bytes(data[: len(data) // 2])  # header intact: it claims 60 frames, decodes fewer
    edit_manifest(manifest, lambda m: m["videos"][0].update(video="videos/t0.avi"))
    return video


def _zero_bytes(manifest: Path) -> Path:
    video = files(manifest)[0]
    video.write_bytes(b"")
    return video


def _avi_without_frames(manifest: Path) -> Path:
    video = write_avi(manifest.parent / "videos" / "t0.avi", 0)
    edit_manifest(manifest, lambda m: m["videos"][0].update(video="videos/t0.avi"))
    return video


def _random_bytes(manifest: Path) -> Path:
    video = files(manifest)[0]
    video.write_bytes(np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes())
    return video


def _text_file(manifest: Path) -> Path:
    video = files(manifest)[0]
    video.write_text("this is not a video\n" * 50)
    return video


@pytest.mark.parametrize(
    ("corrupt", "fragments"),
    [
        pytest.param(_cut_mp4, ["cannot be opened as a video", "truncated", "copy it again"], id="1-truncated-mp4"),
        pytest.param(_cut_avi, ["is truncated", "header lists 60 frames", "copy the complete video again"],
                     id="1-truncated-avi-header-intact"),
        pytest.param(_zero_bytes, ["empty (0 bytes)"], id="2-zero-byte-file"),
        pytest.param(_avi_without_frames, ["zero frames"], id="2-container-without-frames"),
        pytest.param(_random_bytes, ["cannot be opened as a video", "ffmpeg -i"], id="3-random-bytes-as-mp4"),
        pytest.param(_text_file, ["cannot be opened as a video", "ffmpeg -i"], id="3-text-file-as-mp4"),
    ],
)
def test_broken_video_in_dataset_check(dataset, cli, corrupt, fragments):
    video = corrupt(dataset)
    assert_one_error(*cli(*check_argv(dataset)), video, *fragments)


def test_truncated_video_while_embedding_frames(dataset, cli, tmp_path, assert_workdir_consistent):
    """An image backbone decodes the cut AVI: the entry it was writing is discarded, not committed."""
    video = _cut_avi(dataset)
    workdir = tmp_path / "work"
    rc, err = cli("embed", "--dataset", dataset, "--backbone", "mobilenet_v2", "--weights", "none",
                  "--videos", "t0", "--batch-size", "16", "--workdir", workdir, "--no-progress")
    assert_one_error(rc, err, video, "video is truncated", "copy the complete video again")
    assert_workdir_consistent(workdir)
    assert not list((workdir / "cache").rglob("*.npy"))


# --------------------------------------------------------------------------- 4: frame-count mismatch
def _drop_last_rows(path: Path, n: int = 5) -> None:
    edit_lines(path, lambda lines: lines[:-n])


@pytest.mark.parametrize(
    ("which", "fragments"),
    [
        pytest.param("pose", ["video 60, pose 55", "one row per video frame"], id="video-vs-pose"),
        pytest.param("labels", ["55 label rows", "60 frames", "one row per video frame"], id="video-vs-labels"),
    ],
)
def test_frame_count_mismatch_in_dataset_check(dataset, cli, which, fragments):
    _, pose, labels = files(dataset)
    target = pose if which == "pose" else labels
    _drop_last_rows(target)
    assert_one_error(*cli(*check_argv(dataset)), target, *fragments)


def test_label_rows_mismatch_in_run(dataset, cli, tmp_path, assert_workdir_consistent):
    labels = files(dataset)[2]
    _drop_last_rows(labels)
    workdir = tmp_path / "work"
    assert_one_error(*cli(*run_argv(dataset, workdir)), labels, "55 label rows", "60 frames")
    assert_workdir_consistent(workdir)


def test_pose_rows_mismatch_in_run(dataset, cli, tmp_path, assert_workdir_consistent):
    pose = files(dataset)[1]
    _drop_last_rows(pose)
    workdir = tmp_path / "work"
    assert_one_error(*cli(*run_argv(dataset, workdir)), pose, "video 60, pose 55")
    assert_workdir_consistent(workdir)


# ------------------------------------------------------------------------ 5-7: DeepLabCut pose files
def _moving(i: int, k: int) -> tuple[str, str, str]:
    """x, y, likelihood of part k in frame i: parts in a line, jittering so the body has a length."""
    return f"{30 + 4 * (1 - k) + (i % 5):.1f}", f"{30 + (i % 3):.1f}", "0.99"


def _dlc_lines(parts=("snout", "midbody", "tailbase"), value=_moving) -> list[str]:
    """A 3-row-header DeepLabCut CSV of N_FRAMES rows, cells from `value(frame, part index)`."""
    lines = [",".join(["scorer"] + ["DLC_tiny"] * 3 * len(parts)),
             ",".join(["bodyparts"] + [p for p in parts for _ in range(3)]),
             ",".join(["coords"] + ["x", "y", "likelihood"] * len(parts))]
    for i in range(N_FRAMES):
        lines.append(",".join([str(i)] + [cell for k in range(len(parts)) for cell in value(i, k)]))
    return lines


@pytest.mark.parametrize(
    ("parts", "command", "fragments"),
    [
        pytest.param(("snout", "tailbase"), "check", ["body part 'midbody' not found", "crop.centre"],
                     id="crop-centre-part-missing-check"),
        pytest.param(("snout", "tailbase"), "run", ["body part 'midbody' not found", "crop.centre"],
                     id="centre-part-missing-run"),
        pytest.param(("snout", "midbody"), "run", ["body part 'tailbase' not found", "pose.heading"],
                     id="heading-part-missing-run"),
    ],
)
def test_dlc_missing_body_part(dataset, cli, tmp_path, assert_workdir_consistent, parts, command, fragments):
    pose = files(dataset)[1]
    pose.write_text("\n".join(_dlc_lines(parts, _moving)) + "\n")
    workdir = tmp_path / "work"
    argv = check_argv(dataset) if command == "check" else run_argv(dataset, workdir)
    assert_one_error(*cli(*argv), pose, *fragments, "available: " + ", ".join(sorted(parts)))
    assert_workdir_consistent(workdir)


def _header_without_scorer(lines: list[str]) -> list[str]:
    return lines[1:]


def _plain_csv_header(lines: list[str]) -> list[str]:
    return ["frame,snout_x,snout_y,midbody_x,midbody_y,tailbase_x,tailbase_y"] + [
        f"{i},1,2,3,4,5,6" for i in range(N_FRAMES)]


def _rows_swapped(lines: list[str]) -> list[str]:
    return [lines[0], lines[2], lines[1], *lines[3:]]


@pytest.mark.parametrize(
    ("change", "command"),
    [
        pytest.param(_header_without_scorer, "check", id="no-scorer-row-check"),
        pytest.param(_plain_csv_header, "check", id="one-row-header-check"),
        pytest.param(_rows_swapped, "check", id="bodyparts-coords-swapped-check"),
        pytest.param(_header_without_scorer, "run", id="no-scorer-row-run"),
    ],
)
def test_dlc_wrong_header(dataset, cli, tmp_path, assert_workdir_consistent, change, command):
    pose = edit_lines(files(dataset)[1], change)
    workdir = tmp_path / "work"
    argv = check_argv(dataset) if command == "check" else run_argv(dataset, workdir)
    assert_one_error(*cli(*argv), pose, "not a DeepLabCut header", "'scorer', 'bodyparts', 'coords'")
    assert_workdir_consistent(workdir)


@pytest.mark.parametrize(
    ("value", "command"),
    [
        pytest.param(lambda i, k: ("", "", ""), "check", id="all-nan-check"),
        pytest.param(lambda i, k: ("nan", "nan", "nan"), "run", id="all-nan-run"),
        pytest.param(lambda i, k: (f"{30 + i % 5}", "30", "0.0"), "check", id="likelihood-zero-check"),
        pytest.param(lambda i, k: (f"{30 + i % 5}", "30", "0.0"), "run", id="likelihood-zero-run"),
    ],
)
def test_all_nan_pose(dataset, cli, tmp_path, assert_workdir_consistent, value, command):
    pose = files(dataset)[1]
    pose.write_text("\n".join(_dlc_lines(value=value)) + "\n")
    workdir = tmp_path / "work"
    argv = check_argv(dataset) if command == "check" else run_argv(dataset, workdir)
    assert_one_error(*cli(*argv), pose, "body part 'midbody' is all-NaN / below likelihood", "min_likelihood")
    assert_workdir_consistent(workdir)


# ------------------------------------------------------------------------------------- 8-9: labels
@pytest.mark.parametrize(
    ("bad", "command", "fragments"),
    [
        pytest.param("2", "check", ["values other than 0/1", "'2'", "use 0 or 1 per frame"], id="two-check"),
        pytest.param("0.5", "check", ["values other than 0/1", "'0.5'"], id="half-check"),
        pytest.param("yes", "check", ["values other than 0/1", "'yes'"], id="yes-check"),
        pytest.param("", "check", ["empty/NaN value", "every frame needs 0 or 1"], id="empty-cell-check"),
        pytest.param("2", "run", ["values other than 0/1", "'2'"], id="two-run"),
    ],
)
def test_label_values_other_than_0_1(dataset, cli, tmp_path, assert_workdir_consistent, bad, command, fragments):
    labels = files(dataset)[2]
    set_label_column(labels, lambda i: bad if i == 9 else str(int(5 <= i < 15)))
    workdir = tmp_path / "work"
    argv = check_argv(dataset) if command == "check" else run_argv(dataset, workdir)
    line = assert_one_error(*cli(*argv), labels, *fragments)
    assert "frame 9" in line and "line 11" in line
    assert_workdir_consistent(workdir)


@pytest.mark.parametrize(
    ("header", "command", "has"),
    [
        pytest.param("frame,grooming", "check", "grooming", id="renamed-column-check"),
        pytest.param("frame,Rearing", "check", "Rearing", id="wrong-case-column-check"),
        pytest.param("frame,grooming", "run", "grooming", id="renamed-column-run"),
        pytest.param("frame", "check", "none", id="only-frame-column-check"),
    ],
)
def test_missing_behaviour_column(dataset, cli, tmp_path, assert_workdir_consistent, header, command, has):
    labels = files(dataset)[2]
    if header == "frame":
        edit_lines(labels, lambda lines: [line.split(",")[0] for line in lines])
    else:
        edit_lines(labels, lambda lines: [header, *lines[1:]])
    workdir = tmp_path / "work"
    argv = check_argv(dataset) if command == "check" else run_argv(dataset, workdir)
    assert_one_error(*cli(*argv), labels, f"behaviour '{BEHAVIOUR}' not found", f"the file has: {has}",
                     "fix `behaviours` in dataset.yaml or the column name")
    assert_workdir_consistent(workdir)


# ------------------------------------------------------------------ 10: a fold with no positive frame
@pytest.fixture
def empty_fold_dataset(tiny_dataset) -> Path:
    """3 train videos (t0, t1, t2) and a test one (t3); t2's labels have no positive frame."""
    manifest = tiny_dataset(n_frames=N_FRAMES, split=("train", "train", "train", "test"))
    set_label_column(files(manifest, "t2")[2], lambda i: "0")
    return manifest


def test_training_video_without_positive_frame_is_an_error(empty_fold_dataset, cli, tmp_path,
                                                           assert_workdir_consistent):
    workdir = tmp_path / "work"
    labels = files(empty_fold_dataset, "t2")[2]
    line = assert_one_error(*cli(*run_argv(empty_fold_dataset, workdir)), labels,
                            "video 't2'", f"no '{BEHAVIOUR}' frame", "--allow-empty-folds")
    assert line == (
        f"mbr-bench: error: {labels}: video 't2' has no '{BEHAVIOUR}' frame, so its leave-one-video-out fold "
        "cannot be scored; label that behaviour in it, move it to split: test, or pass --allow-empty-folds"
    )
    assert_workdir_consistent(workdir)


@pytest.mark.slow
def test_allow_empty_folds_leaves_the_fold_out_with_a_warning(empty_fold_dataset, cli, tmp_path,
                                                              assert_workdir_consistent):
    workdir = tmp_path / "work"
    argv = [a for a in run_argv(empty_fold_dataset, workdir) if a != "--no-progress"]
    rc, err = cli(*argv, "--allow-empty-folds")
    assert rc == 0, err
    warnings = [line for line in err.splitlines() if "warning:" in line]
    assert len(warnings) == 1, err
    assert "'t2'" in warnings[0] and "left out" in warnings[0] and BEHAVIOUR in warnings[0]
    assert "mbr-bench: error" not in err
    assert_workdir_consistent(workdir)


# ------------------------------------------------------------------------- 11 and more: the manifest
def _duplicate_id(m: dict) -> None:
    m["videos"][1]["id"] = "t0"


def _fps(value) -> Callable[[dict], None]:
    return lambda m: m["videos"][0].update(fps=value)


def _missing(key: str, path: str) -> Callable[[dict], None]:
    return lambda m: m["videos"][0].update({key: path})


@pytest.mark.parametrize(
    ("change", "fragments"),
    [
        pytest.param(_duplicate_id, ["duplicate video id 't0'", "unique id"], id="11-duplicate-video-id"),
        pytest.param(_fps(0), ["fps 0", "positive number"], id="fps-zero"),
        pytest.param(_fps(-5), ["fps -5", "positive number"], id="fps-negative"),
        pytest.param(_missing("labels", "labels/nope.csv"), ["labels file not found", "labels/nope.csv"], id="labels-file-missing"),
        pytest.param(_missing("pose", "poses/nope.csv"), ["pose file not found", "poses/nope.csv"], id="pose-file-missing"),
        pytest.param(lambda m: m["videos"][2].update(split="train"), ["no labelled test video", "split: test"],
                     id="no-test-video"),
        pytest.param(lambda m: m["videos"][0].update(split="validation"), ["split 'validation'"],
                     id="unknown-split"),
        pytest.param(lambda m: m.update(pose={"heading": {"back": "tailbase"}}), ["pose.heading is {'back'", "two body parts"],
                     id="heading-a-mapping"),
        pytest.param(lambda m: m.update(pose={"individual": ["mouse1"]}), ["pose.individual is ['mouse1'], not a name"],
                     id="individual-a-list"),
        pytest.param(lambda m: m["videos"][0].update(id={"a": 1}), ["id is {'a': 1}, not a name"], id="id-a-mapping"),
    ],
)
def test_bad_manifest(dataset, cli, change, fragments):
    edit_manifest(dataset, change)
    assert_one_error(*cli(*check_argv(dataset)), dataset, *fragments)


def test_manifest_yaml_syntax_error_and_absent_manifest(dataset, cli, tmp_path):
    dataset.write_text("videos: [\n  {id: t0\n")
    assert_one_error(*cli(*check_argv(dataset)), dataset, "not valid YAML", "fix the syntax")
    absent = tmp_path / "elsewhere" / "dataset.yaml"
    assert_one_error(*cli(*check_argv(absent)), absent, "dataset manifest not found")


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        pytest.param("", ["labels file is empty"], id="empty-file"),
        pytest.param("frame,rearing\n", ["header but no rows"], id="header-only"),
    ],
)
def test_empty_labels_file(dataset, cli, content, fragments):
    labels = files(dataset)[2]
    labels.write_text(content)
    assert_one_error(*cli(*check_argv(dataset)), labels, *fragments)


# ---------------------------------------------------------------------------- 12: search-space files
@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        pytest.param("frame_mlp: {units: [8, 16\n", ["not valid YAML at line 2", "fix the syntax"],
                     id="yaml-syntax-error"),
        pytest.param("frame_mlp:\n  units: 8\n  units: 16\n", ["key 'units' appears twice"], id="duplicate-key"),
        pytest.param("frame_mlp: {learning_rate: {low: 1.0e-4, high: 1.0e-2, distribution: loguniform}}\n",
                     ["parameter 'learning_rate' has unknown key(s) ['distribution']"], id="unknown-range-key"),
        pytest.param("frame_mlp: {units: {uniform: [8, 16]}}\n", ["parameter 'units'", "neither choices nor"],
                     id="unknown-distribution"),
        pytest.param("frame_mlp: {hidden_units: {choices: [8, 16]}}\n",
                     ["'hidden_units' is not a parameter of head 'frame_mlp'"], id="unknown-parameter"),
        pytest.param("frame_mlp: {learning_rate: {low: 0.1, high: 0.01}}\n", ["low 0.1 >= high 0.01"],
                     id="low-above-high"),
        pytest.param("lstm: {units: {choices: [8]}}\n", ["no search space for head 'frame_mlp'"],
                     id="no-section-for-the-head"),
        pytest.param("frame_mlp: {units: 8, n_layers: 0, learning_rate: {low: 1.0e-3, high: 1.0e-2}}\n",
                     ["head frame_mlp: n_layers must be an integer >= 1, got 0", "1 or more"],
                     id="invalid-fixed-value"),
        pytest.param("frame_mlp: {units: 8, dropout: {low: 0.0, high: 1.5}}\n",
                     ["head frame_mlp: dropout must be a number in [0.0, 1.0), got 1.5"], id="range-reaching-invalid"),
    ],
)
def test_bad_search_space(dataset, cli, tmp_path, assert_workdir_consistent, text, fragments):
    space = tmp_path / "space.yaml"
    space.write_text(text)
    workdir = tmp_path / "work"
    argv = [*run_argv(dataset, workdir)[:-1], "--search-space", space, "--no-progress"]
    assert_one_error(*cli(*argv), space, *fragments)
    assert_workdir_consistent(workdir)
    assert not (workdir / "cache").exists()  # refused before any embedding


def test_absent_search_space(dataset, cli, tmp_path):
    space = tmp_path / "nope.yaml"
    argv = [*run_argv(dataset, tmp_path / "work")[:-1], "--search-space", space, "--no-progress"]
    assert_one_error(*cli(*argv), space, "search space file not found")


# --------------------------------------------------------------------- 13: unknown component names
@pytest.mark.parametrize(
    ("option", "kind"),
    [
        pytest.param("--backbones", "backbone", id="run-backbone"),
        pytest.param("--heads", "head", id="run-head"),
        pytest.param("--study", "behaviour", id="run-behaviour"),
        pytest.param("--backbone", "backbone", id="embed-backbone"),
    ],
)
def test_unknown_names(dataset, cli, tmp_path, assert_workdir_consistent, option, kind):
    workdir = tmp_path / "work"
    if option == "--backbone":
        argv = embed_argv(dataset, workdir)
        argv[argv.index("--backbone") + 1] = "nope"
    else:
        argv = run_argv(dataset, workdir)
        argv[argv.index(option) + 1] = "nope"
    assert_one_error(*cli(*argv), f"{option} nope", f"unknown {kind} 'nope'", "known:")
    assert_workdir_consistent(workdir)
    assert not (workdir / "cache").exists()


# ---------------------------------------------------------------------------------- 14: storage URLs
@pytest.fixture
def engines(monkeypatch) -> list[dict]:
    """Every engine built through SQLAlchemy's `create_engine` while the test runs (Optuna's and MLflow's
    spellings both): its URL, keyword arguments, and how many DBAPI connections it then tried to open."""
    import sqlalchemy
    import sqlalchemy.engine

    built: list[dict] = []
    real = sqlalchemy.engine.create_engine

    def create_engine(url, *args, **kwargs):
        text = url if isinstance(url, str) else url.render_as_string(hide_password=False)
        record = {"url": text, "kwargs": kwargs, "attempts": 0}
        built.append(record)
        engine = real(url, *args, **kwargs)  # a bad URL raises here, after being logged

        @sqlalchemy.event.listens_for(engine, "do_connect")
        def attempt(*_):  # before each DBAPI connect() call, retries included
            record["attempts"] += 1

        return engine

    monkeypatch.setattr(sqlalchemy, "create_engine", create_engine)
    monkeypatch.setattr(sqlalchemy.engine, "create_engine", create_engine)
    return built


@pytest.mark.parametrize(
    ("url", "attempts"),
    [
        pytest.param("notaurl", 0, id="not-a-url"),
        pytest.param("postgresql://u:s3cret@127.0.0.1:1/db", 1, id="postgres-unreachable"),
        pytest.param("sqlite:///{blocker}/optuna.db", 0, id="sqlite-under-a-regular-file"),
    ],
)
def test_bad_storage_url_fails_fast(dataset, cli, tmp_path, assert_workdir_consistent, engines, url, attempts):
    blocker = tmp_path / "blocker"
    blocker.write_text("a regular file\n")
    url = url.format(blocker=blocker)
    workdir = tmp_path / "work"
    rc, err = cli(*run_argv(dataset, workdir, "--storage", url))
    assert_one_error(rc, err, f"--storage {redact(url)}", "cannot open the Optuna storage")
    assert "s3cret" not in err  # a password never reaches a log
    # Fast, by construction rather than by the clock: at most one engine for the URL, exactly the expected
    # connection attempts (none where no database can be reached, one for a server: no retry loop), and a
    # server's single attempt bounded by a connect timeout, for a host that never answers.
    storage = [engine for engine in engines if engine["url"] == url]
    assert len(storage) <= 1, storage
    assert sum(engine["attempts"] for engine in storage) == attempts, storage
    if url.startswith("postgresql"):
        assert 0 < storage[0]["kwargs"]["connect_args"]["connect_timeout"] <= 10, storage
    assert_workdir_consistent(workdir)
    assert not (workdir / "cache").exists()  # refused before any embedding


def test_bad_tracking_uri(dataset, cli, tmp_path, assert_workdir_consistent):
    workdir = tmp_path / "work"
    assert_one_error(*cli(*run_argv(dataset, workdir, "--tracking-uri", "notaurl")), "--tracking-uri notaurl")
    assert_workdir_consistent(workdir)


# ----------------------------------------------------------------------- 15: unusable work directory
@pytest.mark.parametrize("command", ["run", "embed"])
@pytest.mark.parametrize("where", ["under-a-file", "is-a-file"])
def test_unwritable_workdir(dataset, cli, tmp_path, command, where):
    blocker = tmp_path / "blocker"
    blocker.write_text("a regular file\n")
    workdir = blocker / "work" if where == "under-a-file" else blocker
    if command == "run":
        assert_one_error(*cli(*run_argv(dataset, workdir)), workdir, "cannot create the work directory",
                         "writable --workdir")
    else:
        assert_one_error(*cli(*embed_argv(dataset, workdir)), workdir / "cache", "embedding cache",
                         "--cache-dir")
    assert blocker.read_text() == "a regular file\n"


def test_unknown_video_id_for_embed(dataset, cli, tmp_path):
    workdir = tmp_path / "work"
    assert_one_error(*cli(*embed_argv(dataset, workdir, "--videos", "t9")), dataset.resolve(),
                     "no video with id 't9'", "known: t0, t1, t2")


# --------------------------------------------------------------------- 16: disk full in the cache
def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _full_at_allocation(monkeypatch) -> None:
    monkeypatch.setattr(np.lib.format, "open_memmap", _enospc)


def _full_at_fsync(monkeypatch) -> None:
    monkeypatch.setattr(os, "fsync", _enospc)


def _full_at_record(monkeypatch) -> None:
    # The commit record (.json) is written last, through core.files.write_atomic.
    real = Path.write_bytes

    def write_bytes(self, data):
        if self.suffix == ".json" and ".partial" in self.name:
            _enospc()
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)


@pytest.mark.parametrize(
    "fill",
    [
        pytest.param(_full_at_allocation, id="allocating-the-array"),
        pytest.param(_full_at_fsync, id="flushing-the-array"),
        pytest.param(_full_at_record, id="writing-the-commit-record"),
    ],
)
def test_disk_full_while_writing_the_cache(dataset, cli, tmp_path, monkeypatch, assert_workdir_consistent, fill):
    workdir = tmp_path / "work"
    with monkeypatch.context() as patch:
        fill(patch)
        rc, err = cli(*embed_argv(dataset, workdir, "--videos", "t0"))
    assert_one_error(rc, err, workdir / "cache", "disk full", "free space")
    assert_workdir_consistent(workdir)
    # With space again the same command fills the cache.
    rc, err = cli(*embed_argv(dataset, workdir, "--videos", "t0"))
    assert rc == 0, err
    assert_workdir_consistent(workdir)
    assert len(list((workdir / "cache").rglob("*.npy"))) == 1


# ------------------------------------------------------------------ 17 and more: a real lab's files
def _cp1252_comment(path: Path) -> None:
    path.write_bytes(path.read_bytes() + "# Käfig 3, 21 °C\n".encode("cp1252"))


def _cp1252_header(path: Path) -> None:
    path.write_bytes(path.read_bytes().replace(b"frame", "Bild°".encode("cp1252"), 1))


def _spreadsheet(path: Path) -> None:
    path.write_bytes(b"PK\x03\x04\x14\x00\x06\x00" + bytes(range(256)))  # what an .xlsx starts with


def _old_excel(path: Path) -> None:
    path.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(64))


def _binary(path: Path) -> None:
    path.write_bytes(bytes(range(256)) * 4)


def _folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


@pytest.mark.parametrize(
    ("which", "spoil", "fragments"),
    [
        pytest.param("manifest", _cp1252_comment, ["not UTF-8 text", "line", "save it as UTF-8"], id="cp1252-manifest"),
        pytest.param("labels", _cp1252_header, ["not UTF-8 text", "byte 0xb0 on line 1", "iconv"], id="cp1252-labels"),
        pytest.param("labels", _spreadsheet, ["spreadsheet", "export it as CSV"], id="xlsx-labels"),
        pytest.param("labels", _old_excel, ["old Excel spreadsheet", "export it as CSV"], id="xls-labels"),
        pytest.param("pose", _binary, ["binary data, not a text pose file", "CSV export"], id="binary-pose"),
        pytest.param("pose", _folder, ["is a folder, not a pose file", "pose path"], id="folder-as-pose"),
        pytest.param("labels", _folder, ["is a folder, not a labels file", "labels path"], id="folder-as-labels"),
    ],
)
def test_everyday_file_mistakes(dataset, cli, which, spoil, fragments):
    path = dataset if which == "manifest" else files(dataset)[1 if which == "pose" else 2]
    spoil(path)
    assert_one_error(*cli(*check_argv(dataset)), path, *fragments)


def test_a_manifest_name_that_is_a_yaml_alias_bomb(dataset, cli):
    """Nine levels of nine aliases: 387 million strings if anything expanded or printed them."""
    levels = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    text = "".join(line for line in dataset.read_text().splitlines(keepends=True) if not line.startswith("name:"))
    dataset.write_text("name: {" + ", ".join(levels) + "}\n" + text)
    line = assert_one_error(*cli(*check_argv(dataset)), dataset, "name is {", "not a name", "plain string")
    assert len(line) < len(str(dataset)) + 200, line


@pytest.mark.parametrize("argv", [["run", "--timeout", "abc"], ["leaderboard"], ["predict", "--model"]],
                         ids=["bad-number", "missing-option", "option-without-value"])
def test_a_usage_mistake_is_one_line(capfd, argv):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capfd.readouterr().err
    assert stop.value.code == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"mbr-bench {argv[0]}: error: ") and f"see `mbr-bench {argv[0]} --help`" in err


@pytest.mark.parametrize("command", [["leaderboard", "--study", BEHAVIOUR], ["ui"]])
def test_a_mistyped_workdir_is_refused_and_not_created(cli, tmp_path, command):
    typo = tmp_path / "mbr-wrok"
    assert_one_error(*cli(*command, "--workdir", typo), typo, "no such work directory", "--workdir that")
    assert not typo.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_error(*cli(*command, "--workdir", empty), empty, "no mlflow.db here", "--workdir that")
    assert list(empty.iterdir()) == []


def test_ui_on_a_taken_port_fails_before_starting_mlflow(cli, tmp_path):
    import socket

    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / "mlflow.db").touch()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert_one_error(*cli("ui", "--workdir", workdir, "--port", port), f"--port {port}", "already in use",
                         "another --port")


def test_progress_lines_never_show_a_password():
    import io

    from mbr_bench.benchmark.progress import SearchProgress

    stream = io.StringIO()
    progress = SearchProgress(stream=stream)
    progress.message("study rearing/pose+tcn: 0 finished in postgresql+psycopg://mbr:s3cr@t:pw@db:5432/optuna")
    progress.warn("cannot reach postgresql://mbr:other@db/optuna")
    text = stream.getvalue()
    assert "s3cr" not in text and "other" not in text and "pw@" not in text
    assert "postgresql+psycopg://mbr:***@db:5432/optuna" in text and "postgresql://mbr:***@db/optuna" in text


@pytest.fixture
def small_filesystem(tmp_path):
    """A 32 KiB tmpfs: a disk that is really full, where this machine lets the tests mount one (root)."""
    import shutil
    import subprocess

    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_really_full_disk_is_one_line_not_a_bus_error(dataset, tmp_path, small_filesystem):
    """A write through a memory map onto a full disk is SIGBUS (exit 135, nothing printed) unless the
    file's blocks are reserved first. In a child process: a bus error would kill pytest itself."""
    import subprocess
    import sys

    cache = small_filesystem / "cache"
    argv = [str(a) for a in embed_argv(dataset, tmp_path / "work", "--videos", "t0", "--cache-dir", cache)]
    done = subprocess.run([sys.executable, "-m", "mbr_bench.benchmark.cli", *argv], capture_output=True, text=True,
                          timeout=300)
    assert_one_error(done.returncode, done.stderr, cache, "disk full", "free space")
    left = [p.name for p in cache.rglob("*") if p.is_file() and not p.name.endswith(".lock")]
    assert left == [], left


@pytest.mark.parametrize("lost", ["mlflow.db", "optuna.db"])
def test_stores_that_disagree_are_named_before_any_work(dataset, cli, tmp_path, lost):
    """One store deleted between two runs. The second run is a new process, as it is for a user:
    MLflow keeps the engines of stores it opened, and a deleted SQLite file under them reads as read-only."""
    import subprocess
    import sys

    workdir = tmp_path / "work"
    rc, err = cli(*run_argv(dataset, workdir))
    assert rc == 0, err
    (workdir / lost).unlink()
    done = subprocess.run([sys.executable, "-m", "mbr_bench.benchmark.cli", *map(str, run_argv(dataset, workdir))],
                          capture_output=True, text=True, timeout=300)
    named = "mlflow.db" if lost == "mlflow.db" else "optuna.db"
    assert_one_error(done.returncode, done.stderr, f"sqlite:///{(workdir / named).resolve()}", "the stores disagree",
                     f"{lost} deleted", "afresh")


def test_a_registered_model_without_that_version_names_the_versions(dataset, cli, tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("models"))
    client.create_registered_model("mbr-bench.rearing")
    client.create_model_version("mbr-bench.rearing", f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    video = files(dataset)[0]
    assert_one_error(*cli("predict", "--model", "mbr-bench.rearing/7", "--tracking-uri", uri, video),
                     "--model mbr-bench.rearing/7", "has no version 7; its versions: 1", "alone for the latest")
    assert_one_error(*cli("predict", "--model", "mbr-bench.sniffing", "--tracking-uri", uri, video),
                     "--model mbr-bench.sniffing", "no registered model 'mbr-bench.sniffing'", "refit run id")


# ----------------------------------------------------------------------- predict with a saved model
def _tiny_bundle(manifest: Path, folder: Path) -> Path:
    """A pose model of the tiny dataset, saved as `predict --model FOLDER` reads it (a few seconds)."""
    from mbr_bench.benchmark.backbones import build_backbone
    from mbr_bench.benchmark.bundle import ModelBundle
    from mbr_bench.benchmark.data.manifest import load_dataset
    from mbr_bench.benchmark.features.sequences import sample_weights
    from mbr_bench.benchmark.heads import HEADS
    from mbr_bench.benchmark.postprocess import PostProcess

    data = load_dataset(manifest)
    backbone = build_backbone("pose", data)
    train = data.split("train")[0]
    pose = data.read_pose(train)
    X = backbone.embed_pose(pose, 10.0)
    y = np.zeros(len(X), np.int8)
    y[5:15] = 1
    head = HEADS.build("frame_mlp", units=8, sequence_length=30, max_epochs=2, patience=1, batch_size=8)
    head.fit([X], [y], sample_weights([y]))
    return ModelBundle(behaviour=BEHAVIOUR, backbone="pose", weights="none", backbone_config=backbone.describe(),
                       crop=data.crop, heading=data.heading, individual=None, heads=[head], threshold=0.5,
                       threshold_rule="max_f1", postprocess=PostProcess(), bodyparts=pose.bodyparts,
                       postprocess_fps=10.0).save(folder)


def _edit_bundle(folder: Path, change: Callable[[dict], None]) -> None:
    import json

    spec = json.loads((folder / "bundle.json").read_text())
    change(spec)
    (folder / "bundle.json").write_text(json.dumps(spec))


def _add_led(pose: Path) -> None:
    lines = pose.read_text().splitlines()
    lines[:3] = [lines[0] + ",DLC,DLC,DLC", lines[1] + ",LED,LED,LED", lines[2] + ",x,y,likelihood"]
    pose.write_text("\n".join(lines[:3] + [line + ",5.0,5.0,0.99" for line in lines[3:]]) + "\n")


@pytest.mark.parametrize(
    ("spoil", "blamed", "fragments"),
    [
        pytest.param(lambda d, m, o: _edit_bundle(m, lambda s: s["decision"].update(threshold=float("nan"))),
                     "bundle", ["threshold must be a number in [0, 1], got nan"], id="nan-threshold"),
        pytest.param(lambda d, m, o: _edit_bundle(m, lambda s: s["heads"][0].update(name="tcn")),
                     "bundle", ["names head 'tcn'", "holds a 'frame_mlp' head"], id="head-name-mismatch"),
        pytest.param(lambda d, m, o: _add_led(files(d, "t2")[1]), "pose",
                     ["body parts differ from the rearing model's (extra: LED; missing: none)", "pose.ignore"],
                     id="pose-with-an-extra-part"),
        pytest.param(lambda d, m, o: o.parent.write_text("a file\n"), "out",
                     ["cannot write predictions there", "writable --out"], id="out-under-a-file"),
    ],
)
def test_predict_refuses_before_any_embedding(dataset, cli, tmp_path, spoil, blamed, fragments):
    model = _tiny_bundle(dataset, tmp_path / "model")
    out = tmp_path / "blocker" / "out"
    spoil(dataset, model, out)
    video, pose, _ = files(dataset, "t2")
    workdir = tmp_path / "work"
    blamed_path = {"bundle": model / "bundle.json", "pose": pose, "out": out}[blamed]
    assert_one_error(*cli("predict", "--model", model, video, "--pose", pose, "--out", out, "--workdir", workdir,
                          "--no-progress"), blamed_path, *fragments)
    assert not (workdir / "cache").exists()


def _image_bundle(manifest: Path, folder: Path, animal: dict) -> Path:
    """An untrained-weights mobilenet_v2 model with a recorded mouse size: predict checks the camera
    before it embeds anything, so these weights never run."""
    from mbr_bench.benchmark.backbones import build_backbone
    from mbr_bench.benchmark.bundle import ModelBundle
    from mbr_bench.benchmark.data.manifest import load_dataset
    from mbr_bench.benchmark.features.sequences import sample_weights
    from mbr_bench.benchmark.heads import HEADS
    from mbr_bench.benchmark.postprocess import PostProcess

    data = load_dataset(manifest)
    backbone = build_backbone("mobilenet_v2", data, weights="none")
    X = np.random.default_rng(0).normal(size=(40, 1280)).astype(np.float32)
    y = (np.arange(40) % 10 < 3).astype(np.int8)
    head = HEADS.build("frame_mlp", units=4, sequence_length=20, max_epochs=1, patience=1, batch_size=8)
    head.fit([X], [y], sample_weights([y]))
    return ModelBundle(behaviour=BEHAVIOUR, backbone="mobilenet_v2", weights="none",
                       backbone_config=backbone.describe(), crop=data.crop, heading=data.heading, individual=None,
                       heads=[head], threshold=0.5, threshold_rule="max_f1", postprocess=PostProcess(),
                       animal=animal).save(folder)


def _nan_heading(pose: Path) -> None:
    """Blank the tailbase columns: the mouse's length cannot be measured in this file."""
    lines = pose.read_text().splitlines()
    parts = lines[1].split(",")
    blank = {k for k, part in enumerate(parts) if part == "tailbase"}
    rows = [",".join("" if k in blank else cell for k, cell in enumerate(line.split(","))) for line in lines[3:]]
    pose.write_text("\n".join(lines[:3] + rows) + "\n")


@pytest.mark.parametrize(
    ("animal", "spoil", "fragments"),
    [
        pytest.param({"length_px": 0.5, "measured_by": "pose tailbase->snout", "resolution": [64, 64]}, None,
                     ["the training videos' 0 px, too far to match by scaling crops", "this camera"],
                     id="mouse-far-larger-than-in-training"),
        pytest.param({"length_px": 30.0, "measured_by": "pose tailbase->snout", "resolution": [640, 480]},
                     _nan_heading, ["a 64x64 video, the model's training videos were 640x480", "cannot be measured",
                                    "resize the video to 640x480"], id="unmeasurable-at-another-resolution"),
    ],
)
def test_predict_refuses_a_camera_it_cannot_match(dataset, cli, tmp_path, animal, spoil, fragments):
    model = _image_bundle(dataset, tmp_path / "model", animal)
    video, pose, _ = files(dataset, "t2")
    if spoil is not None:
        spoil(pose)
    workdir = tmp_path / "work"
    assert_one_error(*cli("predict", "--model", model, video, "--pose", pose, "--out", tmp_path / "out",
                          "--workdir", workdir, "--no-progress"), video, *fragments)
    assert not list((workdir / "cache").rglob("*.npy"))
