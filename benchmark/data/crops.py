"""Mouse-centred square crops, streamed frame by frame, for the image backbones.

Three ways to place the crop (`CropSettings.mode`):

* ``pose``: centred on one or more pose body parts (the caller passes the per-frame centres);
* ``tracker``: centred on the built-in background-subtraction tracker (`track_centroids`), for
  videos without a pose file, where the mouse is the only thing that moves;
* ``full``: no crop, the whole frame padded to a square.

Pixels outside the frame are filled by replicating the frame's border (arena floor or wall):
black padding would look like a dark mouse to a CNN.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm.auto import tqdm

from ...core.errors import ConfigError, DataError
from .video import count_frames, iter_frames, probe_video

CROP_MODES = ("pose", "tracker", "full")
MIN_CROP_SIZE = 8


@dataclass(frozen=True)
class CropSettings:
    """How frames are cropped before the backbone; the `crop:` mapping of dataset.yaml."""

    mode: str = "pose"  # "pose" | "tracker" | "full"
    size: int = 160  # side of the square crop, in source-frame pixels
    centre: tuple[str, ...] = ("midbody",)  # body part(s) the crop is centred on; the mean when several
    min_likelihood: float = 0.6  # pose points below this count as missing

    def __post_init__(self) -> None:
        if not isinstance(self.mode, str) or self.mode not in CROP_MODES:
            raise ConfigError(f"crop.mode must be one of {', '.join(CROP_MODES)}; got {self.mode!r}")
        if isinstance(self.size, bool) or not isinstance(self.size, (int, np.integer)) or self.size < MIN_CROP_SIZE:
            raise ConfigError(f"crop.size must be a whole number of pixels >= {MIN_CROP_SIZE}; got {self.size!r}")
        object.__setattr__(self, "size", int(self.size))
        centre = (self.centre,) if isinstance(self.centre, str) else self.centre
        try:
            centre = tuple(centre)
        except TypeError:
            raise ConfigError(f"crop.centre must be a body-part name or a list of names; got {self.centre!r}") from None
        if not centre or not all(isinstance(part, str) and part.strip() for part in centre):
            raise ConfigError(f"crop.centre must be a non-empty body-part name or list of names; got {self.centre!r}")
        object.__setattr__(self, "centre", tuple(part.strip() for part in centre))
        likelihood = self.min_likelihood
        is_number = isinstance(likelihood, (int, float, np.number)) and not isinstance(likelihood, bool)
        if not is_number or not 0 <= likelihood <= 1:
            raise ConfigError(f"crop.min_likelihood must be a number between 0 and 1; got {likelihood!r}")
        object.__setattr__(self, "min_likelihood", float(likelihood))

    def key(self) -> dict[str, Any]:
        """The settings that change the crops' pixels, for the embedding cache key.

        Mode ``full`` depends on nothing else, ``tracker`` on the size, ``pose`` on every field.
        """
        if self.mode == "full":
            return {"mode": "full"}
        if self.mode == "tracker":
            return {"mode": "tracker", "size": self.size}
        return {"mode": "pose", "size": self.size, "centre": list(self.centre), "min_likelihood": self.min_likelihood}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> CropSettings:
        """Build from the `crop:` mapping of dataset.yaml (None or empty: the defaults).

        ``centre`` may be one name or a list of names. Unknown keys raise ConfigError.
        """
        if d is None:
            return cls()
        if not isinstance(d, Mapping):
            raise ConfigError(f"crop must be a mapping of settings (mode, size, centre, min_likelihood); got {d!r}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(str(k) for k in d if k not in known)
        if unknown:
            raise ConfigError(f"crop: unknown setting(s) {', '.join(unknown)}; the known ones are {', '.join(known)}")
        return cls(**dict(d))


def _round_half_up(value: float) -> int:
    # Python's round() rounds halves to even; a fixed rule keeps neighbouring frames consistent.
    return int(np.floor(value + 0.5))


def crop_square(frame: np.ndarray, centre_xy: tuple[float, float] | np.ndarray, side: int) -> np.ndarray:
    """A ``side`` x ``side`` crop of ``frame`` (H, W, C) centred on ``centre_xy`` = (x, y).

    The pixel at (round(x), round(y)) (halves rounded up) lands at crop[side // 2, side // 2],
    which is the exact centre for odd sides. Where the square leaves the frame, the frame's
    border pixels are replicated. A crop inside the frame is a view, not a copy.
    """
    side = int(side)
    if side < 1:
        raise ValueError(f"crop side must be >= 1, got {side}")
    if frame.ndim not in (2, 3) or frame.shape[0] == 0 or frame.shape[1] == 0:
        raise ValueError(f"frame must be (H, W) or (H, W, C) and non-empty, got shape {frame.shape}")
    x, y = float(centre_xy[0]), float(centre_xy[1])
    if not (np.isfinite(x) and np.isfinite(y)):
        raise ValueError(f"crop centre must be finite, got ({x}, {y})")
    height, width = frame.shape[:2]
    x0 = _round_half_up(x) - side // 2
    y0 = _round_half_up(y) - side // 2
    x1, y1 = x0 + side, y0 + side
    if x0 >= 0 and y0 >= 0 and x1 <= width and y1 <= height:
        return frame[y0:y1, x0:x1]
    sx0, sx1 = max(x0, 0), min(x1, width)
    sy0, sy1 = max(y0, 0), min(y1, height)
    if sx0 < sx1 and sy0 < sy1:
        inside = frame[sy0:sy1, sx0:sx1]
        out = cv2.copyMakeBorder(inside, sy0 - y0, y1 - sy1, sx0 - x0, x1 - sx1, cv2.BORDER_REPLICATE)
    else:
        # Entirely outside: replicating the border means taking the nearest edge pixel everywhere.
        rows = np.clip(np.arange(y0, y1), 0, height - 1)
        cols = np.clip(np.arange(x0, x1), 0, width - 1)
        out = frame[np.ix_(rows, cols)]
    if out.ndim < frame.ndim:  # copyMakeBorder drops a trailing channel axis of size 1
        out = out[..., np.newaxis]
    return out


def fit_square(frame: np.ndarray) -> np.ndarray:
    """Pad a frame to a square (side = its longer side), centred, by replicating its border.

    Nothing is stretched, so a later resize keeps the aspect ratio.
    """
    height, width = frame.shape[:2]
    if height == width:
        return frame
    extra = abs(width - height)
    before, after = extra // 2, extra - extra // 2
    if height < width:
        out = cv2.copyMakeBorder(frame, before, after, 0, 0, cv2.BORDER_REPLICATE)
    else:
        out = cv2.copyMakeBorder(frame, 0, 0, before, after, cv2.BORDER_REPLICATE)
    if out.ndim < frame.ndim:
        out = out[..., np.newaxis]
    return out


def _grey(frame_bgr: np.ndarray) -> np.ndarray:
    return frame_bgr if frame_bgr.ndim == 2 else cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY)


def _background(path: Path, n_frames: int, n_background: int) -> np.ndarray:
    """Per-pixel median of ``n_background`` grey frames spread evenly over the video.

    One grab-only pass: on long-GOP H.264 this is several times faster than seeking to each sample,
    and it needs no trust in the header's frame count.
    """
    n_samples = min(n_background, max(n_frames, 1))
    wanted = set(np.linspace(0, max(n_frames - 1, 0), num=n_samples).round().astype(int).tolist())
    samples = []
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        index = 0
        while len(samples) < len(wanted) and cap.grab():
            if index in wanted:
                ok, frame = cap.retrieve()
                if ok and frame is not None:
                    samples.append(_grey(frame))
            index += 1
    finally:
        cap.release()
    if not samples:
        raise DataError(f"{path}: no frame decodes, so the tracker has no background; re-encode the video")
    return np.median(np.stack(samples), axis=0).astype(np.uint8)


def hold_gaps(centres: np.ndarray) -> np.ndarray:
    """Fill NaN rows with the last known position (leading NaNs with the first known one)."""
    found = np.isfinite(centres).all(axis=1)
    if found.all():
        return centres
    idx = np.where(found, np.arange(len(centres)), -1)
    np.maximum.accumulate(idx, out=idx)
    first = int(np.argmax(found))
    idx[idx < 0] = first
    return centres[idx]


BLOB_COLUMNS = ("x", "y", "area", "major", "minor", "angle")  # what the tracker records per frame
TRACKER_VERSION = "blob-tracker-v2"  # bump when detection changes what it finds


def _largest_blob(mask: np.ndarray, min_area: int) -> tuple[float, ...]:
    """The largest 8-connected blob of ``mask`` (holes filled): centroid x, y, area, major and minor
    axis lengths (4 standard deviations along each principal axis, the full length of an
    ellipse) and the major axis angle (rad, modulo pi); NaNs when nothing reaches ``min_area``.

    Outer contours plus a raster of the winner only: several times faster than
    connectedComponentsWithStats on a whole frame, which dominated the tracker's time.
    """
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return (np.nan,) * len(BLOB_COLUMNS)
    # Polygon area through pixel centres under-counts thin blobs, but only ranks them here.
    best = max(contours, key=lambda c: (cv2.contourArea(c), len(c)))
    x, y, w, h = cv2.boundingRect(best)
    blob = np.zeros((h, w), np.uint8)
    cv2.drawContours(blob, [best], -1, 255, thickness=cv2.FILLED, offset=(-x, -y))
    m = cv2.moments(blob, binaryImage=True)
    area = m["m00"]
    if area < min_area:
        return (np.nan,) * len(BLOB_COLUMNS)
    cov_xx, cov_yy, cov_xy = m["mu20"] / area, m["mu02"] / area, m["mu11"] / area
    spread = np.sqrt(((cov_xx - cov_yy) / 2) ** 2 + cov_xy**2)
    major = 4 * np.sqrt(max((cov_xx + cov_yy) / 2 + spread, 0.0))
    minor = 4 * np.sqrt(max((cov_xx + cov_yy) / 2 - spread, 0.0))
    angle = 0.5 * np.arctan2(2 * cov_xy, cov_xx - cov_yy)
    return (x + m["m10"] / area, y + m["m01"] / area, area, major, minor, angle)


class BlobTracker:
    """Finds the one moving object (the mouse) in each frame of one video, against its background.

    Background = per-pixel median of ``n_background`` frames sampled evenly across the video.
    Each frame: grey absolute difference to the background, threshold (Otsu, but never below a
    fixed contrast floor so that an empty arena gives no blob), a morphological opening to drop
    compression noise and thin structures such as the tail, then the largest connected component
    of at least ``min_area`` pixels (see `_largest_blob`). One frame at a time, so the same pass
    can crop around what it finds.
    """

    def __init__(self, path: str | Path, n_background: int = 50, min_area: int = 30) -> None:
        if n_background < 1:
            raise ConfigError(f"n_background must be >= 1, got {n_background}")
        info = probe_video(path)
        self.path = info.path
        self.n_frames = info.n_frames
        self.min_area = min_area
        self.background = _background(self.path, info.n_frames, n_background)
        # Opening kernel side scales with resolution: 5 px at 480 lines, never below 3; drops tails and specks.
        k = max(3, int(round(min(info.width, info.height) / 96)) | 1)
        self.kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
        self.min_contrast = 20  # grey levels; below this a difference is lighting flicker or codec noise

    def detect(self, frame: np.ndarray, rgb: bool = False) -> tuple[float, ...]:
        """One BGR (RGB with `rgb`, or grey) frame -> the blob's `BLOB_COLUMNS` values (NaNs when none)."""
        grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) if rgb and frame.ndim == 3 else _grey(frame)
        diff = cv2.absdiff(grey, self.background)
        level, mask = cv2.threshold(diff, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
        if level < self.min_contrast:
            _, mask = cv2.threshold(diff, self.min_contrast, 255, cv2.THRESH_BINARY)
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, self.kernel)
        return _largest_blob(mask, self.min_area)


