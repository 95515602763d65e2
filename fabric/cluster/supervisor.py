"""The processes an agent runs: started fenced, watched, drained, killed.

A ``Child`` is one incarnation of an instance (network, id, gen). It is started with a fence
(``fence.py``) and ``--events``: its stdout is read line by line into ``NAME.out`` in the
agent's log directory (its first ``control`` or ``registered`` event makes it *running*),
its stderr goes to ``NAME.log``. ``stop`` drains it (SIGTERM: the process deregisters and
drains its ports) and kills it if the drain takes longer than allowed; ``kill`` kills it
at once (SIGKILL), which is what a fenced agent does.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from fabric.cluster.fence import FenceLine

__all__ = ["Child", "Ident"]

log = logging.getLogger(__name__)
Ident = tuple[str, str, int]
"""(network, instance id, gen)."""
READY_EVENTS = frozenset({"control", "registered"})
MAX_LINE = 1 << 16
STEADY_S = 10.0
MAX_OUT_BYTES = 64 << 20
"""A child's stdout kept on disk; past it the file starts again (the latest lines matter)."""


class Child:
    """One process of one incarnation."""

    def __init__(self, ident: Ident, argv: list[str], log_dir: Path, *, cwd: str,
                 env: dict[str, str], on_change: Callable[[], None]) -> None:
        self.ident = ident
        self.argv = argv
        self.state = "starting"
        self.exits = 0
        self.quick_exits = 0
        """Exits in a row, each within ``STEADY_S`` of its start (the restart pause grows
        with them)."""
        self.code: int | None = None
        self.detail = ""
        self.started_at = 0.0
        self.stopping = False
        self._fence: FenceLine | None = None
        self._log_dir = log_dir
        self._cwd = cwd
        self._env = env
        self._on_change = on_change
        self._proc: asyncio.subprocess.Process | None = None
        self._done: asyncio.Task | None = None

    @property
    def stem(self) -> str:
        """The log files' name: ``NET.ID.gGEN``."""
        network, ident, gen = self.ident
        return f"{network}.{ident}.g{gen}"

    @property
    def pid(self) -> int:
        """The process id (0 when not running)."""
        return self._proc.pid if self._proc and self.code is None else 0

    @property
    def alive(self) -> bool:
        """Started and not yet reaped."""
        return self._proc is not None and self.code is None

    async def start(self, deadline: float) -> None:
        """Start the process, fenced at ``deadline`` (``time.monotonic()``)."""
        self.state, self.code, self.stopping = "starting", None, False
        self.started_at = time.time()
        try:
            fence = self._fence = FenceLine()  # one per process: the last one's is closed
        except OSError as exc:  # out of file descriptors
            self.state, self.code, self.detail = "failed", -1, f"cannot start: {exc}"
            self.exits += 1
            self.quick_exits += 1
            self._on_change()
            return
        try:
            self._log_dir.mkdir(parents=True, exist_ok=True)
            env = {**os.environ, **self._env, **fence.env(deadline)}
            with open(self._log_dir / f"{self.stem}.log", "ab") as err:
                self._proc = await asyncio.create_subprocess_exec(
                    *self.argv, stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE, stderr=err, cwd=self._cwd, env=env,
                    pass_fds=(fence.child_fd,), limit=MAX_LINE, start_new_session=True)
        except (OSError, ValueError) as exc:
            fence.close()
            self.state, self.code, self.detail = "failed", -1, f"cannot start: {exc}"
            self.exits += 1
            self.quick_exits += 1
            self._on_change()
            return
        fence.started()
        self._done = asyncio.ensure_future(self._follow())
        self._on_change()

    def extend(self, deadline: float) -> None:
        """Move the process's fence deadline."""
        if self.alive and self._fence is not None:
            self._fence.extend(deadline)

    async def _follow(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        out_path = self._log_dir / f"{self.stem}.out"
        try:
            out = open(out_path, "ab")
        except OSError as exc:
            log.error("cannot write %s (%s): the process's output is dropped", out_path, exc)
            out = open(os.devnull, "wb")
        try:
            while True:
                try:
                    line = await proc.stdout.readline()
                except (asyncio.LimitOverrunError, ValueError):
                    continue  # an overlong line: skipped
                if not line:
                    break
                if out.tell() > MAX_OUT_BYTES:
                    out.truncate(0)
                    out.seek(0)
                out.write(line)
                out.flush()
                if self.state == "starting" and self._ready(line):
                    self.state = "running"
                    self._on_change()
            code = await proc.wait()
        finally:
            out.close()
        if self._fence is not None:
            self._fence.close()
        self.code = code
        self.exits += 1
        self.quick_exits = self.quick_exits + 1 if time.time() - self.started_at < STEADY_S \
            else 0
        self.state = "exited" if code == 0 else "failed"
        self.detail = f"exit code {code}" if code >= 0 else \
            f"killed by {signal.Signals(-code).name}"
        self._on_change()

    @staticmethod
    def _ready(line: bytes) -> bool:
        with contextlib.suppress(ValueError):
            found = json.loads(line)
            return isinstance(found, dict) and found.get("event") in READY_EVENTS
        return False

    async def stop(self, timeout: float) -> None:
        """Drain: SIGTERM, then SIGKILL after ``timeout`` seconds; returns once it exited."""
        if not self.alive:
            return
        self.stopping = True
        self.state = "draining"
        self._on_change()
        self._signal(signal.SIGTERM)
        assert self._done is not None
        try:
            await asyncio.wait_for(asyncio.shield(self._done), timeout)
        except asyncio.TimeoutError:
            log.warning("%s did not drain within %.1f s: killing it", self.stem, timeout)
            await self.kill()

    async def kill(self) -> None:
        """SIGKILL; returns once it exited."""
        if not self.alive:
            return
        self.stopping = True
        self._signal(signal.SIGKILL)
        if self._done is not None:
            await asyncio.shield(self._done)

    def kill_now(self) -> None:
        """SIGKILL without waiting (a fenced agent's first act)."""
        if self.alive:
            self.stopping = True
            self._signal(signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        assert self._proc is not None
        with contextlib.suppress(ProcessLookupError):
            self._proc.send_signal(sig)
