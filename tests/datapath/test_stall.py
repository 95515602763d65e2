"""The off-CPU clock tells a stopped (or sleeping) thread from a busy one."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from fabric.stall import OffCpuClock, parse_schedstat

needs_schedstat = pytest.mark.skipif(not OffCpuClock().exact,
                                     reason="no /proc/thread-self/schedstat here")


def test_a_schedstat_line_gives_cpu_plus_run_queue_seconds():
    assert parse_schedstat(b"1500000000 250000000 42\n") == 1.75


@pytest.mark.parametrize("text", [b"", b"garbage", b"1 x 3"])
def test_a_malformed_schedstat_line_is_a_value_error(text):
    with pytest.raises(ValueError):
        parse_schedstat(text)


@needs_schedstat
def test_a_busy_thread_is_not_off_cpu_however_late_its_timers():
    clock = OffCpuClock()
    off, wall = clock.now(), time.monotonic()
    while time.monotonic() - wall < 0.3:  # running or waiting for a CPU, never asleep
        pass
    assert clock.now() - off < 0.1


@needs_schedstat
def test_a_sleeping_thread_is_off_cpu():
    clock = OffCpuClock()
    off = clock.now()
    time.sleep(0.3)
    assert clock.now() - off >= 0.25


@needs_schedstat
def test_a_stopped_process_is_off_cpu_for_as_long_as_it_was_stopped():
    # The child spins (never sleeps), so only the stop can take it off the CPU.
    code = ("import sys, time\nfrom fabric.stall import OffCpuClock\nc = OffCpuClock()\n"
            "start, off = time.monotonic(), c.now()\nprint('ready', flush=True)\n"
            "while time.monotonic() - start < 1.5: pass\n"
            "print(round(c.now() - off, 3), flush=True)\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                             cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    try:
        assert child.stdout.readline().strip() == b"ready"
        child.send_signal(subprocess.signal.SIGSTOP)
        time.sleep(0.6)  # the freeze itself is the scenario, not a wait for a condition
        child.send_signal(subprocess.signal.SIGCONT)
        stopped = float(child.stdout.readline())
        assert child.wait(10) == 0
    finally:
        child.kill()
        child.wait()
    assert stopped >= 0.5


def test_without_schedstat_the_clock_follows_the_monotonic_clock(tmp_path):
    clock = OffCpuClock(str(tmp_path / "missing"))
    assert not clock.exact
    off = clock.now()
    time.sleep(0.05)
    assert clock.now() - off >= 0.05
