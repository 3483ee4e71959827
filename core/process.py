"""Which process holds a trial or a run: ``host:pid:start`` identities, and whether one still runs."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def process_identity() -> str:
    """``host:pid:start`` naming this process; `start` tells a live process from a later one with the same pid."""
    return f"{platform.node()}:{os.getpid()}:{_start_ticks(os.getpid()) or ''}"


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity where the platform says, else all of them)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def process_alive(identity: str) -> bool | None:
    """Whether the process named by `process_identity` still runs; None when it ran on another host."""
    parts = identity.rsplit(":", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    host, pid, start = parts[0], int(parts[1]), parts[2]
    if host != platform.node():
        return None
    if pid == os.getpid():
        return start == (_start_ticks(pid) or "")
    ticks = _start_ticks(pid)
    if ticks is not None:
        return ticks == start
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    except OSError:
        return None
    # Without /proc the start time is unknown: a live pid is taken for the same process.
    return True


def _start_ticks(pid: int) -> str | None:
    """The process start time in clock ticks since boot (Linux ``/proc/<pid>/stat`` field 22)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its closing ")".
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None
