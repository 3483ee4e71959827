"""Progress lines for long searches: which pair, trial, fold and epoch, with elapsed time.

On a terminal the epoch line rewrites itself in place; in logs (CI, nohup) only fold and trial
results are printed, one line each, so logs stay short.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from ..core.stores import redact


class SearchProgress:
    def __init__(self, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.live = enabled and self.stream.isatty()
        self.started = time.monotonic()
        self.prefix = ""
        self._dirty = False

    def _elapsed(self) -> str:
        seconds = int(time.monotonic() - self.started)
        return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"

    def _emit(self, text: str, final: bool) -> None:
        if not self.enabled:
            return
        line = redact(f"[{self._elapsed()}] {self.prefix}{text}")  # storage URLs reach every worker's log
        if self.live:
            self.stream.write("\r\033[K" + line + ("\n" if final else ""))
            self._dirty = not final
        elif final:
            self.stream.write(line + "\n")
        self.stream.flush()

    def set_context(self, prefix: str) -> None:
        self.prefix = prefix

    def message(self, text: str) -> None:
        self._emit(text, final=True)

    def warn(self, text: str) -> None:
        """A warning is shown even with progress off: it changes what the results mean."""
        if self.enabled:
            self._emit(f"warning: {text}", final=True)
        else:
            self.stream.write(redact(f"warning: {text}") + "\n")
            self.stream.flush()

    def epoch(self, trial: int, fold: int, n_folds: int, epoch: int, logs: dict) -> None:
        if self.live:
            self._emit(
                f"trial {trial} · fold {fold}/{n_folds} · epoch {epoch} · loss {logs.get('loss', float('nan')):.4f}"
                f" · val PR-AUC {logs.get('val_pr_auc', float('nan')):.3f}",
                final=False,
            )

    def fold(self, trial: int, fold: int, n_folds: int, video: str, pr_auc: float, running: float) -> None:
        """A fold is done: its held-out PR-AUC and the trial's CV score so far, both at the epoch the protocol chose."""
        self._emit(
            f"trial {trial} · fold {fold}/{n_folds} (held out {video}) · PR-AUC {pr_auc:.3f} · CV so far {running:.3f}",
            final=True,
        )
