"""Several workers on one study: the shared budget, retries of dead workers' trials, resume after kill -9.

The end-to-end tests start real `mbr-bench run` processes, SIGKILL one in the middle of a trial, and
check what a lab relies on: the finished-trial count equals the budget, trial numbers are unique,
the killed trial is failed and retried with the same parameters, no MLflow run stays RUNNING, and
the embedding cache holds only complete entries. PostgreSQL runs on 127.0.0.1 in a temporary folder.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from mbr_bench.benchmark import workers
from mbr_bench.core.errors import ConfigError

# A spawned child imports its target by module name. tests/ is a namespace package, and any installed
# regular package named `tests` (sleap-io's wheel ships one) takes that name in the child, so the
# targets live in a module of their own name, importable from this folder (spawn copies sys.path).
sys.path.insert(0, str(Path(__file__).parent))
import spawned_workers as targets  # noqa: E402

BUDGET = 4


def _dead_identity() -> str:
    """A `process_identity` of a process that has ended on this host."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    ticks = Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    child.kill()
    child.wait()
    return f"{platform.node()}:{child.pid}:{ticks}"


def _study(tmp_path: Path, name: str = "s", heartbeat: int = 30):
    import optuna

    storage = workers.open_storage(f"sqlite:///{tmp_path / 'optuna.db'}", heartbeat)
    workers.install_stale_handler(storage, workers.StaleTrialHandler())
    return optuna.create_study(study_name=name, storage=storage, load_if_exists=True), storage


# ---------------------------------------------------------------------------------- unit tests
@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # trials asked by hand, outside Study.optimize
def test_a_dead_local_workers_trial_is_failed_at_once_and_retried_with_its_params(tmp_path):
    from optuna.trial import TrialState

    study, storage = _study(tmp_path)
    trial = study.ask()
    x = trial.suggest_float("x", 0.0, 1.0)
    trial.set_user_attr(workers.ATTR_PROCESS, _dead_identity())
    alive = study.ask()
    alive.set_user_attr(workers.ATTR_PROCESS, workers.process_identity())  # this process: alive

    assert workers.fail_dead_local_trials(study, storage.get_heartbeat_stale_trial_callback()) == [trial.number]
    trials = study.get_trials(deepcopy=False)
    assert trials[trial.number].state == TrialState.FAIL
    assert trials[alive.number].state == TrialState.RUNNING
    retry = trials[-1]
    assert retry.state == TrialState.WAITING and retry.params == {"x": x}
    assert retry.system_attrs["failed_trial"] == trial.number
    # The retry replaces the failed trial in the budget: 3 trials, of which one failed and was retried.
    state = workers.budget_state(study)
    assert (state.used, state.waiting, state.running) == (2, 1, 1)
    assert state.open_slot(2)  # a waiting retry always runs, whatever the budget


def test_budget_counts_failures_that_were_not_retried(tmp_path):
    import optuna
    from optuna.trial import TrialState

    study, _ = _study(tmp_path)
    study.add_trial(optuna.create_trial(state=TrialState.FAIL))
    study.add_trial(optuna.create_trial(state=TrialState.COMPLETE, value=0.5))
    study.add_trial(optuna.create_trial(state=TrialState.PRUNED))
    state = workers.budget_state(study)
    assert (state.used, state.finished, state.waiting) == (3, 2, 0)
    assert not state.open_slot(3) and state.open_slot(4) and state.open_slot(None)


def test_three_workers_share_one_budget(tmp_path):
    import optuna

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.create_study(study_name="shared", storage=workers.open_storage(url))
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=targets.worker, args=(url, 7, 0.3)) for _ in range(3)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
        assert process.exitcode == 0
    trials = optuna.load_study(study_name="shared", storage=url).trials
    assert len(trials) == 7  # not 21, and not 8 or 9 from racing workers
    assert sorted(t.number for t in trials) == list(range(7))
    # Every worker took part (each trial records the process that ran it).
    assert len({t.user_attrs[workers.ATTR_PROCESS] for t in trials}) >= 2


