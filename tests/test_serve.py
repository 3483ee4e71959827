"""`mbr-bench serve`: the server's argv, the checks made before it starts, and a real server end to end."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from mbr_bench.core.errors import ConfigError
from mbr_bench.tracking import serve as serve_module
from mbr_bench.benchmark.cli import main
from mbr_bench.tracking.serve import (
    default_allowed_hosts,
    redact,
    resolve_options,
    server_command,
    server_environment,
    split_hosts,
)

START_TIMEOUT = 90.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def flag(argv: list[str], name: str) -> str:
    """The value following `name` in `argv`."""
    return argv[argv.index(name) + 1]


# ------------------------------------------------------------------------------------------- argv
def test_server_command_is_loopback_with_proxied_artifacts_by_default():
    argv = server_command("sqlite:////srv/mlflow.db", "/srv/mlartifacts")
    assert argv[:4] == [sys.executable, "-m", "mlflow", "server"]
    assert flag(argv, "--host") == "127.0.0.1"
    assert flag(argv, "--port") == "5000"
    assert flag(argv, "--backend-store-uri") == "sqlite:////srv/mlflow.db"
    assert "--serve-artifacts" in argv
    assert flag(argv, "--artifacts-destination") == "/srv/mlartifacts"
    # A default artifact root would send clients to a path on the server's disk instead of the proxy.
    assert "--default-artifact-root" not in argv
    assert "--workers" not in argv and "--allowed-hosts" not in argv


def test_server_command_passes_postgres_url_workers_and_allowed_hosts_through():
    url = "postgresql://mbr:s3cret@db.lab:5432/mlflow"
    argv = server_command(url, "/mlartifacts", host="0.0.0.0", port=5001, workers=2,
                          allowed_hosts=["mlflow:*", "localhost:*"])
    assert flag(argv, "--backend-store-uri") == url
    assert flag(argv, "--host") == "0.0.0.0"
    assert flag(argv, "--port") == "5001"
    assert flag(argv, "--workers") == "2"
    assert flag(argv, "--allowed-hosts") == "mlflow:*,localhost:*"


def test_split_hosts_accepts_commas_and_repeats():
    assert split_hosts(["mlflow:5000,localhost:*", " gpu-box ", ","]) == ("mlflow:5000", "localhost:*", "gpu-box")
    assert split_hosts(None) == ()


def test_redact_hides_only_the_password():
    assert redact("postgresql://mbr:s3cret@db:5432/mlflow") == "postgresql://mbr:***@db:5432/mlflow"
    assert redact("sqlite:////srv/mlflow.db") == "sqlite:////srv/mlflow.db"


def test_server_environment_turns_the_job_runner_off_unless_asked():
    assert server_environment({"PATH": "/bin"})["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert server_environment({"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true"})[
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "true"


# -------------------------------------------------------------------------------- option defaults
@pytest.fixture
def captured_options(monkeypatch):
    """Run `mbr-bench serve` up to the point where it would start MLflow; collect the options."""
    seen = []
    monkeypatch.setattr(serve_module, "serve", lambda options: seen.append(options) or 0)
    return seen


def test_defaults_come_from_the_workdir(tmp_path, captured_options):
    assert main(["serve", "--workdir", str(tmp_path / "w"), "--port", str(free_port())]) == 0
    (options,) = captured_options
    assert options.backend_store_uri == f"sqlite:///{(tmp_path / 'w' / 'mlflow.db').resolve()}"
    assert options.artifacts_destination == str((tmp_path / "w" / "mlartifacts").resolve())
    assert (tmp_path / "w" / "mlartifacts").is_dir()
    assert options.host == "127.0.0.1"
    assert options.workers is None
    assert options.allowed_hosts == ()  # loopback: MLflow's own allow list


def test_explicit_allowed_hosts_replace_the_defaults(tmp_path, captured_options):
    port = str(free_port())
    assert main(["serve", "--workdir", str(tmp_path), "--port", port, "--host", "0.0.0.0",
                 "--allowed-hosts", "mlflow:*,localhost:*", "127.0.0.1:*"]) == 0
    assert captured_options[0].allowed_hosts == ("mlflow:*", "localhost:*", "127.0.0.1:*")


def test_non_loopback_host_allows_this_machines_name(tmp_path, captured_options):
    assert main(["serve", "--workdir", str(tmp_path), "--port", str(free_port()), "--host", "0.0.0.0"]) == 0
    hosts = captured_options[0].allowed_hosts
    assert f"{socket.gethostname()}:*" in hosts  # the name printed for workers
    assert "localhost:*" in hosts and "10.*" in hosts  # MLflow's defaults kept


def test_default_allowed_hosts_brackets_ipv6():
    assert "[fd00::5]:*" in default_allowed_hosts("fd00::5")


# ------------------------------------------------------------------------------------ validation
@pytest.fixture
def no_server(monkeypatch):
    """Fail the test if validation lets `serve` go on to start a server."""
    def refuse(options):  # noqa: ANN001
        raise AssertionError(f"the server was started despite invalid options: {options}")
    monkeypatch.setattr(serve_module, "serve", refuse)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("mbr-bench: error: ")
    return lines[0]


def default_postgres_driver() -> str:
    """The DB-API module SQLAlchemy uses for a bare postgresql:// URL (psycopg2 before 2.1, psycopg since)."""
    from sqlalchemy.engine import make_url

    return make_url("postgresql://h/db").get_dialect().driver


