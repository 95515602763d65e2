"""The processes of the butterfly demo: start them, read their events, stop them.

The processes are started with ``--events``: their stdout is a stream of JSON lines
``{"event": KIND, "time": ..., ...}`` (nameservice/logs.py). Each process's stdout is read
line by line by a thread and kept with the wall-clock time it arrived (at most ``MAX_LINES``
per process; older lines are forgotten, the latest event of each kind is kept apart, so a long
run stays bounded in memory) and copied to ``NAME.out``; its stderr (its log) goes to
``NAME.log``. ``Fleet.close`` kills whatever is still running, so nothing outlives the demo,
even when it fails.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

MAX_LINES = 10_000


class Proc:
    """One child process, the lines it printed and the events among them."""

    def __init__(self, name: str, argv: list[str], *, env: dict[str, str], cwd: str,
                 log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self.out_path = log_dir / f"{name}.out"
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log,
                                          stdin=subprocess.DEVNULL, env=env, cwd=cwd)
        self.lines: deque[tuple[float, str]] = deque(maxlen=MAX_LINES)
        self._events: deque[tuple[float, dict[str, Any]]] = deque(maxlen=MAX_LINES)
        self._latest: dict[str, dict[str, Any]] = {}
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, name=f"read-{name}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        stdout = self.popen.stdout
        assert stdout is not None  # started with stdout=PIPE
        with open(self.out_path, "ab") as out:
            for raw in stdout:
                out.write(raw)
                line = raw.decode("utf-8", "replace").rstrip("\n")
                at = time.time()
                found = _event(line)
                with self._cond:
                    self.lines.append((at, line))
                    if found is not None:
                        self._events.append((at, found))
                        self._latest[found["event"]] = found
                    self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.popen.poll() is None

    def wait_event(self, kind: str, timeout: float, *,
                   since: float = 0.0) -> tuple[float, dict[str, Any]]:
        """The first event ``kind`` that arrived after ``since`` and its arrival time; raises
        ``TimeoutError`` (with the end of the log) if none comes within ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for at, found in self._events:
                    if at >= since and found["event"] == kind:
                        return at, found
                left = deadline - time.monotonic()
                if left <= 0 or (not self._reader.is_alive() and self.popen.poll() is not None):
                    raise TimeoutError(f"{self.name} emitted no {kind!r} event "
                                       f"(exit code {self.popen.poll()}); {self.log_tail()}")
                self._cond.wait(min(left, 0.1))

    def events(self, kind: str) -> list[tuple[float, dict[str, Any]]]:
        """Every event ``kind`` still kept, with its arrival time."""
        with self._cond:
            return [(at, found) for at, found in self._events if found["event"] == kind]

    def latest(self, kind: str) -> dict[str, Any] | None:
        """The latest event ``kind``, or None."""
        with self._cond:
            return self._latest.get(kind)

    def log_tail(self, chars: int = 1500) -> str:
        """The end of the process's stderr log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return f"log {self.log_path}: ...{text[-chars:]}" if text else f"log {self.log_path} empty"

    def signal(self, sig: int) -> None:
        """Send ``sig`` (ignored if the process has already exited)."""
        if self.popen.poll() is None:
            try:
                self.popen.send_signal(sig)
            except ProcessLookupError:
                pass

    def wait(self, timeout: float) -> int:
        """Wait for the exit code; SIGKILL and raise ``TimeoutError`` after ``timeout``."""
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise TimeoutError(f"{self.name} did not exit within {timeout} s") from None
        self._reader.join(2)
        return code

    def kill(self) -> None:
        """SIGKILL (after SIGCONT, in case it was stopped) and reap the process."""
        if self.popen.poll() is None:
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGKILL)
            self.popen.wait()
        self._reader.join(2)
        if self.popen.stdout is not None:
            self.popen.stdout.close()


def _event(line: str) -> dict[str, Any] | None:
    """The event a stdout line carries, or None if it is not one."""
    if not line.startswith("{"):
        return None
    try:
        found = json.loads(line)
    except ValueError:
        return None
    return found if isinstance(found, dict) and isinstance(found.get("event"), str) else None


class Fleet:
    """Every process of one demo run; :meth:`close` kills those still running."""

    def __init__(self, cwd: str, log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.cwd = cwd
        self.log_dir = log_dir
        self.env = dict(env if env is not None else os.environ)
        self.procs: dict[str, Proc] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        """Start ``argv`` as process ``name`` (a name is used once, unless the process it
        named was killed), with the fleet's environment plus ``env`` (this process's own
        variables, e.g. its ``FABRIC_KEYS``)."""
        proc = Proc(name, argv, env={**self.env, **(env or {})}, cwd=self.cwd,
                    log_dir=self.log_dir)
        self.procs[name] = proc
        return proc

    def close(self) -> None:
        """Kill every process still running."""
        for proc in self.procs.values():
            proc.kill()

    def __enter__(self) -> "Fleet":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