class EngineLog:
    """Every engine built through SQLAlchemy's `create_engine` (Optuna's and MLflow's spellings both) during a test:
    its URL, the keyword arguments it got, and how many DBAPI connections it then tried to open."""

    @dataclass
    class Engine:
        url: str
        kwargs: dict
        attempts: int = 0

    def __init__(self, monkeypatch):
        import sqlalchemy
        import sqlalchemy.engine

        self.engines: list[EngineLog.Engine] = []
        real = sqlalchemy.engine.create_engine

        def create_engine(url, *args, **kwargs):
            text = url if isinstance(url, str) else url.render_as_string(hide_password=False)
            record = EngineLog.Engine(text, kwargs)
            self.engines.append(record)
            engine = real(url, *args, **kwargs)  # a bad URL raises here, after being logged

            @sqlalchemy.event.listens_for(engine, "do_connect")
            def attempt(*_):  # before each DBAPI connect() call, retries included
                record.attempts += 1

            return engine

        monkeypatch.setattr(sqlalchemy, "create_engine", create_engine)
        monkeypatch.setattr(sqlalchemy.engine, "create_engine", create_engine)

    def of(self, url: str) -> list[EngineLog.Engine]:
        return [engine for engine in self.engines if engine.url == url]


def test_open_storage_rejects_bad_urls_and_heartbeats(tmp_path, monkeypatch):
    engines = EngineLog(monkeypatch)
    with pytest.raises(ConfigError, match=r"--storage notaurl: cannot open the Optuna storage"):
        workers.open_storage("notaurl")
    assert sum(engine.attempts for engine in engines.of("notaurl")) == 0
    with pytest.raises(ConfigError, match="--heartbeat must be"):
        workers.open_storage(f"sqlite:///{tmp_path / 'o.db'}", heartbeat=0)
    url = "postgresql://u:p@127.0.0.1:1/db"  # nothing listens on port 1
    with pytest.raises(ConfigError, match="cannot open the Optuna storage"):
        workers.open_storage(url)
    # Fails fast instead of hanging: one engine, one connection attempt (no retry loop), and a connect timeout
    # that bounds that attempt when a server does not answer at all (a refused port answers at once).
    [engine] = engines.of(url)
    assert engine.attempts == 1
    assert 0 < engine.kwargs["connect_args"]["connect_timeout"] <= 10