def track_blobs(path: str | Path, n_background: int = 50, min_area: int = 30, progress: bool = False) -> np.ndarray:
    """(T, len(BLOB_COLUMNS)) float64 per frame of the video; NaN rows where nothing was found.

    Raises DataError when no frame has a moving object: use crop mode ``full`` or a pose file.
    """
    tracker = BlobTracker(path, n_background, min_area)
    frames = iter_frames(tracker.path, rgb=False)
    if progress:
        frames = tqdm(frames, total=tracker.n_frames, desc=f"tracking {tracker.path.name}", unit="frame")
    blobs = np.asarray([tracker.detect(frame) for frame in frames], dtype=np.float64).reshape(-1, len(BLOB_COLUMNS))
    require_found(tracker.path, blobs)
    return blobs


def require_found(path: Path, blobs: np.ndarray) -> None:
    if not np.isfinite(blobs[:, :2]).any():
        raise DataError(
            f"{path}: the tracker found no moving object in {len(blobs)} frames; "
            "use crop mode 'full' or give a pose file and crop mode 'pose'"
        )


def track_centroids(
    path: str | Path, n_background: int = 50, min_area: int = 30, progress: bool = False
) -> np.ndarray:
    """Per-frame (x, y) of the one moving object (the mouse), as a (T, 2) float64 array.

    See `BlobTracker`. Frames where nothing is found hold the last position (the first found one
    at the start). Raises DataError when no frame has a moving object.
    """
    return hold_gaps(track_blobs(path, n_background, min_area, progress)[:, :2])


