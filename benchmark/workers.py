"""Any number of `mbr-bench run` processes, on any machines, sharing one Optuna study.

Optuna's RDB storage (PostgreSQL for teams, SQLite on one machine) is the distributed engine; this
module adds what a lab needs on top of it:

- heartbeats: a trial whose worker died (kill -9, a lost machine) is failed once its heartbeat is
  older than the grace period, retried by another worker with the same parameters, and its MLflow
  run is closed;
- a budget for the study, not for each worker: the slot of a new trial is claimed under a lock that
  spans counting the trials and `study.ask()`, so N workers with `--n-trials 12` finish 12 trials;
- on restart, trials left RUNNING by a dead process on this host are failed at once, not after the
  grace period.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError, MbrError, TimeBudgetReached
from ..core.files import exclusive_lock
from ..core.process import process_alive, process_identity
from ..core.stores import setup_lock, sqlite_path
from ..tracking.schema import TAG_PROCESS as ATTR_PROCESS  # also a trial user attribute

HEARTBEAT_SECONDS = 30
GRACE_FACTOR = 4  # a trial is stale after this many missed heartbeats: TensorFlow can starve the thread
MAX_RETRY = 2  # a trial whose workers die this many times is left failed
ATTR_RUN_ID = "mlflow_run_id"


def _lock_file(database: Path) -> Path:
    return database.with_name(database.name + ".lock")


def open_storage(url: str, heartbeat: int = HEARTBEAT_SECONDS) -> Any:
    """The Optuna RDB storage at `url` with heartbeats, opened before any work so a bad URL fails in seconds."""
    import optuna
    import sqlalchemy.exc

    if heartbeat < 1:
        raise ConfigError(f"--heartbeat must be a whole number of seconds >= 1, got {heartbeat}")
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # Several processes share the file: wait for a writer instead of failing with "database is locked".
        engine_kwargs["connect_args"] = {"timeout": 60}
    elif url.startswith("postgresql"):
        engine_kwargs["connect_args"] = {"connect_timeout": 10}
        engine_kwargs["pool_pre_ping"] = True  # a restarted server must not break a long search
    database = sqlite_path(url)
    if database is not None and not database.parent.is_dir():
        raise ConfigError(f"--storage {url}: cannot open the Optuna storage (folder {database.parent} does not "
                          "exist); create it, or leave --storage out to use WORKDIR/optuna.db")
    try:
        # Workers starting together (one machine or many) must not create a new database's tables at once.
        with setup_lock(url), warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat, grace_period=GRACE_FACTOR * heartbeat,
            )
    except (ValueError, ImportError, OSError, sqlalchemy.exc.SQLAlchemyError,
            optuna.exceptions.StorageInternalError) as error:
        text = error.strerror if isinstance(error, OSError) and error.strerror else str(error).strip()
        reason = text.splitlines()[0][:200] if text else type(error).__name__
        fix = ("install the PostgreSQL driver (pip install 'mbr-bench[postgres]')"
               if url.startswith("postgresql") and isinstance(error, ImportError)
               else "pass an RDB URL such as sqlite:////abs/path/optuna.db or postgresql://user:pass@host/db, "
                    "with a reachable server and a writable folder")
        raise ConfigError(f"--storage {url}: cannot open the Optuna storage ({reason}); {fix}") from None


class StaleTrialHandler:
    """Called for every trial failed because its worker stopped: retry it, close its MLflow run."""

    def __init__(self, close_run: Callable[[str, str], None] | None = None, max_retry: int = MAX_RETRY):
        from optuna.storages import RetryFailedTrialCallback

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # experimental-API warnings
            self._retry = RetryFailedTrialCallback(max_retry=max_retry)
        self._close_run = close_run

    def __call__(self, study: Any, trial: Any) -> None:
        self._retry(study, trial)
        run_id = trial.user_attrs.get(ATTR_RUN_ID)
        if run_id and self._close_run is not None:
            owner = trial.user_attrs.get(ATTR_PROCESS, "its worker")
            self._close_run(run_id, f"{owner} stopped while running trial {trial.number}; the trial is retried")


def install_stale_handler(storage: Any, handler: StaleTrialHandler) -> None:
    """Use `handler` for heartbeat-stale trials (Optuna reads it from the storage)."""
    storage.heartbeat_stale_trial_callback = handler
    storage.failed_trial_callback = handler  # the older name, still read by some Optuna versions


def fail_dead_local_trials(study: Any, handler: Callable[[Any, Any], None] | None) -> list[int]:
    """Fail the RUNNING trials whose worker was a process on this host that has ended; returns their numbers.

    The heartbeat would find them too, but only after the grace period: a restarted run should
    retry its own killed trial at once.
    """
    import optuna
    from optuna.trial import TrialState

    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        identity = trial.user_attrs.get(ATTR_PROCESS)
        if not identity or process_alive(identity) is not False:
            continue
        try:
            if not study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker failed it first
        failed.append(trial.number)
        if handler is not None:
            handler(study, copy.deepcopy(study._storage.get_trial(trial._trial_id)))
    return failed


def fail_stale_trials(study: Any) -> None:
    """Optuna's heartbeat check (fails trials whose heartbeat is older than the grace period)."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


@dataclass(frozen=True)
class Budget:
    """Where a study stands against its trial budget."""

    used: int  # trials that count: all but failed trials that were retried
    waiting: int  # retries (and enqueued trials) nobody has started yet
    running: int
    finished: int  # complete + pruned

    def open_slot(self, budget: int | None) -> bool:
        return self.waiting > 0 or budget is None or self.used < budget


