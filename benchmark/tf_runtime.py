"""Load TensorFlow without drowning the terminal in its start-up chatter.

TensorFlow's C++ runtime prints a few lines (oneDNN notice, CUDA probes) before its own log level
applies; they go to file descriptor 2 directly, so they are held back while the import runs.
Python exceptions raised by the import are not affected.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType


@contextlib.contextmanager
def _silenced_fd2() -> Iterator[None]:
    try:
        saved = os.dup(2)
    except OSError:  # no real stderr (embedded interpreters): nothing to silence
        yield
        return
    sys.stderr.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_tensorflow() -> ModuleType:
    """`import tensorflow`, quietly; idempotent."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Without an NVIDIA device node no GPU can be used; skipping the probe avoids a cuInit error line.
    if not Path("/dev/nvidia0").exists() and not Path("/dev/nvidiactl").exists():
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")
    with _silenced_fd2():
        import tensorflow

        tensorflow.config.list_physical_devices()  # the CUDA probe prints here, if anywhere
    # Every fitted head traces its own forward pass once, by design; TensorFlow's warning about
    # "excessive retracing" counts those as one function's and would only alarm.
    tensorflow.get_logger().addFilter(_NotRetracing())
    return tensorflow


class _NotRetracing(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()
