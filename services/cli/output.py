"""Terminal output: plain lines, and a progress bar that redraws in place on a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def say(line: str = "") -> None:
    """Print one line at once (the supervisor's output interleaves with waits)."""
    print(line, flush=True)


def warn(line: str) -> None:
    """Print one line on stderr."""
    print(line, file=sys.stderr, flush=True)


def render_bar(done: int, total: int | None, *, width: int = 24) -> str:
    """`[#####-----]  45%` for a known total, empty otherwise."""
    if not total:
        return ""
    share = min(done / total, 1.0)
    filled = round(share * width)
    return f"[{'#' * filled}{'-' * (width - filled)}] {share * 100:3.0f}% "


class Progress:
    """A progress line on stderr: redrawn in place on a terminal, occasional lines otherwise."""

    def __init__(
        self, label: str, total: int | None = None, *, unit: str = "events",
        stream: TextIO | None = None, started: float | None = None,
    ) -> None:
        self.label, self.total, self.unit = label, total, unit
        self.stream = stream or sys.stderr
        self.done = 0
        # Work that began before the bar (grading starts with the first send) counts from then.
        self.started = time.monotonic() if started is None else started
        self._drawn = 0.0
        self._drawn_done = -1
        self._tty = self.stream.isatty()

    def advance(self, count: int) -> None:
        """`count` more units are done."""
        self.set(self.done + count)

    def set(self, done: int, *, extra: str = "") -> None:
        """Progress is now `done` units; redraws at most a few times a second."""
        self.done = done
        now = time.monotonic()
        interval = 0.1 if self._tty else 5.0
        if now - self._drawn >= interval:
            self._drawn = now
            self._draw(extra)

    def finish(self, extra: str = "") -> None:
        """Draw the final state (unless a log already shows it) and end the line."""
        if self._tty or self.done != self._drawn_done:
            self._draw(extra)
        if self._tty:
            self.stream.write("\n")
            self.stream.flush()

    def rate(self) -> float:
        """Units per second since the start."""
        return self.done / max(time.monotonic() - self.started, 1e-9)

    def _draw(self, extra: str) -> None:
        of_total = f"/{self.total:,}" if self.total else ""
        text = (f"{self.label} {render_bar(self.done, self.total)}{self.done:,}{of_total} "
                f"{self.unit}  {self.rate():,.0f}/s {extra}").rstrip()
        self._drawn_done = self.done
        if self._tty:
            self.stream.write(f"\r\x1b[K{text}")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