@pytest.mark.parametrize("scheme, module, package", [
    ("postgresql", None, None),  # whatever the default driver is
    ("postgresql+psycopg2", "psycopg2", "psycopg2-binary"),
])
def test_postgres_url_without_driver_fails_with_install_hint(tmp_path, monkeypatch, capsys, no_server,
                                                              scheme, module, package):
    module = module or default_postgres_driver()
    package = package or {"psycopg": "psycopg[binary]", "psycopg2": "psycopg2-binary"}[module]
    monkeypatch.setitem(sys.modules, module, None)  # `import <module>` now raises ImportError
    code = main(["serve", "--workdir", str(tmp_path), "--port", str(free_port()),
                 "--backend-store-uri", f"{scheme}://mbr:s3cret@db:5432/mlflow"])
    assert code == 2
    line = one_error_line(capsys)
    assert "--backend-store-uri" in line and f"{module!r} is not installed" in line
    assert f"pip install {package}" in line
    assert "s3cret" not in line


@pytest.mark.parametrize("uri, problem", [
    ("file:///tmp/mlruns", "unsupported scheme 'file'"),
    ("postgres://mbr:s3cret@db/mlflow", "write postgresql://"),
    ("mssql+pyodbc://mbr@db/mlflow", "unsupported scheme"),
    ("mlruns", "not a database URL"),
])
def test_unsupported_backend_store_fails(tmp_path, capsys, no_server, uri, problem):
    assert main(["serve", "--workdir", str(tmp_path), "--backend-store-uri", uri]) == 2
    line = one_error_line(capsys)
    assert "--backend-store-uri" in line and problem in line and "postgresql://user:password@host" in line
    assert "s3cret" not in line


def test_port_in_use_fails(tmp_path, capsys, no_server):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert main(["serve", "--workdir", str(tmp_path), "--port", str(port)]) == 2
    line = one_error_line(capsys)
    assert f"--port {port}" in line and "already in use" in line and "another --port" in line


def test_unknown_host_fails(tmp_path, capsys, no_server):
    assert main(["serve", "--workdir", str(tmp_path), "--host", "no-such-host.invalid"]) == 2
    assert "--host no-such-host.invalid" in one_error_line(capsys)


def test_unwritable_artifacts_destination_fails(tmp_path, capsys, no_server):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main(["serve", "--workdir", str(tmp_path), "--port", str(free_port()),
                 "--artifacts-destination", str(blocker / "mlartifacts")]) == 2
    line = one_error_line(capsys)
    assert "--artifacts-destination" in line and "cannot write there" in line


def test_remote_artifacts_destination_is_passed_on(tmp_path):
    options = resolve_options(tmp_path, artifacts_destination="s3://bucket/mlartifacts", port=free_port())
    assert options.artifacts_destination == "s3://bucket/mlartifacts"


# ----------------------------------------------------------------------------- serve (fake child)
class FakeServer:
    """Stands in for the MLflow child process: exits with `code` when waited for."""

    def __init__(self, code: int):
        self.code, self.returncode = code, None

    def poll(self):
        return self.returncode

    def wait(self):
        self.returncode = self.code
        return self.code


