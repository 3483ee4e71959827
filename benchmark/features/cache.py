"""Content-addressed embedding cache on disk.

One entry = one video embedded by one backbone with one crop setting: `<digest>.npy` (float32,
frames x dim, memory-mapped on read; uint8 for a clip network's input crops) plus `<digest>.json`, the commit record written last. An entry
counts only when its record exists and agrees with the array file's size and shape, so a write
killed at any point reads as a miss, never as data; `load(..., verify=True)` also checks the
array's sha256 against the record.

The cache may be a folder shared by several workers (a volume, NFS): `claim` holds a POSIX lock on
`<entry>.lock` while one worker computes an entry, so another waits for it instead of computing the
same video; the kernel drops the lock of a worker that dies.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...core.errors import CacheError
from ...core.files import write_atomic
from ...core.hashing import file_sha256
from ...core.jsonio import json_default

# Bump when decoding, cropping or feature code changes what an embedding holds.
CODE_VERSION = "1"
DTYPE = np.float32
# What an entry may hold: embeddings (float32), or a clip network's input crops (uint8: 4x smaller,
# for the finetune head, which trains the network on them).
DTYPES = ("float32", "uint8")


def default_cache_dir(workdir: str | os.PathLike) -> Path:
    """$MBR_BENCH_CACHE_DIR (a folder workers share) if set, else WORKDIR/cache."""
    return Path(os.environ.get("MBR_BENCH_CACHE_DIR") or Path(workdir) / "cache")


@dataclass(frozen=True)
class CacheKey:
    """Everything an embedding depends on; `digest` names the files."""

    video_id: str
    fields: dict[str, Any]  # video/pose content hashes, backbone description, crop settings

    @property
    def digest(self) -> str:
        payload = json.dumps({**self.fields, "code_version": CODE_VERSION}, sort_keys=True, default=json_default)
        return hashlib.sha256(payload.encode()).hexdigest()[:24]


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be opened
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    # Durable: the record's presence is what says the array beside it is complete.
    write_atomic(path, json.dumps(payload, indent=2, sort_keys=True, default=json_default), durable=True)


def _cache_error(root: Path, error: OSError) -> CacheError:
    if error.errno == errno.ENOSPC:
        problem = "disk full"
        fix = "free space there or point --cache-dir at a larger disk"
    elif error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        problem = "not writable"
        fix = "fix its permissions or point --cache-dir at a writable folder"
    else:
        problem = error.strerror or str(error)
        fix = "check the disk, or point --cache-dir elsewhere"
    return CacheError(f"{root}: embedding cache {problem} ({error.__class__.__name__}); {fix}")


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def _reserve(path: Path) -> None:
    """Allocate the memory-mapped file's blocks now: a write through a map onto a full disk is a bus
    error (SIGBUS, no message), while a full disk here is ENOSPC, reported as "disk full"."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as error:
        if error.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # filesystems without fallocate: as before
            raise
    finally:
        os.close(fd)


