"""Shared fixtures. `../shared` (real video, DLC pose, offline ImageNet weights) is optional."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MBR_SHARED_DIR", REPO_ROOT.parent / "shared"))

# Keep TensorFlow quiet and deterministic enough for contract tests.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
# Keras reads KERAS_HOME once, at import: point it at the offline ImageNet weights before any test
# imports Keras, where they exist.
if (SHARED / "keras_home" / "models").is_dir():
    os.environ.setdefault("KERAS_HOME", str(SHARED / "keras_home"))
# `mbr-bench run` measures per-frame costs for its estimate once per machine: one calibration file
# for the whole session (shared by the commands tests spawn), not the user's.
os.environ.setdefault("MBR_BENCH_CALIBRATION", str(Path(tempfile.mkdtemp(prefix="mbr-bench-calibration-"))
                                                    / "calibration.json"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent: real-data tests need the shared material beside the checkout")
    return SHARED


@pytest.fixture(scope="session")
def openfield_video(shared_dir: Path) -> Path:
    path = shared_dir / "data" / "openfield" / "m3v1.mp4"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path


@pytest.fixture(scope="session")
def openfield_pose(shared_dir: Path) -> Path:
    path = shared_dir / "data" / "openfield" / "m3v1_dlc.csv"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path


@pytest.fixture(scope="session")
def imagenet_mobilenet_v2() -> Path:
    """The MobileNetV2 ImageNet weights file where Keras will look for it, or skip."""
    from mbr_bench.benchmark.backbones.keras_apps import keras_models_dir

    path = keras_models_dir() / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
    if not path.is_file():
        pytest.skip(f"{path} is absent: no offline ImageNet weights (set KERAS_HOME)")
    return path


def write_tiny_video(path: Path, n_frames: int, size: int = 64, fps: float = 10.0) -> list[tuple[float, float]]:
    """A dark disc wandering on a white floor; returns its centre per frame."""
    import cv2
    import numpy as np

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (size, size))
    centres = []
    for i in range(n_frames):
        frame = np.full((size, size, 3), 235, np.uint8)
        x = size / 2 + size / 4 * np.cos(i / 7)
        y = size / 2 + size / 4 * np.sin(i / 5)
        cv2.circle(frame, (int(round(x)), int(round(y))), max(size // 10, 3), (30, 30, 30), -1)
        writer.write(frame)
        centres.append((x, y))
    writer.release()
    return centres


def write_dlc_csv(path: Path, centres, parts=("snout", "midbody", "tailbase"), scorer="DLC_tiny") -> None:
    """A 3-row-header DeepLabCut CSV whose parts sit in a line through each centre."""
    lines = [
        ",".join(["scorer"] + [scorer] * 3 * len(parts)),
        ",".join(["bodyparts"] + [p for p in parts for _ in range(3)]),
        ",".join(["coords"] + ["x", "y", "likelihood"] * len(parts)),
    ]
    for i, (x, y) in enumerate(centres):
        cells = [str(i)]
        for k in range(len(parts)):
            cells += [f"{x + 4 * (1 - k):.3f}", f"{y:.3f}", "0.99"]
        lines.append(",".join(cells))
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def tiny_dataset(tmp_path: Path):
    """Factory: a labelled 3-video dataset (2 train, 1 test) of `n_frames` frames; returns dataset.yaml."""
    import numpy as np
    import yaml

    def make(n_frames: int = 40, behaviours=("rearing",), split=("train", "train", "test"), labels=True, **overrides):
        for folder in ("videos", "poses", "labels"):
            (tmp_path / folder).mkdir(exist_ok=True)
        videos = []
        for index, video_split in enumerate(split):
            video_id = f"t{index}"
            centres = write_tiny_video(tmp_path / "videos" / f"{video_id}.mp4", n_frames)
            write_dlc_csv(tmp_path / "poses" / f"{video_id}.csv", centres)
            entry = {"id": video_id, "video": f"videos/{video_id}.mp4", "pose": f"poses/{video_id}.csv"}
            if labels:
                y = np.zeros(n_frames, int)
                y[5 + index : 15 + index] = 1
                y[25:28] = 1
                columns = {b: y for b in behaviours}
                header = "frame," + ",".join(columns)
                rows = [",".join([str(i)] + [str(columns[b][i]) for b in columns]) for i in range(n_frames)]
                (tmp_path / "labels" / f"{video_id}.csv").write_text("\n".join([header, *rows]) + "\n")
                entry.update(labels=f"labels/{video_id}.csv", split=video_split)
            videos.append(entry)
        manifest = {
            "name": "tiny",
            "behaviours": list(behaviours),
            "crop": {"mode": "pose", "size": 32, "centre": ["midbody"]},
            "videos": videos,
            **overrides,
        }
        path = tmp_path / "dataset.yaml"
        path.write_text(yaml.safe_dump(manifest, sort_keys=False))
        return path

    return make


class PostgresServer:
    """A throwaway PostgreSQL server on 127.0.0.1 (trust auth, fsync off), for worker tests."""

    def __init__(self, port: int, user: str):
        self.port, self.user = port, user

    def url(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create database `name` (dropping an earlier one) and return its URL."""
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=self.user, dbname="postgres",
                             autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@pytest.fixture(scope="session")