def test_serve_warns_on_network_bind_and_tells_workers_the_uri(tmp_path, monkeypatch, capsys):
    started = {}

    def popen(argv, **kwargs):
        started.update(argv=argv, **kwargs)
        return FakeServer(-signal.SIGTERM)

    monkeypatch.setattr(serve_module.subprocess, "Popen", popen)
    monkeypatch.delenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", raising=False)
    options = resolve_options(tmp_path, host="0.0.0.0", port=free_port())
    assert serve_module.serve(options) == 128 + signal.SIGTERM
    out, err = capsys.readouterr()
    assert len(err.strip().splitlines()) == 1 and "without authentication" in err
    assert f"--tracking-uri http://{socket.gethostname()}:{options.port}" in out
    assert started["start_new_session"] and started["env"]["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert flag(started["argv"], "--host") == "0.0.0.0"


def test_serve_on_loopback_prints_no_warning(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(serve_module.subprocess, "Popen", lambda argv, **kwargs: FakeServer(0))
    options = resolve_options(tmp_path, port=free_port())
    assert serve_module.serve(options) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert f"--tracking-uri http://127.0.0.1:{options.port}" in out


def test_serve_forwards_sigint_and_sigterm_to_the_server(tmp_path, monkeypatch, capsys):
    class SignalledServer(FakeServer):
        def __init__(self):
            super().__init__(0)
            self.received = []

        def send_signal(self, signum):
            self.received.append(signum)

        def wait(self):  # a Ctrl-C, then a `docker stop`, while the server runs
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)
            return super().wait()

    server = SignalledServer()
    monkeypatch.setattr(serve_module.subprocess, "Popen", lambda argv, **kwargs: server)
    before = signal.getsignal(signal.SIGTERM)
    assert serve_module.serve(resolve_options(tmp_path, port=free_port())) == 0
    assert server.received == [signal.SIGINT, signal.SIGTERM]
    assert signal.getsignal(signal.SIGTERM) is before  # handlers restored


# ------------------------------------------------------------------------------ real server (slow)
def listening_addresses(port: int) -> list[str] | None:
    """Local addresses of TCP sockets listening on `port` (Linux /proc), or None where /proc lacks them."""
    tables = [Path("/proc/net/tcp"), Path("/proc/net/tcp6")]
    if not tables[0].exists():
        return None
    found = []
    for table in tables:
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].split(":")
            if fields[3] == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                if len(address) == 8:  # IPv4, little-endian hex
                    found.append(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
                else:
                    found.append(f"ipv6:{address}")
    return found


def wait_for_health(url: str, server: subprocess.Popen, log: Path) -> float:
    started = time.monotonic()
    while time.monotonic() - started < START_TIMEOUT:
        if server.poll() is not None:
            pytest.fail(f"mbr-bench serve exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"no /health from {url} after {START_TIMEOUT:.0f} s:\n{log.read_text()[-3000:]}")


def serve_log_and_stop(tmp_path: Path, extra_args: list[str]) -> None:
    """Start `mbr-bench serve` on a free loopback port, log a run over HTTP, check where it landed, stop it."""
    from mlflow import MlflowClient

    port = free_port()
    artifacts = tmp_path / "artifacts"
    log = tmp_path / "serve.log"
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    with open(log, "wb") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "mbr_bench.benchmark.cli", "serve", "--workdir", str(tmp_path / "work"),
             "--port", str(port), "--workers", "1", "--artifacts-destination", str(artifacts), *extra_args],
            stdout=output, stderr=subprocess.STDOUT, env=env,
        )
    try:
        wait_for_health(url, server, log)
        assert f"--tracking-uri {url}" in log.read_text()

        client = MlflowClient(tracking_uri=url)
        experiment_id = client.create_experiment("serve-test")
        assert client.get_experiment(experiment_id).artifact_location.startswith("mlflow-artifacts:")
        run_id = client.create_run(experiment_id).info.run_id
        client.log_metric(run_id, "pr_auc", 0.75)
        note = tmp_path / "note.txt"
        note.write_text("uploaded through the server")
        client.log_artifact(run_id, str(note), "reports")
        client.set_terminated(run_id)

        assert client.get_run(run_id).data.metrics["pr_auc"] == 0.75
        landed = list(artifacts.rglob("note.txt"))
        assert len(landed) == 1 and landed[0].parent.name == "reports" and run_id in landed[0].parts
        assert landed[0].read_text() == "uploaded through the server"

        addresses = listening_addresses(port)
        if addresses is not None:
            assert addresses and set(addresses) == {"127.0.0.1"}, addresses
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
            pytest.fail(f"mbr-bench serve ignored SIGTERM for 60 s:\n{log.read_text()[-3000:]}")
    assert code in (0, 128 + signal.SIGTERM), log.read_text()[-3000:]
    # Nothing the server started (uvicorn, its workers) keeps the port.
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.slow
def test_serve_sqlite_end_to_end(tmp_path):
    serve_log_and_stop(tmp_path, [])
    assert (tmp_path / "work" / "mlflow.db").is_file()


