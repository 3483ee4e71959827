"""The embedding cache: hits, misses, key sensitivity, and writes that die half-way."""

import json
import multiprocessing
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from mbr_bench.core.errors import CacheError, DataError
from mbr_bench.benchmark.features.cache import CacheKey, EmbeddingCache


def _key(video_id="v1", **extra):
    return CacheKey(video_id, {"backbone": {"backbone": "toy", "weights": "none"}, "video_sha256": "abc", **extra})


def _fill(cache, key, data):
    info = {}
    with cache.writer(key, data.shape, info) as out:
        out[:] = data
        info["seconds"] = 1.5
    return info


def test_miss_then_hit_returns_memmap_with_same_values(tmp_path):
    cache = EmbeddingCache(tmp_path)
    key = _key()
    assert cache.load(key) is None
    data = np.random.default_rng(0).normal(size=(50, 7)).astype(np.float32)
    _fill(cache, key, data)
    loaded = cache.load(key)
    assert isinstance(loaded, np.memmap)
    np.testing.assert_array_equal(loaded, data)
    record = cache.record(key)
    assert record["shape"] == [50, 7] and record["seconds"] == 1.5
    assert cache.verify(key)


def test_every_key_field_changes_the_entry(tmp_path):
    cache = EmbeddingCache(tmp_path)
    _fill(cache, _key(), np.ones((3, 2), np.float32))
    assert cache.load(_key(crop={"mode": "pose", "size": 100})) is None
    assert cache.load(_key(video_id="v2")) is None
    assert _key().digest != _key(video_sha256="abd").digest
    assert _key().digest == _key().digest


def test_failure_inside_the_block_leaves_nothing(tmp_path):
    cache = EmbeddingCache(tmp_path)
    key = _key()
    with pytest.raises(DataError):
        with cache.writer(key, (10, 2), {}) as out:
            out[:5] = 1
            raise DataError("video truncated")
    assert cache.load(key) is None
    assert list(tmp_path.rglob("*.tmp")) == []
    assert list(tmp_path.rglob("*.json")) == []


def _write_forever(root: str, ready: "multiprocessing.synchronize.Event") -> None:
    cache = EmbeddingCache(root)
    with cache.writer(_key(), (1000, 64), {}) as out:
        out[:500] = 1.0
        ready.set()
        time.sleep(60)  # killed here, half-way through


def test_write_killed_half_way_reads_as_miss(tmp_path):
    ready = multiprocessing.get_context("fork").Event()
    process = multiprocessing.get_context("fork").Process(target=_write_forever, args=(str(tmp_path), ready))
    process.start()
    assert ready.wait(30)
    os.kill(process.pid, signal.SIGKILL)
    process.join()
    cache = EmbeddingCache(tmp_path)
    assert cache.load(_key()) is None
    # A fresh write of the same key then succeeds and is read back.
    _fill(cache, _key(), np.full((1000, 64), 2.0, np.float32))
    assert float(cache.load(_key())[999, 63]) == 2.0


def test_truncated_or_mismatched_array_is_rejected(tmp_path):
    cache = EmbeddingCache(tmp_path)
    key = _key()
    _fill(cache, key, np.ones((20, 4), np.float32))
    array_path = cache.array_path(key)
    with open(array_path, "r+b") as handle:  # a later partial overwrite, e.g. a crashed copy
        handle.truncate(array_path.stat().st_size - 16)
    assert cache.load(key) is None

    _fill(cache, key, np.ones((20, 4), np.float32))
    record_path = array_path.with_suffix(".json")
    record = json.loads(record_path.read_text())
    record["digest"] = "0" * 24
    record_path.write_text(json.dumps(record))
    assert cache.load(key) is None


def test_checksum_detects_flipped_bytes(tmp_path):
    cache = EmbeddingCache(tmp_path)
    key = _key()
    _fill(cache, key, np.zeros((20, 4), np.float32))
    path = cache.array_path(key)
    with open(path, "r+b") as handle:
        handle.seek(-4, os.SEEK_END)
        handle.write(b"\x01\x02\x03\x04")
    assert cache.load(key) is not None  # same size: the cheap check passes
    assert not cache.verify(key)


def test_unwritable_cache_dir_is_a_one_line_cache_error(tmp_path, monkeypatch):
    import errno
    import tempfile

    def denied(*args, **kwargs):  # what a read-only folder gives a non-root user
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    with pytest.raises(CacheError) as info:
        _fill(EmbeddingCache(tmp_path / "ro"), _key(), np.ones((2, 2), np.float32))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(tmp_path / "ro")) and "not writable" in message and "--cache-dir" in message


def test_disk_full_is_a_cache_error_and_leaves_no_entry(tmp_path, monkeypatch):
    import errno

    cache = EmbeddingCache(tmp_path)
    real_replace = os.replace

    def full_disk(src, dst):
        if str(dst).endswith(".npy"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(CacheError, match="disk full"):
        _fill(cache, _key(), np.ones((4, 2), np.float32))
    monkeypatch.undo()
    assert cache.load(_key()) is None
    assert [p.name for p in Path(tmp_path).rglob("*") if p.is_file()] == []


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664)])
def test_cache_files_follow_the_umask_so_a_shared_cache_works(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        cache = EmbeddingCache(tmp_path)
        _fill(cache, _key(), np.ones((3, 2), np.float32))
    finally:
        os.umask(previous)
    written = sorted(p for p in tmp_path.rglob("*") if p.suffix in (".npy", ".json"))
    assert [p.suffix for p in written] == [".json", ".npy"]
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in written} == {p.name: oct(mode) for p in written}
