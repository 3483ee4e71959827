"""From files on disk to frames, crops, pose tracks and labels: manifest, readers, synthetic data."""

import os

# FFmpeg (inside OpenCV) prints its own complaints about a broken file ("moov atom not found") on
# the process's stderr, next to the one-line DataError that says the same with the file and the
# fix. OpenCV reads this variable once, when it first opens or writes a video, which is after this
# package is imported. Set OPENCV_FFMPEG_LOGLEVEL (e.g. 24 for warnings) to see FFmpeg's messages.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
