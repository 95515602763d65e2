"""The node's tick clock: the Raft core's logical time, and the one timer that feeds it.

The core counts ticks of ``tick_s`` seconds; tick ``n`` falls at ``start + n * tick_s`` on the
monotonic clock. ``advance(now)`` says how many ticks passed since it was last asked (the
caller hands them to ``core.tick``).

One timer wakes the node at the next tick at which the core has something to do (the caller
passes ``core.ticks_until_due()``), and at least every ``max_timer_s`` (request deadlines are
checked then): ``schedule`` after each tick; ``bring_forward`` after each step, when the step
made something due sooner (a heartbeat, an election). The timer fires ``TIMER_SLACK_S`` after
the tick boundary, never just before it.

While the loop is blocked in its own fsync the clock stands still (``pause``): a stalled disk
must not make a node time out the leader whose heartbeats are waiting in its socket. (A
slower clock is always safe.)

Nothing here reads the clock: ``now`` is passed in; the loop is given at ``start``.
"""
from __future__ import annotations

import asyncio
from typing import Callable

__all__ = ["MAX_TIMER_S", "TIMER_SLACK_S", "TickClock"]

MAX_TIMER_S = 0.05
"""Longest sleep of the tick timer (request deadlines are checked at least this often)."""
TIMER_SLACK_S = 0.0002
"""The timer wakes this long after a tick boundary, never just before it."""


class TickClock:
    """Logical ticks from the monotonic clock, and the timer calling ``on_tick``."""

    def __init__(self, tick_s: float, on_tick: Callable[[], None], *,
                 max_timer_s: float = MAX_TIMER_S) -> None:
        self.tick_s = tick_s
        self.max_timer_ticks = max(1, round(max_timer_s / tick_s))
        self.ticks = 0
        """Ticks handed out by ``advance`` so far."""
        self._on_tick = on_tick
        self._start = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0  # when the armed timer is due, on the monotonic clock

    # ------------------------------------------------------------------ time

    def start(self, loop: asyncio.AbstractEventLoop, now: float) -> None:
        """Tick 0 is ``now``; the timer first fires one tick later."""
        self._loop = loop
        self._start = now
        self.ticks = 0
        self._timer_at = now + self.tick_s
        self._timer = loop.call_later(self.tick_s, self._on_tick)

    def advance(self, now: float) -> int:
        """The ticks passed since the last call (0 or more); they count as handed out."""
        due = int((now - self._start) / self.tick_s) - self.ticks
        if due <= 0:
            return 0
        self.ticks += due
        return due

    def at(self, ticks: int) -> float:
        """When the tick ``ticks`` after the last one handed out falls."""
        return self._start + (self.ticks + ticks) * self.tick_s

    def pause(self, seconds: float) -> None:
        """Let ``seconds`` pass without ticks (the loop was blocked in its own fsync)."""
        self._start += seconds

    # ------------------------------------------------------------------ the timer

    def schedule(self, now: float, ticks_until_due: int) -> None:
        """Arm the timer for the next tick that does something, ``max_timer_ticks`` at most
        (called from ``on_tick``, whose timer has fired; not once stopped)."""
        if self._loop is not None:
            self._arm(self.at(min(ticks_until_due, self.max_timer_ticks)), now)

    def bring_forward(self, now: float, ticks_until_due: int) -> None:
        """Re-arm the timer if the core is due sooner than it would fire."""
        if self._timer is None:
            return
        due = self.at(ticks_until_due)
        if due < self._timer_at - 1e-6:
            self._timer.cancel()
            self._arm(due, now)

    def stop(self) -> None:
        """Cancel the timer; it is not armed again."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._loop = None

    @property
    def timer_at(self) -> float | None:
        """When the timer fires (monotonic clock), None when it is not armed."""
        return None if self._timer is None else self._timer_at

    def _arm(self, at: float, now: float) -> None:
        self._timer_at = at
        loop = self._loop
        assert loop is not None  # armed only between start() and stop()
        self._timer = loop.call_at(loop.time() + max(0.0, at - now) + TIMER_SLACK_S,
                                   self._on_tick)
