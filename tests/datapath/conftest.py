"""Fixtures for real-process data-path tests: every process started is killed at teardown."""
from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.datapath.procs import count_records
from tests.netns import island  # noqa: F401  (a fixture, for the partition tests)
from tests.waiting import wait_for

FABRIC = str(Path(sys.executable).with_name("fabric"))
ROOT = str(Path(__file__).resolve().parents[2])


def read_line(proc: subprocess.Popen, timeout: float, what: str) -> str:
    """The next stdout line of ``proc``, waiting at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    line = b""
    fd = proc.stdout.fileno()
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None and not select.select([fd], [], [], 0)[0]:
            pytest.fail(f"no line from {what} (exit code {proc.poll()})")
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 1)
            if not chunk:
                pytest.fail(f"{what} closed its output (exit code {proc.wait()})")
            line += chunk
    return line.decode().strip()


def read_event(proc: subprocess.Popen, timeout: float, what: str, kind: str) -> dict:
    """The next event on the stdout of ``proc`` (started with ``--events``), which must be
    ``kind``, waiting at most ``timeout`` seconds."""
    line = read_line(proc, timeout, what)
    found = json.loads(line)
    assert found.get("event") == kind, f"{what}: expected {kind!r}, got {line}"
    return found


def events_from(output: str, kind: str) -> list[dict]:
    """Every event ``kind`` in a process's events stream (its whole stdout)."""
    found = [json.loads(ln) for ln in output.splitlines() if ln.startswith("{")]
    return [event for event in found if event.get("event") == kind]


def stats_from(output: str) -> dict:
    """The counters of the last ``stats`` event of a process's output."""
    found = events_from(output, "stats")
    assert found, f"no stats event in {output!r}"
    return found[-1]


class Cluster:
    """Starts fabric processes and guarantees they are all gone at teardown."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.procs: list[subprocess.Popen] = []
        self.channel = f"test-{os.getpid()}-{time.monotonic_ns()}"

    def _spawn(self, argv: list[str]) -> subprocess.Popen:
        env = dict(os.environ, PYTHONPATH=ROOT)
        # stderr goes to a file: a full pipe would block the process.
        err = open(self.tmp / f"stderr-{len(self.procs)}.txt", "w+b")
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, env=env, cwd=ROOT)
        proc.err_file = err
        self.procs.append(proc)
        return proc

    @staticmethod
    def stderr_of(proc: subprocess.Popen) -> str:
        proc.err_file.seek(0)
        return proc.err_file.read().decode(errors="replace")

    def intermediary(self, *extra: str, host: str = "127.0.0.1", port: int = 0,
                     wrap=lambda argv: argv) -> tuple[subprocess.Popen, str]:
        """Start an intermediary listening (and serving its control socket) on ``host``
        (on ``port``, else any free one); ``wrap`` turns its command line into the one run
        (e.g. inside a network namespace)."""
        proc = self._spawn(wrap([FABRIC, "intermediary", "--channel", self.channel, "--events",
                                 "--listen", f"{host}:{port}", "--control", f"{host}:0", *extra]))
        listening = read_event(proc, 20, "intermediary", "listening")
        proc.control = read_event(proc, 20, "intermediary", "control")["endpoint"]
        return proc, listening["endpoint"]

    def consumer(self, endpoints: list[str], name: str,
                 *extra: str) -> tuple[subprocess.Popen, str]:
        out = str(self.tmp / f"{name}.bin")
        proc = self._spawn([sys.executable, "-m", "tests.datapath.procs", "consumer",
                            "--channel", self.channel, "--endpoints", ",".join(endpoints),
                            "--out", out, *extra])
        proc.control = read_event(proc, 20, name, "ready")["control"]
        return proc, out

    def producer(self, endpoints: list[str], index: int, count: int,
                 *extra: str) -> subprocess.Popen:
        return self._spawn([sys.executable, "-m", "tests.datapath.procs", "producer",
                            "--channel", self.channel, "--endpoints", ",".join(endpoints),
                            "--index", str(index), "--count", str(count), *extra])

    def stop(self, proc: subprocess.Popen, timeout: float = 20) -> str:
        """SIGTERM ``proc``, wait for a clean exit and return its stdout."""
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, self.stderr_of(proc)[-3000:]
        return out.decode()

    def finish(self, proc: subprocess.Popen, timeout: float) -> str:
        """Wait for ``proc`` to exit 0 by itself and return its stdout."""
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            # Diagnostics: what a stuck producer still holds, and every process's log.
            proc.send_signal(signal.SIGUSR1)
            with contextlib.suppress(pytest.fail.Exception):  # the timeout below is the failure
                wait_for(lambda: "held batches" in self.stderr_of(proc), 5,
                         "the producer's report of what it holds", interval=0.05)
            for i, other in enumerate(self.procs):
                print(f"=== process {i}: {other.args[:4]}\n{self.stderr_of(other)[-6000:]}")
            raise
        out, _ = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, self.stderr_of(proc)[-3000:]
        return out.decode()

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    proc.send_signal(signal.SIGCONT)
                    proc.kill()
                except ProcessLookupError:
                    pass
            try:
                proc.communicate(timeout=10)
            except Exception:
                pass
            proc.err_file.close()


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.kill_all()


def total_records(paths: list[str]) -> int:
    return sum(count_records(p) for p in paths)
