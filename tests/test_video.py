"""Video reading: header facts, exact counts, streaming, seeking and clear errors on bad files."""

from __future__ import annotations

import inspect
from pathlib import Path

import cv2
import numpy as np
import pytest

from mbr_bench.benchmark.data import video
from mbr_bench.benchmark.data.video import VideoInfo, count_frames, iter_frames, probe_video, read_frame
from mbr_bench.core.errors import DataError

W, H, FPS = 128, 48, 25.0
N_BITS = 8  # frame index written as 8 black/white blocks of 16 px: survives lossy codecs


def _frame(index: int) -> np.ndarray:
    """BGR frame whose top band spells `index` in binary and whose bottom-left patch is pure red."""
    frame = np.full((H, W, 3), 40, np.uint8)
    for bit in range(N_BITS):
        if (index >> bit) & 1:
            frame[:24, bit * 16 : (bit + 1) * 16] = 255
    frame[32:, :32] = (0, 0, 255)  # BGR red
    return frame


def _index(frame: np.ndarray) -> int:
    grey = frame[:24].mean(axis=(0, 2))
    return sum(1 << bit for bit in range(N_BITS) if grey[bit * 16 + 4 : bit * 16 + 12].mean() > 150)


def _write(path: Path, n: int, fourcc: str = "mp4v") -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), FPS, (W, H))
    assert writer.isOpened(), f"test setup: cannot write {fourcc} video"
    for i in range(n):
        writer.write(_frame(i % 256))
    writer.release()
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return _write(tmp_path_factory.mktemp("video") / "clip.mp4", 60)


def test_probe_reports_header_facts(clip: Path) -> None:
    info = probe_video(clip)
    assert isinstance(info, VideoInfo)
    assert (info.n_frames, info.width, info.height) == (60, W, H)
    assert info.fps == pytest.approx(FPS)
    assert info.path == clip


def test_count_frames_is_exact(clip: Path) -> None:
    assert count_frames(clip) == 60


def test_iter_frames_yields_every_frame_in_order_as_rgb(clip: Path) -> None:
    frames = list(iter_frames(clip))
    assert [_index(f) for f in frames] == list(range(60))
    first = frames[0]
    assert first.shape == (H, W, 3) and first.dtype == np.uint8
    red = first[36:, 4:28].reshape(-1, 3).mean(axis=0)
    assert red[0] > 200 and red[2] < 60, f"expected RGB order, patch mean {red}"


def test_iter_frames_bgr_on_request(clip: Path) -> None:
    first = next(iter_frames(clip, rgb=False))
    red = first[36:, 4:28].reshape(-1, 3).mean(axis=0)
    assert red[2] > 200 and red[0] < 60


def test_yielded_frames_are_independent(clip: Path) -> None:
    frames = iter_frames(clip)
    a, b = next(frames), next(frames)
    assert not np.shares_memory(a, b)
    assert (_index(a), _index(b)) == (0, 1)


@pytest.mark.parametrize("index", [0, 1, 17, 30, 59])
def test_read_frame_by_index(clip: Path, index: int) -> None:
    frame = read_frame(clip, index)
    assert frame.shape == (H, W, 3)
    assert _index(frame) == index


@pytest.mark.parametrize("index", [-1, 60, 1000])
def test_read_frame_out_of_range(clip: Path, index: int) -> None:
    with pytest.raises(DataError, match=rf"frame {index}.*60 frames"):
        read_frame(clip, index)


_REAL_CAPTURE = cv2.VideoCapture


class _CountingCapture:
    """Wraps cv2.VideoCapture to count decodes and releases."""

    reads = 0
    releases = 0

    def __init__(self, *args):
        self._cap = _REAL_CAPTURE(*args)

    def __getattr__(self, name):
        return getattr(self._cap, name)

    def read(self):
        type(self).reads += 1
        return self._cap.read()

    def release(self):
        type(self).releases += 1
        self._cap.release()


