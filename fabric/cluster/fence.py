"""Fencing: a process an agent starts dies by its own hand when the agent's lease may have
run out.

Why: the manager places a lost host's instances elsewhere once that host's agent lease
expired in the name service. The old processes must be gone by then, even when their host is
cut off (they cannot be told) and even when the agent itself is frozen (it cannot kill them).
So every process carries a deadline: the moment until which the agent's lease is surely still
valid, ``sent + ttl - margin`` for the last keepalive the name service answered (``sent``:
when it was sent; the service counts its TTL from when it received it, or later). The agent
pushes each new deadline down a pipe; a thread in the process reads it and, when the
deadline passes without a newer one, kills the process (SIGKILL: nothing more may happen,
not even a drain). When the agent dies the pipe closes and no newer deadline can come.

The clock is ``time.monotonic()``: CLOCK_MONOTONIC, one clock for every process of a host.

    agent:  line = FenceLine(); Popen(..., pass_fds=[line.child_fd], env={**line.env(d)})
            line.extend(deadline)                 # after every renewal
    child:  guard_from_environment()              # fabric's command line does it
"""
from __future__ import annotations

import logging
import math
import os
import select
import signal
import struct
import threading
import time

__all__ = ["ENV_DEADLINE", "ENV_FD", "FenceLine", "guard", "guard_from_environment"]

log = logging.getLogger(__name__)
ENV_FD = "FABRIC_FENCE_FD"
ENV_DEADLINE = "FABRIC_FENCE_DEADLINE"
_DEADLINE = struct.Struct("<d")
MAX_WAIT_S = 3600.0


class FenceLine:
    """The agent's end of one process's fence: a pipe whose write end the agent keeps."""

    def __init__(self) -> None:
        self.child_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)
        self.deadline = 0.0

    def env(self, deadline: float) -> dict[str, str]:
        """The variables that give the child its fence and first deadline."""
        self.deadline = deadline
        return {ENV_FD: str(self.child_fd), ENV_DEADLINE: repr(deadline)}

    def started(self) -> None:
        """The child holds its end now: close ours of it."""
        if self.child_fd >= 0:
            os.close(self.child_fd)
            self.child_fd = -1

    def extend(self, deadline: float) -> None:
        """Tell the child its new deadline (a full pipe drops the update: the child reads
        continuously, and a later update supersedes this one)."""
        if deadline == self.deadline or self._write_fd < 0:
            return
        self.deadline = deadline
        try:
            os.write(self._write_fd, _DEADLINE.pack(deadline))
        except (BlockingIOError, BrokenPipeError):
            pass

    def close(self) -> None:
        """Close the pipe (the child then keeps its last deadline)."""
        self.started()
        if self._write_fd >= 0:
            os.close(self._write_fd)
            self._write_fd = -1


def _kill_self(deadline: float) -> None:
    late = time.monotonic() - deadline
    # One write straight to the file descriptor (no lock another thread may hold), then the
    # kill: nothing may delay it.
    try:
        os.write(2, f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime())} fence: the agent's "
                    f"lease may have expired ({late * 1000:.0f} ms past the deadline): "
                    f"stopping now\n".encode())
    finally:
        os.kill(os.getpid(), signal.SIGKILL)


def _watch(fd: int, deadline: float) -> None:
    pending = b""
    open_ = True
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            _kill_self(deadline)
            return
        if not open_:
            time.sleep(min(remaining, MAX_WAIT_S))
            continue
        if not poller.poll(min(remaining, MAX_WAIT_S) * 1000):  # poll: any fd number
            continue
        data = os.read(fd, 4096)
        if not data:
            open_ = False  # the agent is gone: no later deadline can come
            continue
        pending += data
        whole = len(pending) - len(pending) % _DEADLINE.size
        if whole:
            found = _DEADLINE.unpack_from(pending, whole - _DEADLINE.size)[0]
            pending = pending[whole:]
            if math.isfinite(found):  # anything else is not from an agent: ignored
                deadline = found


def guard(fd: int, deadline: float) -> threading.Thread:
    """Start the thread that kills this process when ``deadline`` passes without a later one
    read from ``fd``."""
    thread = threading.Thread(target=_watch, args=(fd, deadline), name="fabric-fence",
                              daemon=True)
    thread.start()
    return thread


def guard_from_environment() -> threading.Thread | None:
    """Start the guard if this process was started by an agent (``FABRIC_FENCE_FD`` and
    ``FABRIC_FENCE_DEADLINE`` set); None otherwise. A bad value is reported and the process
    stops: running unfenced would break the guarantee the agent gives."""
    fd_text, deadline_text = os.environ.get(ENV_FD), os.environ.get(ENV_DEADLINE)
    if fd_text is None and deadline_text is None:
        return None
    try:
        fd, deadline = int(fd_text or ""), float(deadline_text or "")
        if not math.isfinite(deadline):
            raise ValueError(f"the deadline must be a finite time, not {deadline_text}")
        os.fstat(fd)
    except (ValueError, OSError) as exc:
        raise SystemExit(f"fence: bad {ENV_FD}/{ENV_DEADLINE} ({exc}): not running "
                         f"unfenced") from None
    for name in (ENV_FD, ENV_DEADLINE):  # not inherited by what this process starts
        os.environ.pop(name, None)
    return guard(fd, deadline)
