"""The tick clock alone: ticks from the monotonic clock, one timer, brought forward or paused."""
from __future__ import annotations

import pytest

from nameservice.server.clock import TIMER_SLACK_S, TickClock


class Timer:
    def __init__(self, when: float, callback) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """Records the timers armed; its clock is ``now``."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.timers: list[Timer] = []

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback) -> Timer:
        return self.call_at(self.now + delay, callback)

    def call_at(self, when: float, callback) -> Timer:
        self.timers.append(Timer(when, callback))
        return self.timers[-1]

    @property
    def armed(self) -> list[Timer]:
        return [t for t in self.timers if not t.cancelled]


def started(tick_s: float = 0.01, max_timer_s: float = 0.05) -> tuple[TickClock, FakeLoop]:
    loop = FakeLoop()
    clock = TickClock(tick_s, lambda: None, max_timer_s=max_timer_s)
    clock.start(loop, 0.0)  # monotonic time 0 is loop time 1000
    return clock, loop


def test_ticks_are_counted_from_the_start_and_each_is_handed_out_once():
    clock, _ = started()
    assert [clock.advance(t) for t in (0.005, 0.0101, 0.0355, 0.0355, 0.04)] == [0, 1, 2, 0, 1]
    assert clock.ticks == 4


def test_the_first_timer_fires_one_tick_after_the_start():
    clock, loop = started()
    assert [t.when for t in loop.armed] == [pytest.approx(1000.01)]
    assert clock.timer_at == pytest.approx(0.01)


def test_a_pause_holds_every_later_tick_back_by_the_time_paused():
    clock, _ = started()
    clock.pause(0.5)
    assert clock.advance(0.505) == 0
    assert clock.advance(0.521) == 2


def test_the_timer_wakes_at_the_next_due_tick_and_at_least_every_max_timer():
    clock, loop = started(tick_s=0.01, max_timer_s=0.05)
    assert clock.max_timer_ticks == 5
    clock.advance(0.0)
    clock.schedule(0.0, 2)
    assert loop.timers[-1].when == pytest.approx(1000.02 + TIMER_SLACK_S)
    clock.schedule(0.0, 1000)  # nothing due for long: the request deadlines still are
    assert loop.timers[-1].when == pytest.approx(1000.05 + TIMER_SLACK_S)


def test_a_step_brings_the_timer_forward_only_when_something_is_due_sooner():
    clock, loop = started()
    clock.schedule(0.0, 4)  # fires at tick 4
    clock.bring_forward(0.0, 6)
    clock.bring_forward(0.0, 4)
    assert len(loop.armed) == 2  # the first timer (not cancelled: it fired) and tick 4
    clock.bring_forward(0.0, 1)
    assert [t.when for t in loop.armed[1:]] == [pytest.approx(1000.01 + TIMER_SLACK_S)]
    assert clock.timer_at == pytest.approx(0.01)


def test_a_timer_due_in_the_past_fires_at_once():
    clock, loop = started()
    clock.schedule(0.5, 1)  # the loop was blocked: tick 1 is long gone
    assert loop.timers[-1].when == pytest.approx(1000.0 + TIMER_SLACK_S)


def test_a_stopped_clock_arms_no_timer():
    clock, loop = started()
    clock.stop()
    assert loop.armed == [] and clock.timer_at is None
    clock.schedule(0.0, 1)
    clock.bring_forward(0.0, 0)
    assert loop.armed == []