def test_iter_frames_streams_and_releases(tmp_path: Path, monkeypatch) -> None:
    long_clip = _write(tmp_path / "long.mp4", 600)
    monkeypatch.setattr(video.cv2, "VideoCapture", _CountingCapture)
    _CountingCapture.reads = _CountingCapture.releases = 0
    frames = iter_frames(long_clip)
    assert inspect.isgenerator(frames)
    assert _CountingCapture.reads == 0  # nothing opened or decoded before the first next()
    assert _index(next(frames)) == 0
    assert _CountingCapture.reads == 1  # the first frame comes before the other 599 are decoded
    assert _index(next(frames)) == 1
    assert _CountingCapture.reads == 2
    frames.close()  # consumer stops early: the capture must still be released
    assert _CountingCapture.releases == 1
    assert sum(1 for _ in iter_frames(long_clip)) == 600
    assert _CountingCapture.releases == 2


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.mp4"
    for fn in (probe_video, count_frames, lambda p: next(iter_frames(p)), lambda p: read_frame(p, 0)):
        with pytest.raises(DataError, match="nope.mp4.*not found"):
            fn(path)


def test_directory_is_not_a_video(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a file"):
        probe_video(tmp_path)


def test_random_bytes_named_mp4(tmp_path: Path) -> None:
    path = tmp_path / "noise.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes())
    with pytest.raises(DataError) as info:
        probe_video(path)
    message = str(info.value)
    assert "noise.mp4" in message and "ffmpeg -i" in message and "\n" not in message
    with pytest.raises(DataError):
        count_frames(path)


def test_zero_frame_mp4(tmp_path: Path) -> None:
    # OpenCV writes no index for an empty mp4, so it does not even open.
    path = _write(tmp_path / "empty.mp4", 0)
    with pytest.raises(DataError, match="empty.mp4"):
        probe_video(path)


def test_zero_frame_avi(tmp_path: Path) -> None:
    # An empty AVI opens (its header is written first) and then has nothing to decode.
    path = _write(tmp_path / "empty.avi", 0, fourcc="MJPG")
    with pytest.raises(DataError, match="empty.avi.*zero frames"):
        probe_video(path)


def test_truncated_mp4_is_a_clear_error(clip: Path, tmp_path: Path) -> None:
    # OpenCV's mp4 writer puts the index (moov) at the end: cut in half, the file cannot be opened.
    data = clip.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    for fn in (probe_video, count_frames, lambda p: list(iter_frames(p))):
        with pytest.raises(DataError, match="cut.mp4.*cannot be opened.*ffmpeg"):
            fn(cut)


def test_truncated_avi_header_lies_count_is_exact(tmp_path: Path) -> None:
    # AVI keeps its header at the start: a cut file opens, claims every frame, decodes only some.
    full = _write(tmp_path / "full.avi", 120, fourcc="MJPG")
    data = full.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    info = probe_video(cut)
    assert info.n_frames == 120
    n = count_frames(cut)
    assert 0 < n < 120
    assert [_index(f) for f in iter_frames(cut)] == list(range(n))
    assert _index(read_frame(cut, n - 1)) == n - 1
    with pytest.raises(DataError, match=rf"frame {n + 5} does not decode.*truncated"):
        read_frame(cut, n + 5)


def test_errors_are_one_line(tmp_path: Path) -> None:
    path = tmp_path / "text.mp4"
    path.write_text("not a video\n" * 10)
    with pytest.raises(DataError) as info:
        probe_video(path)
    assert "\n" not in str(info.value)


def test_real_video_facts(openfield_video: Path) -> None:
    info = probe_video(openfield_video)
    assert (info.width, info.height, info.n_frames) == (640, 480, 2330)
    assert info.fps == pytest.approx(30.0, abs=0.01)
    first = next(iter_frames(openfield_video))
    assert first.shape == (480, 640, 3)
    # Top-view open field: a bright arena floor dominates the frame.
    assert np.median(first) > 150
    np.testing.assert_array_equal(read_frame(openfield_video, 0), first)
    # Seeking is exact on this H.264 file: frame 400 by seek equals frame 400 by streaming.
    streamed = next(f for i, f in enumerate(iter_frames(openfield_video)) if i == 400)
    np.testing.assert_array_equal(read_frame(openfield_video, 400), streamed)


def test_real_video_exact_count(openfield_video: Path) -> None:
    assert count_frames(openfield_video) == 2330