def postgres_server():
    """Start PostgreSQL with initdb/pg_ctl in a temporary folder; stop it after the session."""
    import pwd
    import shutil
    import socket
    import subprocess
    import tempfile

    # Debian keeps the server programs off PATH, in /usr/lib/postgresql/<version>/bin.
    search = os.pathsep.join([os.environ.get("PATH", ""), *map(str, sorted(Path("/usr/lib/postgresql").glob("*/bin")))])
    initdb, pg_ctl = shutil.which("initdb", path=search), shutil.which("pg_ctl", path=search)
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    pytest.importorskip("psycopg", reason="the PostgreSQL driver psycopg is not installed")
    run_as = None
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        try:
            run_as = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server as")
    base = Path(tempfile.mkdtemp(prefix="mbr-pg-"))
    if run_as is not None:
        os.chown(base, run_as.pw_uid, run_as.pw_gid)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    user = "mbr"

    def pg(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=base,
                              user=run_as.pw_uid if run_as else None, group=run_as.pw_gid if run_as else None)

    data = base / "data"
    done = pg(initdb, "-D", str(data), "-U", user, "--auth=trust", "-E", "UTF8", "--no-sync")
    if done.returncode:
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(f"initdb failed: {done.stderr.strip()[-300:]}")
    options = f"-h 127.0.0.1 -p {port} -k {base} -F -c max_connections=300"
    done = pg(pg_ctl, "-D", str(data), "-l", str(base / "server.log"), "-o", options, "-w", "-t", "60", "start")
    if done.returncode:
        log = (base / "server.log").read_text()[-500:] if (base / "server.log").exists() else done.stderr
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(f"PostgreSQL did not start: {log.strip()}")
    try:
        yield PostgresServer(port, user)
    finally:
        pg(pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)


def _workdir_problems(workdir: Path) -> list[str]:
    """What is inconsistent in a work directory after a command stopped (see `assert_workdir_consistent`)."""
    import json
    import sqlite3

    workdir = Path(workdir)
    problems: list[str] = []
    cache = workdir / "cache"
    if cache.is_dir():
        for path in sorted(cache.rglob("*")):
            if not path.is_file():
                continue
            if path.name.endswith(".tmp") or ".partial" in path.name:
                problems.append(f"{path}: partial write left behind")
            elif path.suffix == ".npy":
                record = path.with_suffix(".json")
                if not record.is_file():
                    problems.append(f"{path}: array without its {record.name} commit record")
                    continue
                try:
                    nbytes = json.loads(record.read_text()).get("nbytes")
                except (json.JSONDecodeError, AttributeError) as error:
                    problems.append(f"{record}: unreadable commit record ({error})")
                    continue
                if nbytes != path.stat().st_size:
                    problems.append(f"{record}: nbytes {nbytes} but {path.name} has {path.stat().st_size} bytes")

    def rows(db: Path, table: str, query: str) -> list[tuple]:
        connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            if not connection.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                                      (table,)).fetchone():
                return []
            return connection.execute(query).fetchall()
        finally:
            connection.close()

    optuna_db = workdir / "optuna.db"
    if optuna_db.is_file():
        for trial_id, number in rows(optuna_db, "trials",
                                     "SELECT trial_id, number FROM trials WHERE state = 'RUNNING'"):
            problems.append(f"{optuna_db}: trial {number} (id {trial_id}) left RUNNING")
    mlflow_db = workdir / "mlflow.db"
    if mlflow_db.is_file():
        for run_uuid, name in rows(mlflow_db, "runs", "SELECT run_uuid, name FROM runs WHERE status = 'RUNNING'"):
            problems.append(f"{mlflow_db}: run {name} ({run_uuid}) left RUNNING")
    return problems


@pytest.fixture
def assert_workdir_consistent():
    """A function `check(workdir)` asserting that a work directory holds no half-done state:

    (a) under WORKDIR/cache no `*.tmp` / `*.partial*` files, and every `*.npy` has its `*.json`
        commit record whose `nbytes` equals the array file's size (`*.lock` files are fine);
    (b) in WORKDIR/optuna.db (if any) no trial in state RUNNING;
    (c) in WORKDIR/mlflow.db (if any) no run with status RUNNING.
    A work directory that does not exist is consistent.
    """

    def check(workdir: Path) -> None:
        problems = _workdir_problems(Path(workdir))
        assert not problems, "inconsistent work directory:\n" + "\n".join(problems)

    return check