def budget_state(study: Any) -> Budget:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    retried = {number for t in trials for number in t.system_attrs.get("retry_history", [])}
    states = [t.state for t in trials]
    return Budget(
        used=sum(1 for t in trials if not (t.state == TrialState.FAIL and t.number in retried)),
        waiting=states.count(TrialState.WAITING),
        running=states.count(TrialState.RUNNING),
        finished=states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED),
    )


# ------------------------------------------------------------------------------------ study lock
class _FileLock:
    """`exclusive_lock` as acquire/release calls: it is taken and released in different places."""

    def __init__(self, path: Path):
        self.path = path
        self._held: Any = None

    def acquire(self) -> None:
        self._held = exclusive_lock(self.path)
        self._held.__enter__()

    def release(self) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            held.__exit__(None, None, None)


class _AdvisoryLock:
    """A PostgreSQL session advisory lock; the server drops it when a dead worker's connection closes."""

    def __init__(self, engine: Any, name: str):
        self._engine = engine
        self._key = int.from_bytes(hashlib.sha256(f"mbr-bench:{name}".encode()).digest()[:8], "big", signed=True)
        self._connection: Any = None

    def acquire(self) -> None:
        import sqlalchemy

        self._connection = self._engine.connect()
        self._connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": self._key})
        self._connection.commit()

    def release(self) -> None:
        import sqlalchemy

        if self._connection is not None:
            try:
                self._connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": self._key})
                self._connection.commit()
            finally:
                self._connection.close()
                self._connection = None


class _NoLock:
    def acquire(self) -> None:
        pass

    def release(self) -> None:
        pass


def study_lock(storage: Any, study_name: str) -> Any:
    """The lock that serialises claiming trial slots of `study_name` across workers."""
    url = str(storage.url)
    database = sqlite_path(url)
    if database is not None:
        return _FileLock(_lock_file(database))
    if url.startswith("postgresql"):
        return _AdvisoryLock(storage.engine, study_name)
    # Other databases: the count-then-ask check still holds, but N workers may overshoot by N - 1.
    return _NoLock()


# --------------------------------------------------------------------------------- trial loop
@dataclass
class LoopResult:
    started: int = 0  # trials this process ran
    others_running: int = 0  # trials of other workers still running when we stopped
    budget_reached: bool = False


# Stops that are not the trial's fault: the trial is handed back (retried later) and mbr-bench says so
# in one line, so Optuna's "Trial N failed" warning with its traceback is noise there.
_HANDED_BACK = (KeyboardInterrupt, MbrError, TimeBudgetReached)


class _HandedBackFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, _HANDED_BACK)


@contextlib.contextmanager
def _quiet_handed_back() -> Iterator[None]:
    import optuna

    # On the handlers: a logger's own filters do not see records its child loggers pass up to it.
    handlers = list(optuna.logging.get_logger("optuna").handlers)
    quiet = _HandedBackFilter()
    for handler in handlers:
        handler.addFilter(quiet)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(quiet)


def run_trials(
    study: Any,
    objective: Callable[[Any], float],
    budget: int | None,
    lock: Any,
    handler: Callable[[Any, Any], None] | None,
    deadline: float | None = None,
    catch: tuple[type[Exception], ...] = (),
    wait_for_others: bool = False,
    poll_seconds: float = HEARTBEAT_SECONDS,
    on_wait: Callable[[Budget], None] | None = None,
    reseed: Callable[[int], None] | None = None,
) -> LoopResult:
    """Run trials of `study` until its budget is used (counting every worker's trials) or `deadline`
    (a `time.monotonic()` value) passes.

    With `wait_for_others`, a worker that finds the budget used but trials of other workers still
    running waits for them, so it can retry any whose worker dies. `reseed(n)` is called under the
    lock before each trial with the number of trials the study holds, a number no other claim gets.
    """
    result = LoopResult()
    current: dict[str, Any] = {}

    def claimed(trial: Any) -> float:
        # The trial now exists in the storage: other workers may count it, so the slot is ours.
        lock.release()
        current["trial"] = trial
        trial.set_user_attr(ATTR_PROCESS, process_identity())
        return objective(trial)

    waited = False
    while deadline is None or time.monotonic() < deadline:
        lock.acquire()
        holding = True
        try:
            fail_dead_local_trials(study, handler)
            state = budget_state(study)
            if not state.open_slot(budget):
                result.budget_reached = True
                result.others_running = state.running
                if not (wait_for_others and state.running):
                    break
                lock.release()
                holding = False
                if on_wait is not None and not waited:
                    on_wait(state)
                waited = True
                time.sleep(poll_seconds)
                fail_stale_trials(study)  # retries (WAITING) appear for trials whose worker died
                continue
            if reseed is not None:
                reseed(len(study.get_trials(deepcopy=False)))
            holding = False  # `claimed` releases it once the trial exists
            current.clear()
            try:
                with _quiet_handed_back():
                    study.optimize(claimed, n_trials=1, catch=catch)
            except BaseException:
                # Ctrl-C or bad input stopped this process, not the trial: give it back to the
                # study, as a dead worker's would be, so the next run retries it.
                if "trial" in current and handler is not None:
                    handler(study, copy.deepcopy(study._storage.get_trial(current["trial"]._trial_id)))
                raise
            finally:
                if "trial" not in current:  # optimize stopped before asking: the lock is still ours
                    holding = True
            if "trial" not in current:
                break  # the sampler stopped the study (a finished grid)
            result.started += 1
        finally:
            if holding:
                lock.release()
    return result
