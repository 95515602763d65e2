"""Tell a frozen process from a busy one: a clock of the time a thread was neither running nor
waiting for a CPU.

A timer that fires late is not proof of a freeze. On a loaded machine a thread can wait for a
CPU, or run its own long burst of work, for hundreds of milliseconds; its peers still hear from
it (or hear from it a moment later), and treating that as a freeze makes a process throw away
state its peers rely on. A frozen process (SIGSTOP, a stalled host) is different: it is neither
running nor runnable. Linux reports both parts per thread in ``/proc/thread-self/schedstat``
(time on a CPU, time waiting in a run queue), so the time a thread spent *off* both — asleep in a
poll or stopped — is the monotonic clock minus the two. Between two ticks of a loop that never
sleeps longer than its tick, that off time exceeds the tick only when the thread was stopped.

Where schedstat is missing (another OS, a kernel without it), the clock advances with the
monotonic clock: every late timer counts as a freeze. So does a thread that waits for a lock
(the GIL held by another thread, blocking I/O): it is asleep, not runnable.
"""
from __future__ import annotations

import os
import time

SCHEDSTAT = "/proc/thread-self/schedstat"


def parse_schedstat(text: bytes) -> float:
    """Seconds on a CPU plus seconds waiting for one, from a schedstat line (pure).

    Raises ValueError on a line that is not three integers."""
    fields = text.split()
    if len(fields) < 2:
        raise ValueError(f"not a schedstat line: {text!r}")
    return (int(fields[0]) + int(fields[1])) / 1e9


class OffCpuClock:
    """Seconds this thread spent neither running nor runnable, on an arbitrary origin.

    Create it on the thread it measures (a schedstat file describes the thread that opened it);
    :meth:`now` is cheap (one ``pread`` of a small file)."""

    def __init__(self, path: str = SCHEDSTAT) -> None:
        self._busy = 0.0  # the last reading of on-CPU plus run-queue seconds
        try:
            self._fd: int | None = os.open(path, os.O_RDONLY)
            self._read()
        except (OSError, ValueError):
            self.close()

    @property
    def exact(self) -> bool:
        """False when schedstat is unavailable and :meth:`now` is the plain monotonic clock."""
        return self._fd is not None

    def _read(self) -> float:
        fd = self._fd
        assert fd is not None  # read only while open (exact)
        self._busy = parse_schedstat(os.pread(fd, 128, 0))
        return self._busy

    def now(self) -> float:
        """Off-CPU seconds so far (advancing as the monotonic clock when schedstat is
        unavailable)."""
        wall = time.monotonic()
        if self._fd is not None:
            try:
                return wall - self._read()
            except (OSError, ValueError):
                self.close()
        return wall - self._busy  # from here on, every second counts as off (no jump)

    def close(self) -> None:
        """Release the file; later readings fall back to the monotonic clock."""
        fd, self._fd = getattr(self, "_fd", None), None
        if fd is not None:
            os.close(fd)

    def __del__(self) -> None:
        self.close()