@pytest.mark.slow
def test_serve_postgres_end_to_end(tmp_path, postgres_server):
    # A database of its own: MLflow and Optuna both keep an `alembic_version` table.
    url = postgres_server.create_database("mbr_serve_mlflow")
    serve_log_and_stop(tmp_path, ["--backend-store-uri", url])
    import psycopg

    with psycopg.connect(url) as connection:  # the run went to PostgreSQL, not to a SQLite file
        experiments = {name for (name,) in connection.execute("SELECT name FROM experiments")}
    assert "serve-test" in experiments
    assert not (tmp_path / "work" / "mlflow.db").exists()


# ------------------------------------------------------------------------------------ mbr-bench ui
def _processes_mentioning(text: str) -> list[int]:
    """Pids whose command line holds `text` (Linux /proc)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text.encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found


@pytest.mark.slow
def test_sigterm_to_ui_stops_the_mlflow_server_it_started(tmp_path):
    """`docker stop` or a job scheduler ends `mbr-bench ui` with SIGTERM: no MLflow process may outlive it."""
    if not Path("/proc/self/cmdline").exists():
        pytest.skip("needs /proc to find the server's processes")
    from mbr_bench.tracking.runs import Tracker

    workdir = tmp_path / "ui-work"
    Tracker(f"sqlite:///{workdir / 'mlflow.db'}")  # a store, as `mbr-bench run` leaves one
    port = free_port()
    log = tmp_path / "ui.log"
    with open(log, "wb") as output:
        ui = subprocess.Popen([sys.executable, "-m", "mbr_bench.benchmark.cli", "ui", "--workdir", str(workdir),
                               "--port", str(port)], stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_for_health(f"http://127.0.0.1:{port}", ui, log)
        assert _processes_mentioning(str(workdir / "mlflow.db")), "the UI's server is not running"
        ui.send_signal(signal.SIGTERM)
        code = ui.wait(timeout=60)
    finally:
        if ui.poll() is None:
            ui.kill()
    assert code == 128 + signal.SIGTERM or code == 0, log.read_text()[-2000:]
    deadline = time.monotonic() + 10
    while _processes_mentioning(str(workdir / "mlflow.db")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _processes_mentioning(str(workdir / "mlflow.db")), "MLflow processes outlived mbr-bench ui"
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0


# ----------------------------------------------------------------------------- mbr-bench dashboard
def test_dashboard_needs_a_searched_workdir_or_a_storage(tmp_path, capsys):
    assert main(["dashboard", "--workdir", str(tmp_path)]) == 2  # a folder, but no search ran in it
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no optuna.db here: nothing was run in it" in err and "--storage" in err
    assert main(["dashboard", "--workdir", str(tmp_path / "nothing")]) == 2
    assert "no such work directory" in capsys.readouterr().err


def test_dashboard_command_is_the_extra_s_script_on_loopback(monkeypatch):
    argv = serve_module.dashboard_command("sqlite:////srv/optuna.db")
    assert Path(argv[0]).name == "optuna-dashboard" and Path(argv[0]).parent == Path(sys.executable).parent
    assert argv[1] == "sqlite:////srv/optuna.db" and flag(argv, "--host") == "127.0.0.1"
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)  # the extra not installed
    with pytest.raises(ConfigError, match=r"pip install 'mbr-bench\[dashboard\]'"):
        serve_module.dashboard_command("sqlite:////srv/optuna.db")


@pytest.mark.slow
def test_dashboard_serves_the_workdir_s_studies(tmp_path):
    import json

    import optuna

    workdir = tmp_path / "work"
    workdir.mkdir()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="wall_rearing/pose+lstm", storage=f"sqlite:///{workdir / 'optuna.db'}")
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    port = free_port()
    log = tmp_path / "dashboard.log"
    with open(log, "wb") as output:
        dashboard = subprocess.Popen([sys.executable, "-m", "mbr_bench.benchmark.cli", "dashboard", "--workdir",
                                      str(workdir), "--port", str(port)], stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline, studies = time.monotonic() + START_TIMEOUT, None
        while studies is None and time.monotonic() < deadline:
            assert dashboard.poll() is None, log.read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as response:
                    studies = json.loads(response.read())["study_summaries"]
            except OSError:
                time.sleep(0.5)
        assert studies is not None, log.read_text()[-2000:]
        assert [s["study_name"] for s in studies] == ["wall_rearing/pose+lstm"]
    finally:
        dashboard.send_signal(signal.SIGTERM)
        try:
            dashboard.wait(timeout=30)
        except subprocess.TimeoutExpired:
            dashboard.kill()
