"""File identity: content hashes for cache keys, dataset hashes, weights ids and checksums."""

from __future__ import annotations

import hashlib
from pathlib import Path

# (resolved path, size, mtime) -> sha256: a file hashed once per process unless it changes.
_hash_memo: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks (cache keys follow file content)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def content_hash(path: Path) -> str:
    """sha256 of a file, remembered per (path, size, mtime) within this process."""
    stat = path.stat()
    memo_key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo_key not in _hash_memo:
        _hash_memo[memo_key] = file_sha256(path)
    return _hash_memo[memo_key]
