"""One JSON encoding for what mbr-bench writes: cache keys and records, model bundles, run artifacts."""

from __future__ import annotations

import json
from typing import Any


def json_default(value: Any) -> Any:
    """For `json.dumps(default=...)`: NumPy scalars as their Python value, anything else (paths) as text."""
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "shape", None) == ():
        return item()
    return str(value)


def to_jsonable(value: Any) -> Any:
    """`value` as it reads back from JSON (tuples become lists, NumPy scalars numbers, paths text)."""
    return json.loads(json.dumps(value, default=json_default))
