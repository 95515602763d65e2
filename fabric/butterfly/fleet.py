"""The processes of the butterfly demo: start them, read their output lines, stop them.

Each process's stdout is read line by line by a thread and kept with the wall-clock time it
arrived (at most ``MAX_LINES`` per process; older lines are forgotten, the latest line of each
kind is kept apart, so a long run stays bounded in memory) and copied to ``NAME.out``; its
stderr goes to ``NAME.log``. ``Fleet.close``
kills whatever is still running, so nothing outlives the demo, even when it fails.
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
    """One child process and the lines it printed."""

    def __init__(self, name: str, argv: list[str], *, env: dict[str, str], cwd: str,
                 log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self.out_path = log_dir / f"{name}.out"
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log,
                                          stdin=subprocess.DEVNULL, env=env, cwd=cwd)
        self.lines: deque[tuple[float, str]] = deque(maxlen=MAX_LINES)
        self.latest: dict[str, tuple[float, str]] = {}
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
                with self._cond:
                    self.lines.append((at, line))
                    self.latest[line.partition(" ")[0]] = (at, line)
                    self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.popen.poll() is None

    def wait_line(self, kind: str, timeout: float, *, since: float = 0.0) -> tuple[float, str]:
        """The first line starting with ``kind`` (a word) that arrived after ``since``; raises
        ``TimeoutError`` (with the end of the log) if none comes within ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for at, line in self.lines:
                    if at >= since and line.partition(" ")[0] == kind:
                        return at, line
                left = deadline - time.monotonic()
                if left <= 0 or (not self._reader.is_alive() and self.popen.poll() is not None):
                    raise TimeoutError(f"{self.name} printed no {kind!r} line "
                                       f"(exit code {self.popen.poll()}); {self.log_tail()}")
                self._cond.wait(min(left, 0.1))

    def json_lines(self, kind: str) -> list[tuple[float, dict[str, Any]]]:
        """Every line ``kind {JSON}`` still kept, decoded, with its arrival time."""
        with self._cond:
            lines = [(at, line) for at, line in self.lines if line.partition(" ")[0] == kind]
        return [(at, json.loads(line.partition(" ")[2])) for at, line in lines]

    def latest_json(self, kind: str) -> dict[str, Any] | None:
        """The JSON of the latest ``kind {JSON}`` line, or None."""
        with self._cond:
            found = self.latest.get(kind)
        return None if found is None else json.loads(found[1].partition(" ")[2])

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


class Fleet:
    """Every process of one demo run; :meth:`close` kills those still running."""

    def __init__(self, cwd: str, log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.cwd = cwd
        self.log_dir = log_dir
        self.env = dict(env if env is not None else os.environ)
        self.procs: dict[str, Proc] = {}

    def start(self, name: str, argv: list[str]) -> Proc:
        """Start ``argv`` as process ``name`` (a name is used once)."""
        proc = Proc(name, argv, env=self.env, cwd=self.cwd, log_dir=self.log_dir)
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
