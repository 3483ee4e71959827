"""What a run came from: code version, library versions, data and cache identity, seed, memory.

Nothing here imports TensorFlow or any other heavy library: versions are read from package metadata.
"""

from __future__ import annotations

import json
import platform
import resource
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from .schema import TAG_CACHE_KEYS, TAG_DATASET_HASH, TAG_GIT_COMMIT, TAG_GIT_DIRTY, TAG_SEED, TAG_VERSIONS

PACKAGE_DIR = Path(__file__).resolve().parents[1]

# Distribution names as pip knows them (not import names).
VERSIONED_DISTRIBUTIONS = (
    "tensorflow",
    "keras",
    "keras-tcn",
    "optuna",
    "mlflow",
    "numpy",
    "scikit-learn",
    "opencv-python-headless",
    "pandas",
    "mbr-bench",
)

# MLflow 2.x servers from before the limit was raised to 8000 still reject tag values over 5000 chars.
TAG_VALUE_LIMIT = 5000


def git_commit(path: str | Path | None = None) -> str | None:
    """The ``HEAD`` commit of the git checkout holding `path` (default: this package).

    Returns None when `path` is not in a git checkout, git is not installed or does not answer;
    never raises.
    """
    return _git(path, "rev-parse", "HEAD")


def git_dirty(path: str | Path | None = None) -> bool | None:
    """Whether tracked files differ from ``HEAD`` (untracked files ignored); None where git cannot tell."""
    status = _git(path, "status", "--porcelain", "--untracked-files=no")
    return None if status is None else bool(status)


def _git(path: str | Path | None, *args: str) -> str | None:
    where = Path(path) if path is not None else PACKAGE_DIR
    try:
        done = subprocess.run(
            ["git", "-C", str(where), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def package_versions() -> dict[str, str]:
    """Installed versions of the libraries that shape results; ``"absent"`` for those not installed."""
    versions = {"python": platform.python_version()}
    for name in VERSIONED_DISTRIBUTIONS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def peak_rss_mb(include_children: bool = False) -> float:
    """Peak resident memory of this process in MiB (``getrusage``), since start or the last `reset_peak_rss`.

    `include_children` adds the peak of the largest child process that has been waited for
    (``RUSAGE_CHILDREN`` reports the largest child, not a sum): an upper bound for work done in
    subprocesses, e.g. a video decoder. Threads count as this process either way.
    """
    # ru_maxrss is in KiB on Linux, in bytes on macOS.
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if include_children:
        peak += resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return peak / scale


def reset_peak_rss() -> bool:
    """Restart the peak-memory count at the current size, so `peak_rss_mb` measures one trial, not the process.

    Linux only (``/proc/self/clear_refs``); returns False where the peak cannot be reset, in which
    case `peak_rss_mb` keeps reporting the peak since the process started.
    """
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def json_tag(value, limit: int = TAG_VALUE_LIMIT) -> str:
    """`value` (a dict) as compact JSON no longer than `limit`, still valid JSON when cut.

    Entries that do not fit are dropped in key order and counted under ``"_truncated"``.
    """
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    if len(text) <= limit or not isinstance(value, dict):
        return text if len(text) <= limit else json.dumps({"_truncated": 1})
    kept: dict = {}
    keys = sorted(value)
    for key in keys:
        # Reserve room for the widest count so adding the real one cannot overflow.
        candidate = {**kept, key: value[key], "_truncated": len(keys)}
        if len(json.dumps(candidate, sort_keys=True, separators=(",", ":"))) > limit:
            break
        kept[key] = value[key]
    kept["_truncated"] = len(keys) - len(kept)
    return json.dumps(kept, sort_keys=True, separators=(",", ":"))


def standard_tags(dataset_hash: str, cache_keys: dict[str, str], seed: int | None) -> dict[str, str]:
    """The provenance tags every pair and trial run carries.

    Returns ``mbr.dataset_hash``, ``mbr.cache_keys`` (JSON, cut to fit a tag), ``mbr.git_commit``
    (``"unknown"`` outside a git checkout), ``mbr.git_dirty``, ``mbr.seed`` and ``mbr.versions`` (JSON).
    """
    commit = git_commit()
    dirty = git_dirty() if commit else None
    return {
        TAG_DATASET_HASH: str(dataset_hash),
        TAG_CACHE_KEYS: json_tag({str(k): str(v) for k, v in cache_keys.items()}),
        TAG_GIT_COMMIT: commit or "unknown",
        TAG_GIT_DIRTY: "unknown" if dirty is None else str(dirty).lower(),
        TAG_SEED: str(seed),
        TAG_VERSIONS: json_tag(package_versions()),
    }
