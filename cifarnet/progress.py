"""A dependency-free progress bar for long work (downloads, epochs).

On a terminal it redraws one line in place; on anything else (a log file, CI) it stays silent
unless ``plain_every`` asks for an occasional plain line, so logs never fill with bars.
"""
from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """``bar.update(n)`` adds ``n`` done units; ``bar.close()`` ends the line.

    Args:
        total: units expected (0 or None if unknown).
        desc: label at the left.
        unit: ``"B"`` formats sizes in MB; anything else is printed as a count.
        stream: where to draw (default stderr).
        plain_every: on a non-terminal, print a plain line each time this fraction more is done
            (e.g. 0.25); 0 keeps non-terminals silent.
    """

    def __init__(self, total: int | None, desc: str = "", unit: str = "", stream: TextIO | None = None,
                 plain_every: float = 0.0, min_interval: float = 0.1):
        self.total, self.desc, self.unit = total or 0, desc, unit
        self.stream = stream if stream is not None else sys.stderr
        self.interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self.plain_every, self.min_interval = plain_every, min_interval
        self.done, self.start = 0, time.perf_counter()
        self._last_draw, self._next_plain, self.postfix = 0.0, plain_every, ""

    def _fmt(self, n: float) -> str:
        return f"{n / 1e6:.1f} MB" if self.unit == "B" else f"{int(n)}"

    def line(self) -> str:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        if self.total:
            frac = min(self.done / self.total, 1.0)
            bar = "#" * int(frac * 24)
            head = f"{self.desc} [{bar:<24}] {frac:4.0%} {self._fmt(self.done)}/{self._fmt(self.total)}"
        else:
            head = f"{self.desc} {self._fmt(self.done)}"
        rate = self.done / elapsed
        rate_s = f"{rate / 1e6:.1f} MB/s" if self.unit == "B" else f"{rate:.1f} {self.unit or 'it'}/s"
        return f"{head} {rate_s} {elapsed:.0f}s" + (f" {self.postfix}" if self.postfix else "")

    def update(self, n: int = 1, postfix: str | None = None) -> None:
        self.done += n
        if postfix is not None:
            self.postfix = postfix
        now = time.perf_counter()
        if self.interactive:
            if now - self._last_draw >= self.min_interval or (self.total and self.done >= self.total):
                self.stream.write("\r\x1b[2K" + self.line())
                self.stream.flush()
                self._last_draw = now
        elif self.plain_every and self.total and self.done / self.total >= self._next_plain:
            self.stream.write(self.line() + "\n")
            self.stream.flush()
            while self._next_plain <= self.done / self.total:
                self._next_plain += self.plain_every

    def close(self) -> None:
        if self.interactive:
            self.stream.write("\r\x1b[2K" + self.line() + "\n")
            self.stream.flush()