def test_tracker_refuses_unreachable_stores_with_one_quick_attempt(monkeypatch):
    import inspect
    import urllib.request

    from mbr_bench.tracking.runs import Tracker

    # A database server: one connection attempt with a connect timeout; MLflow's own store, which retries a
    # refused connection for about two minutes, is never built (it would be a second engine for the URL).
    engines = EngineLog(monkeypatch)
    url = "postgresql://u:p@127.0.0.1:1/db"
    with pytest.raises(ConfigError, match=r"--tracking-uri postgresql://\S+: cannot open the MLflow tracking store"):
        Tracker(url)
    [engine] = engines.of(url)
    assert engine.attempts == 1
    assert 0 < engine.kwargs["connect_args"]["connect_timeout"] <= 10

    # A server URL: one /health request with a timeout, instead of the MLflow client's minutes of retries.
    requests = []
    real_urlopen = urllib.request.urlopen

    def urlopen(*args, **kwargs):
        requests.append(inspect.signature(real_urlopen).bind(*args, **kwargs).arguments)
        return real_urlopen(*args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    with pytest.raises(ConfigError, match=r"--tracking-uri http://127.0.0.1:1: cannot open the MLflow tracking store"):
        Tracker("http://127.0.0.1:1")
    [request] = requests
    assert request["url"] == "http://127.0.0.1:1/health"
    assert 0 < request.get("timeout", 0) <= 10, request  # no timeout: urlopen waits as long as the OS lets it


# ------------------------------------------------------------------------------- cache claims
def test_two_workers_never_compute_the_same_cache_entry(tmp_path):
    context = multiprocessing.get_context("spawn")
    marker = tmp_path / "computed.txt"
    processes = [context.Process(target=targets.claim_and_fill, args=(str(tmp_path / "cache"), str(marker)))
                 for _ in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    assert len(marker.read_text().splitlines()) == 1


def test_a_writer_killed_mid_entry_leaves_a_miss_and_its_claim_is_free(tmp_path):
    from mbr_bench.benchmark.features.cache import CacheKey, EmbeddingCache

    root = tmp_path / "cache"
    process = multiprocessing.get_context("spawn").Process(target=targets.write_forever, args=(str(root),))
    process.start()
    deadline = time.monotonic() + 60
    while not list(root.glob("toy/.*.npy.tmp")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(root.glob("toy/.*.npy.tmp")), "the writer never started"
    os.kill(process.pid, signal.SIGKILL)
    process.join(10)

    cache = EmbeddingCache(root)
    key = CacheKey("v1", {"backbone": {"backbone": "toy"}})
    assert cache.load(key) is None  # half-written: a miss, never data
    waited = []
    with cache.claim(key, on_wait=waited.append):  # the kernel released the dead writer's lock
        assert not list(root.glob("toy/*.tmp"))  # and its leftover is cleaned by the next claimant
    assert waited == []


def test_an_entry_whose_bytes_changed_is_discarded_not_read(tmp_path):
    from mbr_bench.benchmark.features.cache import CacheKey, EmbeddingCache

    cache = EmbeddingCache(tmp_path)
    key = CacheKey("v1", {"backbone": {"backbone": "toy"}})
    with cache.writer(key, (20, 3), {}) as out:
        out[:] = np.arange(60, dtype=np.float32).reshape(20, 3)
    assert cache.load(key, verify=True) is not None
    path = cache.array_path(key)
    data = bytearray(path.read_bytes())
    data[-4:] = b"\x00\x00\x80\x7f"  # same size, different bytes: only the checksum sees it
    path.write_bytes(bytes(data))
    assert cache.load(key) is not None  # the size check alone is fooled
    assert cache.load(key, verify=True) is None
    assert not path.exists() and cache.record(key) is None  # removed, so it is computed again


# ------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def worker_dataset(tmp_path_factory):
    from mbr_bench.benchmark.data.synthetic import generate

    return generate(tmp_path_factory.mktemp("workers-data"), n_videos=4, n_frames=400, seed=5, n_test=1)


def _space(folder: Path) -> Path:
    # Slow enough to kill in the middle of a trial, small enough for CI.
    path = folder / "space.yaml"
    path.write_text("lstm: {units: {choices: [8, 16]}, sequence_length: 50, max_epochs: 6, patience: 6,"
                    " batch_size: 4, learning_rate: {low: 1.0e-3, high: 1.0e-2, log: true}}\n")
    return path


def _command(dataset: Path, workdir: Path, storage: str, tracking: str, cache: Path) -> list[str]:
    return [sys.executable, "-m", "mbr_bench.benchmark.cli", "run", "--study", "wall_rearing",
            "--dataset", str(dataset), "--backbones", "pose", "--heads", "lstm", "--n-trials", str(BUDGET),
            "--workdir", str(workdir), "--storage", storage, "--tracking-uri", tracking, "--cache-dir", str(cache),
            "--search-space", str(_space(workdir.parent)), "--heartbeat", "1", "--no-progress",
            "--allow-empty-folds"]


def _start(command: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)


@functools.lru_cache(maxsize=None)
def _storage(url: str):
    """One storage (one connection pool) per URL: a new one per poll would exhaust the server's connections."""
    import optuna

    return optuna.storages.RDBStorage(url)


def _kill_mid_trial(process: subprocess.Popen, storage: str, log: Path) -> int:
    """SIGKILL `process` once a trial it runs has scored a fold; returns that trial's number."""
    import optuna
    from optuna.trial import TrialState

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the worker ended before it could be killed:\n{log.read_text()[-3000:]}"
        try:
            study = optuna.load_study(study_name="wall_rearing/pose+lstm", storage=_storage(storage))
        except KeyError:  # not created yet
            time.sleep(0.2)
            continue
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            owner = trial.user_attrs.get(workers.ATTR_PROCESS, "")
            if owner.split(":")[1:2] == [str(process.pid)] and trial.intermediate_values:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(30)
                return trial.number
        time.sleep(0.1)
    raise AssertionError(f"no trial of pid {process.pid} scored a fold in time:\n{log.read_text()[-3000:]}")


def _assert_recovered(storage: str, tracking: str, killed: int, cache: Path) -> None:
    import optuna
    from mlflow.tracking import MlflowClient
    from optuna.trial import TrialState

    trials = optuna.load_study(study_name="wall_rearing/pose+lstm", storage=_storage(storage)).trials
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers)), numbers
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == BUDGET, [(t.number, t.state.name) for t in trials]
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert trials[killed].state == TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retries) == 1 and retries[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert retries[0].params == trials[killed].params

    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name("mbr-bench/wall_rearing")
    runs = client.search_runs([experiment.experiment_id])
    assert not [r.info.run_id for r in runs if r.info.status == "RUNNING"]
    killed_run = client.get_run(trials[killed].user_attrs["mlflow_run_id"])
    assert killed_run.info.status == "KILLED" and killed_run.data.tags["mbr.state"] == "failed"
    finished_runs = {t.user_attrs["mlflow_run_id"] for t in finished}
    assert {r.info.run_id for r in runs if r.data.tags.get("mbr.kind") == "trial"
            and r.info.status == "FINISHED"} == finished_runs
    assert len([r for r in runs if r.data.tags.get("mbr.kind") == "pair"]) == 1

    assert not list(cache.rglob("*.tmp"))
    for array in cache.rglob("*.npy"):
        assert array.with_suffix(".json").is_file()


@pytest.mark.slow
def test_sqlite_run_killed_mid_trial_resumes_to_its_budget(worker_dataset, tmp_path):
    workdir, cache = tmp_path / "work", tmp_path / "cache"
    storage = f"sqlite:///{workdir / 'optuna.db'}"
    tracking = f"sqlite:///{workdir / 'mlflow.db'}"
    workdir.mkdir()
    command = _command(worker_dataset, workdir, storage, tracking, cache)
    first = _start(command, tmp_path / "first.log")
    killed = _kill_mid_trial(first, storage, tmp_path / "first.log")

    resumed = subprocess.run(command, capture_output=True, text=True, timeout=600,
                             env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_recovered(storage, tracking, killed, cache)
    with sqlite3.connect(workdir / "optuna.db") as db:  # the dead run's trial was failed once, not twice
        assert db.execute("select count(*) from trials where state = 'FAIL'").fetchone()[0] == 1


@pytest.mark.slow
def test_postgres_two_workers_one_killed_mid_trial(worker_dataset, tmp_path, postgres_server):
    storage = postgres_server.create_database("optuna_workers")
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"  # MLflow on PostgreSQL: see test_serve
    cache = tmp_path / "shared-cache"  # one cache folder for both workers, as on a shared volume
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    a = _start(_command(worker_dataset, tmp_path / "a", storage, tracking, cache), logs[0])
    b = _start(_command(worker_dataset, tmp_path / "b", storage, tracking, cache), logs[1])
    try:
        killed = _kill_mid_trial(a, storage, logs[0])
        # The survivor finishes the budget and retries the dead worker's trial once its heartbeat is stale.
        assert b.wait(600) == 0, logs[1].read_text()[-3000:]
    finally:
        for process in (a, b):
            if process.poll() is None:
                process.kill()
    _assert_recovered(storage, tracking, killed, cache)

    # Running the command again (a restarted worker) has nothing left to do and changes nothing.
    again = subprocess.run(_command(worker_dataset, tmp_path / "c", storage, tracking, cache),
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    _assert_recovered(storage, tracking, killed, cache)


# Each process imports everything first, then waits for the gate file, so that all of them open the
# fresh stores within milliseconds of each other, as `docker compose up --scale worker=N` does.
_OPEN_STORES = """
import os, sys, time
from pathlib import Path
from mbr_bench.benchmark.workers import open_storage
from mbr_bench.core.errors import MbrError
from mbr_bench.tracking.runs import Tracker
gate = Path(sys.argv[1])
(gate.parent / f"{gate.name}.ready.{os.getpid()}").touch()
while not gate.exists():
    time.sleep(0.005)
try:
    open_storage(sys.argv[2])
    Tracker(sys.argv[3])
except MbrError as error:
    print(error, file=sys.stderr)
    sys.exit(2)
"""


@pytest.mark.slow
def test_workers_started_together_on_fresh_postgres_stores_all_open_them(postgres_server, tmp_path):
    """Creating the Optuna and MLflow tables is serialised: no worker meets another's half-made schema."""
    rounds, workers = 3, 4
    for round_ in range(rounds):
        optuna_url = postgres_server.create_database(f"race_optuna_{round_}")
        mlflow_url = postgres_server.create_database(f"race_mlflow_{round_}")
        gate = tmp_path / f"gate{round_}"
        children = [subprocess.Popen([sys.executable, "-c", _OPEN_STORES, str(gate), optuna_url, mlflow_url],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                    for _ in range(workers)]
        deadline = time.monotonic() + 120
        while len(list(tmp_path.glob(f"{gate.name}.ready.*"))) < workers and time.monotonic() < deadline:
            time.sleep(0.05)
        gate.touch()
        errors = [child.communicate(timeout=180)[1] for child in children]
        failed = [(child.returncode, err.strip().splitlines()[-1:]) for child, err in zip(children, errors, strict=True)
                  if child.returncode]
        assert not failed, f"round {round_}: {len(failed)} of {workers} workers failed to open the stores: {failed}"
