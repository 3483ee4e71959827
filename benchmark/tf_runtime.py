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


def gpus() -> list:
    """TensorFlow's visible GPUs (empty on a CPU-only machine)."""
    return import_tensorflow().config.list_physical_devices("GPU")


MIXED_PRECISION_ENV = "MBR_BENCH_MIXED_PRECISION"  # auto (default) or off


def mixed_precision_supported() -> bool:
    """Whether every visible GPU computes float16 fast (compute capability 7.0 or more: tensor cores);
    False without a GPU, where float16 would only be slower, or with $MBR_BENCH_MIXED_PRECISION=off."""
    if os.environ.get(MIXED_PRECISION_ENV, "auto").lower() == "off":
        return False
    tf = import_tensorflow()
    devices = gpus()
    if not devices:
        return False
    for device in devices:
        capability = tf.config.experimental.get_device_details(device).get("compute_capability") or (0, 0)
        if tuple(capability) < (7, 0):
            return False
    return True
