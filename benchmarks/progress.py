"""A one-line progress bar on stderr for the benchmark runner: redrawn in place on a terminal,
one plain line per finished cell otherwise (CI logs and captured output stay readable).
"""
from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds + 0.5), 60)
    return f"{m}:{s:02d}"


class Progress:
    def __init__(self, total: int, stream: TextIO | None = None, bar: bool | None = None) -> None:
        self.total = max(total, 1)
        self.stream = stream or sys.stderr
        # A bar only where \r really moves the cursor back: elsewhere it would be one endless line.
        self.bar = self.stream.isatty() if bar is None else bar
        self.done = 0
        self.label = ""
        self.t0 = time.monotonic()
        self._drawn = False

    def start(self, label: str) -> None:
        self.label = label
        self._draw()

    def advance(self, line: str | None = None) -> None:
        """One cell finished; ``line`` is its summary (printed above the bar, or instead of it)."""
        self.done += 1
        if line and not self.bar:
            self._print(f"[{self.done}/{self.total}] {line}")
        self._draw()

    def note(self, msg: str) -> None:
        """A message that must stay on screen (errors, skipped tasks)."""
        self._clear()
        self._print(msg)
        self._draw()

    def close(self) -> None:
        if self.bar and self._drawn:
            self.label = "done"
            self._draw()
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False

    def _print(self, msg: str) -> None:
        self.stream.write(msg + "\n")
        self.stream.flush()

    def _clear(self) -> None:
        if self.bar and self._drawn:
            self.stream.write("\r\x1b[2K")
            self._drawn = False

    def _draw(self) -> None:
        if not self.bar:
            return
        elapsed = time.monotonic() - self.t0
        frac = self.done / self.total
        left = f" ~{_clock(elapsed / frac * (1 - frac))} left" if 0 < self.done < self.total else ""
        width = shutil.get_terminal_size((100, 20)).columns
        cells = 24
        filled = int(cells * frac)
        head = (f"[{'#' * filled}{'.' * (cells - filled)}] {self.done}/{self.total} "
                f"{_clock(elapsed)}{left}  ")
        text = head + self.label
        self.stream.write("\r\x1b[2K" + text[:max(width - 1, 10)])
        self.stream.flush()
        self._drawn = True