def _resize(image: np.ndarray, out_size: int | tuple[int, ...]) -> Any:
    """The square `image` at `out_size` pixels; with a tuple of sizes, a tuple of images (one crop
    pass feeding backbones of different input sizes, each resized from the same crop)."""
    if isinstance(out_size, tuple):
        return tuple(_resize(image, size) for size in out_size)
    side = image.shape[0]
    if side == out_size:
        return np.ascontiguousarray(image)  # a crop may be a view into the whole frame
    interpolation = cv2.INTER_AREA if out_size < side else cv2.INTER_LINEAR
    return cv2.resize(image, (out_size, out_size), interpolation=interpolation)


_MAX_PENDING = 64  # frames held back at a video's start until the tracker first finds the mouse


def iter_crops(
    path: str | Path,
    settings: CropSettings,
    out_size: int | tuple[int, ...],
    centres: np.ndarray | None = None,
    tracker: BlobTracker | None = None,
    blobs: list[tuple[float, ...]] | None = None,
) -> Iterator[Any]:
    """Stream one (out_size, out_size, 3) uint8 RGB crop per frame of the video, in one decode pass.

    With a tuple of sizes, each frame gives a tuple of crops, one per size, each resized from the
    same crop (what an image backbone alone would get at that size).

    ``centres`` is (T, 2) (x, y) per frame: required in mode ``pose`` (from the pose file),
    ignored in mode ``full``. In mode ``tracker`` the `BlobTracker` (built here when None) finds the
    mouse in each frame as it is decoded and the crop follows it. With ``blobs`` given, every
    frame's tracker result is appended to it (any mode; a `tracker` is then built if none is
    passed), so the tracker's path costs no second decode. NaN centres hold the previous one.
    T must equal the video's frame count, else DataError. Settings are checked at the call; the
    video is opened on the first ``next()``.
    """
    out_size = tuple(int(size) for size in out_size) if isinstance(out_size, (tuple, list)) else int(out_size)
    if min(out_size if isinstance(out_size, tuple) else (out_size,), default=0) < 1:
        raise ConfigError(f"crop output size must be >= 1 pixel, got {out_size}")
    path = Path(path)
    if settings.mode == "tracker" or blobs is not None:
        tracker = tracker or BlobTracker(path)
    record = blobs if blobs is not None else []
    if settings.mode == "full":
        return _iter_full(path, out_size, tracker, record)
    if settings.mode == "tracker":
        return _iter_tracked(path, settings.size, out_size, tracker, record)
    if centres is None:
        raise ConfigError(
            f"{path}: crop mode 'pose' needs per-frame centres from a pose file; give the video a pose file "
            "or set crop.mode to 'tracker' or 'full'"
        )
    centres = np.asarray(centres, dtype=np.float64)
    if centres.ndim != 2 or centres.shape[1] != 2:
        raise ValueError(f"centres must be (n_frames, 2) x, y, got shape {centres.shape}")
    if not np.isfinite(centres).any():
        raise DataError(
            f"{path}: no frame has a usable crop centre (all missing or below crop.min_likelihood); "
            "lower crop.min_likelihood, choose other crop.centre body parts, or use crop mode 'tracker'"
        )
    return _iter_centred(path, settings.size, out_size, centres, tracker, record)


