"""Experiment tracking with MLflow: run hierarchy, metrics, figures, compute cost.

- `runs`: `Tracker` -> `PairRun` (parent run per backbone + head) -> `TrialRun` (nested run per trial).
- `figures`: PR curve and confusion matrix figures and their plot data (pure functions).
- `provenance`: git commit, library versions, dataset/cache tags, seed, peak memory.
- `queries`: store location (`default_tracking_uri`), `ui_command`, read-back for the leaderboard.

The names below are imported on first use, so `import mbr_bench.tracking` stays cheap (MLflow loads
only when a tracker is needed). Nothing here imports TensorFlow or the heads.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Tracker": "runs",
    "PairRun": "runs",
    "TrialRun": "runs",
    "standard_tags": "provenance",
    "package_versions": "provenance",
    "git_commit": "provenance",
    "peak_rss_mb": "provenance",
    "reset_peak_rss": "provenance",
    "default_tracking_uri": "queries",
    "ui_command": "queries",
    "pair_runs": "queries",
    "trial_runs": "queries",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
