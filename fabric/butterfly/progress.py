"""Live progress of the butterfly demo for a person watching.

On a terminal: one line redrawn in place (a bar of delivered messages, the rate, the latest
event), with each event also printed above it. Elsewhere (a pipe, CI): plain lines, one per
event and one per ``PLAIN_EVERY_S`` of progress. Everything goes to ``stream`` (stderr when
the result is printed as JSON on stdout).
"""
from __future__ import annotations

import sys
import time
from typing import TextIO

BAR = 30
PLAIN_EVERY_S = 2.0


class Progress:
    """Shows delivered / total, the delivery rate and events as they happen."""

    def __init__(self, total: int, stream: TextIO | None = None, *,
                 live: bool | None = None) -> None:
        self.total = max(1, total)
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.start = time.monotonic()
        self._last_plain = 0.0
        self._last_draw = 0.0
        self._delivered = 0
        self._rate = 0.0
        self._rate_mark = (self.start, 0)
        self._drawn = False

    def event(self, text: str) -> None:
        """Print one event line (elapsed seconds first)."""
        self._clear()
        self.stream.write(f"[{time.monotonic() - self.start:6.2f}s] {text}\n")
        self.stream.flush()
        self._draw()

    def update(self, delivered: int) -> None:
        """The number of messages delivered so far."""
        now = time.monotonic()
        mark_at, mark_count = self._rate_mark
        if now - mark_at >= 0.5:
            self._rate = (delivered - mark_count) / (now - mark_at)
            self._rate_mark = (now, delivered)
        self._delivered = delivered
        if self.live:
            if now - self._last_draw >= 0.1:
                self._last_draw = now
                self._draw()
        elif now - self._last_plain >= PLAIN_EVERY_S:
            self._last_plain = now
            self.stream.write(f"[{now - self.start:6.2f}s] {self._summary()}\n")
            self.stream.flush()

    def close(self) -> None:
        """End the live line."""
        self._clear()

    def _summary(self) -> str:
        return (f"delivered {self._delivered:,}/{self.total:,} "
                f"({100 * self._delivered / self.total:.0f}%), {self._rate:,.0f} msgs/s")

    def _draw(self) -> None:
        if not self.live:
            return
        done = min(BAR, BAR * self._delivered // self.total)
        bar = "#" * done + "-" * (BAR - done)
        self.stream.write(f"\r[{bar}] {self._summary()}\x1b[K")
        self.stream.flush()
        self._drawn = True

    def _clear(self) -> None:
        if self.live and self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn = False