def _iter_full(path: Path, out_size: int, tracker: BlobTracker | None, blobs: list) -> Iterator[np.ndarray]:
    for frame in iter_frames(path):
        if tracker is not None:
            blobs.append(tracker.detect(frame, rgb=True))
        yield _resize(fit_square(frame), out_size)


def _iter_tracked(path: Path, side: int, out_size: int, tracker: BlobTracker, blobs: list) -> Iterator[np.ndarray]:
    """Track and crop in one pass. Frames before the mouse is first found wait (up to _MAX_PENDING)
    and are cropped where it is first found; beyond that they are cropped at the frame's centre."""
    pending: list[np.ndarray] = []
    last: tuple[float, float] | None = None
    for frame in iter_frames(path):
        blob = tracker.detect(frame, rgb=True)
        blobs.append(blob)
        if np.isfinite(blob[0]):
            last = (blob[0], blob[1])
        if last is None:
            pending.append(frame)
            if len(pending) > _MAX_PENDING:
                middle = (frame.shape[1] / 2, frame.shape[0] / 2)
                yield from (_resize(crop_square(f, middle, side), out_size) for f in pending)
                pending.clear()
            continue
        yield from (_resize(crop_square(f, last, side), out_size) for f in pending)
        pending.clear()
        yield _resize(crop_square(frame, last, side), out_size)
    if pending:  # never found: the same error as the two-pass tracker gives
        require_found(path, np.asarray(blobs, dtype=np.float64).reshape(-1, len(BLOB_COLUMNS)))


