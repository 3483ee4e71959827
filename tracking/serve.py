"""`mbr-bench serve`: one MLflow tracking server that a team's workers log to.

The server proxies artifacts (``--serve-artifacts``): workers upload plots and predictions over HTTP
and need no shared filesystem, only ``--tracking-uri http://HOST:PORT``. Everything that can be
checked before the server starts is checked here, so a typo fails in a second with one line
instead of a page of uvicorn traceback.

    argv = server_command("postgresql://mbr:pw@db:5432/mlflow", "/srv/mlartifacts", host="0.0.0.0")
"""

from __future__ import annotations

import errno
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from ..core.errors import ConfigError, MbrError
from ..core.stores import default_artifact_root, default_tracking_uri, redact, sqlite_path

# Stores the MLflow server can keep runs in, as SQLAlchemy backend names.
BACKENDS = ("sqlite", "postgresql", "mysql")
# DB-API modules as SQLAlchemy imports them -> what to pip install.
DRIVER_PACKAGES = {
    "psycopg2": "psycopg2-binary",
    "psycopg": "psycopg[binary]",
    "pg8000": "pg8000",
    "asyncpg": "asyncpg",
    "MySQLdb": "mysqlclient",
    "pymysql": "pymysql",
    "mysql.connector": "mysql-connector-python",
}
# MLflow 3 also starts a job runner (huey consumers) for its GenAI features (online scoring, trace
# archival); mbr-bench uses none of them, and it costs ~7 processes and ~10 s of start-up. Exporting
# the variable (=true) brings it back.
JOB_EXECUTION_VARIABLE = "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"
STORE_EXAMPLES = ("sqlite:////abs/path/mlflow.db (one machine) or "
                  "postgresql://user:password@host:5432/mlflow (a team)")


@dataclass(frozen=True)
class ServeOptions:
    """What `serve` starts; `resolve_options` fills the defaults from the work directory."""

    backend_store_uri: str
    artifacts_destination: str
    host: str = "127.0.0.1"
    port: int = 5000
    workers: int | None = None  # None: MLflow's default (4)
    allowed_hosts: tuple[str, ...] = ()  # empty: MLflow's default (localhost and private addresses)


def server_command(
    backend_store_uri: str,
    artifacts_destination: str,
    host: str = "127.0.0.1",
    port: int = 5000,
    workers: int | None = None,
    allowed_hosts: Sequence[str] = (),
    python: str = sys.executable,
) -> list[str]:
    """The argv of ``mlflow server`` with proxied artifacts, bound to `host` (loopback unless told otherwise).

    MLflow runs as ``<python> -m mlflow`` so the server comes from this environment even when its
    ``bin/`` folder is not on PATH. No ``--default-artifact-root`` is passed: new experiments then
    get ``mlflow-artifacts:/`` locations, which the server resolves under `artifacts_destination`.
    """
    argv = [
        python, "-m", "mlflow", "server",
        "--backend-store-uri", backend_store_uri,
        "--serve-artifacts",
        "--artifacts-destination", artifacts_destination,
        "--host", host,
        "--port", str(int(port)),
    ]
    if workers is not None:
        argv += ["--workers", str(int(workers))]
    if allowed_hosts:
        argv += ["--allowed-hosts", ",".join(allowed_hosts)]
    return argv


