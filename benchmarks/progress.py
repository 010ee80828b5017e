"""A tiny text progress bar on stderr (no tqdm dependency).

On a terminal it redraws one line in place; when stderr is a file or a pipe
(CI logs) it writes one line per step instead, since carriage returns would
pile up into one unreadable line.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, total: int, width: int = 20, stream: TextIO | None = None) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.width = width
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.start = time.monotonic()
        self._last_len = 0

    def step(self, label: str) -> None:
        """Announce the step about to run (``label``), counting the previous one done."""
        self._draw(label)
        self.done += 1

    def _draw(self, label: str) -> None:
        filled = self.width * min(self.done, self.total) // self.total
        bar = "[" + "#" * filled + "." * (self.width - filled) + "]"
        line = "%s %3d%% %6.1fs %s" % (bar, 100 * self.done // self.total, time.monotonic() - self.start, label)
        if self.tty:
            pad = " " * max(self._last_len - len(line), 0)
            self.stream.write("\r" + line + pad)
            self._last_len = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def finish(self, label: str = "done") -> None:
        self.done = self.total
        self._draw(label)
        if self.tty:
            self.stream.write("\n")
        self.stream.flush()

    def note(self, text: str) -> None:
        """A message that must not be overwritten by the bar."""
        if self.tty and self._last_len:
            self.stream.write("\n")
            self._last_len = 0
        self.stream.write(text + "\n")
        self.stream.flush()