def _iter_centred(
    path: Path, side: int, out_size: int, centres: np.ndarray, tracker: BlobTracker | None, blobs: list
) -> Iterator[np.ndarray]:
    centres = hold_gaps(centres)
    n_centres = len(centres)
    # Catch a mismatch before any work when the header disagrees; decode to be sure, headers can lie.
    n_header = probe_video(path).n_frames
    if n_header != n_centres:
        n_video = count_frames(path)
        if n_video != n_centres:
            raise DataError(_mismatch(path, n_video, n_centres))
    n = 0
    for frame in iter_frames(path):
        if n >= n_centres:
            raise DataError(_mismatch(path, count_frames(path), n_centres))
        if tracker is not None:
            blobs.append(tracker.detect(frame, rgb=True))
        yield _resize(crop_square(frame, centres[n], side), out_size)
        n += 1
    if n != n_centres:
        raise DataError(_mismatch(path, n, n_centres, n_header))


def _mismatch(path: Path, n_video: int, n_centres: int, n_header: int | None = None) -> str:
    if n_header is not None and n_video < n_header == n_centres:
        # The pose matches the header: the recording was cut short after the pose was made.
        return (
            f"{path}: the video has {n_video} frames but there are {n_centres} crop centres (one per pose row) "
            f"and its header lists {n_header}, so the video is truncated; copy the complete video again "
            "(or redo the pose on this shorter file)"
        )
    return (
        f"{path}: the video has {n_video} frames but there are {n_centres} crop centres (one per pose row); "
        "the pose file must come from this exact video, re-run pose estimation on it or trim one to match"
    )