def server_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The server's environment: ours, with MLflow's job runner off unless the caller set it."""
    env = dict(os.environ if environ is None else environ)
    env.setdefault(JOB_EXECUTION_VARIABLE, "false")
    return env


def split_hosts(values: Sequence[str] | None) -> tuple[str, ...]:
    """``--allowed-hosts a,b c`` -> ("a", "b", "c"): commas and repeated values both work."""
    return tuple(part.strip() for value in values or () for part in value.split(",") if part.strip())


# ------------------------------------------------------------------------------------- validation
def dashboard_command(storage_url: str, host: str = "127.0.0.1", port: int = 8080) -> list[str]:
    """The argv of optuna-dashboard (the `dashboard` extra) on an Optuna storage, from this environment.

    Raises ConfigError naming the install command when the extra is missing.
    """
    import importlib.util

    script = Path(sys.executable).parent / "optuna-dashboard"
    if importlib.util.find_spec("optuna_dashboard") is None or not script.is_file():
        raise ConfigError("optuna-dashboard is not installed; install the extra: pip install 'mbr-bench[dashboard]'")
    return [str(script), storage_url, "--host", host, "--port", str(int(port))]


def check_backend_store_uri(uri: str) -> None:
    """Fail unless `uri` is a SQLite, PostgreSQL or MySQL URL whose driver is installed.

    For SQLite the database's folder is created, as the server would fail on a missing one.
    """
    shown = redact(uri)
    try:
        url = make_url(uri)
    except (ArgumentError, ValueError):
        raise ConfigError(f"--backend-store-uri {shown}: not a database URL; pass {STORE_EXAMPLES}") from None
    backend = url.get_backend_name()
    if backend not in BACKENDS:
        hint = " (write postgresql://, not postgres://)" if backend == "postgres" else ""
        raise ConfigError(f"--backend-store-uri {shown}: unsupported scheme {url.drivername!r}{hint}; "
                          f"use sqlite, postgresql or mysql, e.g. {STORE_EXAMPLES}")
    try:
        dialect = url.get_dialect()
    except NoSuchModuleError:
        raise ConfigError(f"--backend-store-uri {shown}: SQLAlchemy has no driver {url.drivername!r}; "
                          f"use {backend}:// with its default driver") from None
    try:
        dialect.import_dbapi()
    except ImportError as error:
        module = getattr(error, "name", None) or dialect.driver
        package = DRIVER_PACKAGES.get(module, module)
        raise ConfigError(f"--backend-store-uri {shown}: the {backend} driver {module!r} is not installed; "
                          f"pip install {package}") from None
    if backend == "sqlite":
        database = sqlite_path(uri)
        if database is not None:
            try:
                database.parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise ConfigError(f"--backend-store-uri {shown}: cannot create the folder {database.parent} "
                                  f"({error.strerror}); pass a SQLite file in a writable folder") from None


def prepare_artifacts_destination(destination: str) -> str:
    """Create the local artifacts folder and prove it writable; returns it absolute.

    Remote destinations (``s3://``, ``gs://`` ...) are passed on as given: the server checks them.
    """
    if "://" in destination and not destination.startswith("file://"):
        return destination
    folder = Path(destination.removeprefix("file://")).expanduser().resolve()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder, prefix=".mbr-write-test-"):
            pass
    except OSError as error:
        raise ConfigError(f"--artifacts-destination {destination}: cannot write there "
                          f"({error.strerror or error}); pass a folder this user can create and write to") from None
    return str(folder)


def check_port_free(host: str, port: int) -> None:
    """Fail unless a listening socket can be bound to `host`:`port` now (the server binds it a moment later)."""
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port {port}: not a TCP port; pass a number from 1024 to 65535")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise ConfigError(f"--host {host}: cannot resolve it ({error.strerror}); "
                          f"pass 127.0.0.1, 0.0.0.0 or an address of this machine") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        # As uvicorn does: without it, connections of a server stopped a moment ago (TIME_WAIT) would count.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
            probe.listen(1)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise ConfigError(f"--port {port}: {format_host(host)}:{port} is already in use (another MLflow "
                                  f"server or mbr-bench serve?); stop it or pass another --port") from None
            if error.errno == errno.EADDRNOTAVAIL:
                raise ConfigError(f"--host {host}: not an address of this machine; "
                                  f"pass 127.0.0.1, 0.0.0.0 or one of its addresses") from None
            if error.errno == errno.EACCES:
                raise ConfigError(f"--port {port}: binding it needs privileges; pass a port from 1024 up") from None
            raise ConfigError(f"--host {host} --port {port}: cannot listen there ({error.strerror})") from None


# ------------------------------------------------------------------------------------------ hosts
def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the server on this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: loopback only if every address it resolves to is
        try:
            addresses = {info[4][0] for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)}
        except socket.gaierror:
            return False
        return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def format_host(host: str) -> str:
    """`host` as it appears in a URL: IPv6 addresses in brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def worker_host(host: str) -> str:
    """The name workers should use to reach a server bound to `host`."""
    if host in ("0.0.0.0", "::", ""):
        return socket.gethostname()  # bound to every interface: this machine's name
    return host


def default_allowed_hosts(public_host: str) -> tuple[str, ...]:
    """MLflow's default Host-header allow list (localhost, private addresses) plus `public_host`.

    Passing ``--allowed-hosts`` replaces MLflow's list, so it is repeated here; adding the name
    printed for workers keeps that URL from being refused as a DNS-rebinding attempt.
    """
    try:
        from mlflow.server.security_utils import get_default_allowed_hosts

        defaults = list(get_default_allowed_hosts())
    except ImportError:  # an MLflow without that helper: the same list, as of MLflow 3.17
        defaults = ["localhost", "127.0.0.1", "[::1]", "0.0.0.0", "localhost:*", "127.0.0.1:*", "[[]::1]:*",
                    "0.0.0.0:*", "192.168.*", "10.*", *[f"172.{i}.*" for i in range(16, 32)], "fc00:*", "fd00:*"]
    name = format_host(public_host)
    return tuple(dict.fromkeys([*defaults, name, f"{name}:*"]))


# ------------------------------------------------------------------------------------------ serve
def resolve_options(
    workdir: Path,
    backend_store_uri: str | None = None,
    artifacts_destination: str | None = None,
    host: str = "127.0.0.1",
    port: int = 5000,
    workers: int | None = None,
    allowed_hosts: Sequence[str] | None = None,
) -> ServeOptions:
    """Fill defaults and validate everything; raises ConfigError naming the option and the fix.

    Defaults: the work directory's SQLite store, and artifacts in ``mlartifacts/`` beside a SQLite
    database (where `Tracker` puts them when it writes to that store directly) or else in
    WORKDIR/mlartifacts.
    """
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers {workers}: must be at least 1")
    uri = backend_store_uri or default_tracking_uri(workdir)
    check_backend_store_uri(uri)
    destination = artifacts_destination or default_artifact_root(uri) or str(Path(workdir) / "mlartifacts")
    destination = prepare_artifacts_destination(destination)
    check_port_free(host, port)
    hosts = split_hosts(allowed_hosts)
    if not hosts and not is_loopback(host):
        hosts = default_allowed_hosts(worker_host(host))
    return ServeOptions(uri, destination, host, port, workers, hosts)


def serve(options: ServeOptions) -> int:
    """Run the MLflow server until it stops; SIGINT and SIGTERM go to it. Returns its exit status."""
    command = server_command(options.backend_store_uri, options.artifacts_destination, options.host,
                             options.port, options.workers, options.allowed_hosts)
    url = f"http://{format_host(worker_host(options.host))}:{options.port}"
    if not is_loopback(options.host):
        print(f"mbr-bench: warning: --host {options.host} exposes the MLflow UI and API without authentication: "
              f"anyone who can reach port {options.port} can read and delete every run; keep it behind a "
              f"firewall or bind 127.0.0.1 and tunnel (ssh -L {options.port}:127.0.0.1:{options.port} THIS_HOST)",
              file=sys.stderr, flush=True)
    print(f"MLflow server on {url} (store {redact(options.backend_store_uri)}, artifacts "
          f"{options.artifacts_destination}); Ctrl-C stops it", flush=True)
    print(f"workers: mbr-bench run ... --tracking-uri {url}", flush=True)
    return supervise(command, server_environment())


def supervise(command: list[str], env: dict[str, str] | None = None) -> int:
    """Run an MLflow server (or UI) in its own session until it stops; SIGINT and SIGTERM go to it, and
    no server is left behind when this process leaves. Returns its exit status (128+N if killed by N)."""
    started: list[subprocess.Popen] = []
    pending: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        if not started:
            pending.append(signum)
        elif started[0].poll() is None:
            started[0].send_signal(signum)

    # Handlers first: a SIGTERM that arrives while the server is being started is passed on once it is.
    previous = {signum: signal.signal(signum, forward) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            # Its own session: a Ctrl-C in the terminal reaches the server once, through `forward`.
            started.append(subprocess.Popen(command, env=env, start_new_session=True))
        except OSError as error:
            raise MbrError(f"{command[0]}: cannot start the MLflow server ({error.strerror}); "
                           "reinstall mbr-bench (make setup)") from None
        if pending:
            started[0].send_signal(pending[-1])
        code = started[0].wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if started and started[0].poll() is None:  # leaving on an exception: leave no orphan server behind
            started[0].terminate()
            started[0].wait()
    return 128 - code if code < 0 else code  # killed by signal N: the shell's 128+N
