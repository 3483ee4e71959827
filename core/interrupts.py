"""Ctrl-C during training, raised at a safe point instead of wherever the signal lands.

Python's own SIGINT handler raises KeyboardInterrupt in whatever Python code runs next. Inside a
Keras fit that is often a finaliser or weakref callback of a TensorFlow object, where the exception
is printed as "Exception ignored" and lost: the user's Ctrl-C does nothing and training goes on.
Inside `deferred_interrupts()` the first Ctrl-C is only recorded, and `raise_if_interrupted()`,
called from the training callbacks at each batch's and epoch's end, raises it there. A second
Ctrl-C raises at once, as usual.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_state = {"deferring": 0, "requested": False}


def _handler(signum: int, frame: Any) -> None:
    if _state["deferring"] and not _state["requested"]:
        _state["requested"] = True
        return
    raise KeyboardInterrupt


def raise_if_interrupted() -> None:
    """Raise the KeyboardInterrupt that a Ctrl-C inside `deferred_interrupts()` recorded, if any."""
    if _state["requested"]:
        _state["requested"] = False
        raise KeyboardInterrupt


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Within: a Ctrl-C waits for the next `raise_if_interrupted()` (or the block's end). Only in the
    main thread and only over Python's default handler; elsewhere a no-op."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) not in (signal.default_int_handler, _handler)):
        yield
        return
    previous = signal.signal(signal.SIGINT, _handler)
    _state["deferring"] += 1
    pending = False
    try:
        yield
    finally:
        _state["deferring"] -= 1
        if not _state["deferring"]:
            signal.signal(signal.SIGINT, previous)
            pending, _state["requested"] = bool(_state["requested"]), False
    if pending:  # recorded after the last check: raised now that the block is done
        raise KeyboardInterrupt
