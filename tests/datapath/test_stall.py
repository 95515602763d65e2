"""The off-CPU clock tells a stopped (or sleeping) thread from a busy one."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest
import zmq

from fabric.intermediary.core import Intermediary
from fabric.intermediary.stall import OffCpuClock, parse_schedstat
from tests.waiting import wait_for

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
    code = ("import sys, time\nfrom fabric.intermediary.stall import OffCpuClock\n"
            "c = OffCpuClock()\n"
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


class StallsWhileReading(Intermediary):
    """An intermediary whose thread goes off the CPU once, in the middle of reading frames:
    to the off-CPU clock a sleeping thread looks like a stopped one, so this is a SIGSTOP that
    lands while it reads (the chaos test's seed 100 hit one there)."""

    stall = 0.0

    def _read(self, sock, now):
        # Only on a turn whose tick is due: the tick after the read is where the clocks went
        # out of step.
        if self.stall and now - self._last_tick >= self.timing.tick:
            stall, self.stall = self.stall, 0.0
            time.sleep(stall)
        super()._read(sock, now)


@needs_schedstat
def test_a_freeze_while_reading_frames_is_still_seen_as_a_freeze():
    # The freeze must be measured from the same instant on both clocks: reading the off-CPU
    # clock after the frames (as the tick used to) hides a freeze that landed among them, and
    # the intermediary kept state its peers had given up on.
    node = StallsWhileReading("stall-test", "tcp://127.0.0.1:0")
    endpoint = node.bind()
    thread = threading.Thread(target=node.serve, daemon=True)
    thread.start()
    ctx = zmq.Context()
    peer = ctx.socket(zmq.DEALER)
    try:
        peer.connect(endpoint)
        node.stall = 0.5  # past the 200 ms bar of Timing.frozen

        def stalled() -> bool:
            if node.stall:
                peer.send(b"wake it up")  # any frame: it is read (and counted bad)
            return node.stall == 0.0
        wait_for(stalled, 10, "the intermediary to stall while reading", interval=0.003)
        wait_for(lambda: node.stats.rebinds, 10, "the rebind after the freeze", interval=0.01)
        assert node.stats.rebinds == 1
    finally:
        peer.close(linger=0)
        node.stop()
        thread.join(5)
        ctx.term()
