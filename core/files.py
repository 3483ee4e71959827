"""Safe writing and locking: writes that never leave a half-written file under its final name, and
locks between processes that die with their holder."""

from __future__ import annotations

import fcntl
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_output(path: str | Path, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of `path` to write; it replaces `path` only when the block ends
    without an error, and is removed otherwise.

    The temporary name is unique per call (several processes may write the same file) and keeps
    the suffix, so writers that pick a format by extension (OpenCV) behave the same. With
    `durable`, the file is flushed to disk before the rename (commit records, whose presence
    says that other files are complete).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial{path.suffix}")
    try:
        yield tmp
        if durable:
            with tmp.open("rb+") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | Path, data: bytes | str, durable: bool = False) -> Path:
    """Write `data` (text as UTF-8) to `path` through `atomic_output`; the folder must exist."""
    payload = data.encode() if isinstance(data, str) else data
    with atomic_output(path, durable) as tmp:
        tmp.write_bytes(payload)
    return Path(path)


@contextmanager
def exclusive_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive POSIX lock on `path` (created if absent) between processes.

    The kernel releases it when the holder dies, so a killed process never leaves it held. It
    serialises, e.g., the first-use set-up of a SQLite database that several workers open at once.
    """
    with open(path, "a+") as handle:
        fcntl.lockf(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(handle, fcntl.LOCK_UN)