class EmbeddingCache:
    """Embeddings on disk under `root/<backbone>/<video_id>-<digest>.{npy,json}`."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def _paths(self, key: CacheKey) -> tuple[Path, Path]:
        folder = self.root / str(key.fields.get("backbone", {}).get("backbone", "unknown"))
        stem = f"{key.video_id}-{key.digest}"
        return folder / f"{stem}.npy", folder / f"{stem}.json"

    def array_path(self, key: CacheKey) -> Path:
        return self._paths(key)[0]

    def record(self, key: CacheKey) -> dict[str, Any] | None:
        """The commit record of a valid entry, or None (absent, half-written or inconsistent)."""
        array_path, record_path = self._paths(key)
        try:
            record = json.loads(record_path.read_text())
            size = array_path.stat().st_size
        except (FileNotFoundError, json.JSONDecodeError, NotADirectoryError):
            return None
        if record.get("digest") != key.digest or record.get("nbytes") != size:
            return None
        return record

    def load(self, key: CacheKey, verify: bool = False) -> np.ndarray | None:
        """Memory-mapped (frames, dim) float32 array, or None on a miss.

        With `verify`, an entry whose bytes no longer match its checksum (a damaged disk, a file
        edited by hand) is removed and reads as a miss, so it is computed again.
        """
        hit = self.load_with_record(key, verify)
        return None if hit is None else hit[0]

    def load_with_record(self, key: CacheKey, verify: bool = False) -> tuple[np.ndarray, dict[str, Any]] | None:
        """`load`, with the commit record the array was checked against (read once), or None on a miss."""
        record = self.record(key)
        if record is None:
            return None
        if verify and not self._checksum_ok(key, record):
            self.discard(key)
            return None
        try:
            array = np.load(self._paths(key)[0], mmap_mode="r")
        except (ValueError, OSError):
            return None
        if list(array.shape) != record["shape"] or array.dtype.name != record.get("dtype", "float32") \
                or array.dtype.name not in DTYPES:
            return None
        return array, record

    @contextlib.contextmanager
    def writer(self, key: CacheKey, shape: tuple[int, int], info: dict[str, Any],
               dtype: Any = DTYPE) -> Iterator[np.ndarray]:
        """Yield a writable memory-mapped array (float32, or uint8 crops); commit it only if the block finishes.

        `info` (seconds, frames/s, ...) is stored in the commit record next to the key fields; it is
        read at commit time, so the caller may fill it inside the block.
        """
        if np.dtype(dtype).name not in DTYPES:
            raise ValueError(f"cache entries hold {' or '.join(DTYPES)}, not {np.dtype(dtype).name}")
        array_path, record_path = self._paths(key)
        started = time.perf_counter()
        try:
            array_path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=array_path.parent, prefix=f".{array_path.stem}.", suffix=".npy.tmp")
            os.close(fd)
        except OSError as error:
            raise _cache_error(self.root, error) from error
        tmp = Path(tmp_name)
        committed = False
        try:
            try:
                # mkstemp makes the file 0600; a cache shared by several users needs the umask's mode.
                os.chmod(tmp, 0o666 & ~_umask())
                array = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
                _reserve(tmp)
            except OSError as error:
                raise _cache_error(self.root, error) from error
            yield array  # the caller fills it; its own errors pass through untouched
            try:
                self._commit(key, array, tmp, array_path, record_path, shape, info, started)
            except OSError as error:
                raise _cache_error(self.root, error) from error
            committed = True
        finally:
            if not committed:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()

    @staticmethod
    def _commit(
        key: CacheKey,
        array: np.ndarray,
        tmp: Path,
        array_path: Path,
        record_path: Path,
        shape: tuple[int, int],
        info: dict[str, Any],
        started: float,
    ) -> None:
        array.flush()
        checksum = file_sha256(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, array_path)
        _fsync_dir(array_path.parent)
        record = {
            "digest": key.digest,
            "video_id": key.video_id,
            "shape": list(shape),
            "dtype": array.dtype.name,
            "nbytes": array_path.stat().st_size,
            "sha256": checksum,
            "code_version": CODE_VERSION,
            "key": key.fields,
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "write_seconds": round(time.perf_counter() - started, 3),
            **info,
        }
        # The record is the commit: until it lands, the entry reads as a miss.
        try:
            _write_json_atomic(record_path, record)
        except OSError:
            with contextlib.suppress(FileNotFoundError):  # no array without its record (disk full)
                array_path.unlink()
            raise

    def verify(self, key: CacheKey) -> bool:
        """Full check: the array's bytes still match the checksum in the record."""
        record = self.record(key)
        return record is not None and self._checksum_ok(key, record)

    def _checksum_ok(self, key: CacheKey, record: dict[str, Any]) -> bool:
        array_path = self._paths(key)[0]
        stat = array_path.stat()
        memo = (str(array_path), stat.st_size, stat.st_mtime_ns, record.get("sha256"))
        if memo in _verified:  # read-only entries: once per process is enough
            return True
        ok = file_sha256(array_path) == record.get("sha256")
        if ok:
            _verified.add(memo)
        return ok

    def discard(self, key: CacheKey) -> None:
        """Remove an entry: the record first, so no reader ever sees a record without its array."""
        for path in reversed(self._paths(key)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    @contextlib.contextmanager
    def claim(self, key: CacheKey, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
        """Hold the right to compute `key`: other workers block here until it is released.

        On entry, leftovers of an earlier writer of this entry killed mid-write are removed (nobody
        else can be writing them while we hold the claim). `on_wait(owner)` is called once when
        another worker holds it.
        """
        array_path = self._paths(key)[0]
        lock_path = array_path.with_suffix(".lock")
        try:
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(lock_path, "a+")  # noqa: SIM115 (closed below)
        except OSError as error:
            raise _cache_error(self.root, error) from error
        try:
            try:
                fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                if on_wait is not None:
                    handle.seek(0)
                    on_wait(handle.read().strip() or "another worker")
                fcntl.lockf(handle, fcntl.LOCK_EX)
            for leftover in array_path.parent.glob(f".{array_path.stem}.*.npy.tmp"):
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()
            with contextlib.suppress(OSError):  # who holds it, for the messages of those who wait
                handle.seek(0)
                handle.truncate()
                handle.write(f"{platform.node()} pid {os.getpid()}")
                handle.flush()
            yield
        finally:
            with contextlib.suppress(OSError):
                fcntl.lockf(handle, fcntl.LOCK_UN)
            handle.close()


_verified: set[tuple[str, int, int, Any]] = set()
