"""Child processes of a benchmark: spawn the benchmark's own script in a role, read its JSON
lines, kill every child on exit; the CPU time a process has used."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class Procs:
    """Children of one measurement; all killed on exit. ``script`` runs for :meth:`role`."""

    def __init__(self, script: str) -> None:
        self.script = script
        self.procs: list[subprocess.Popen] = []

    def spawn(self, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        env = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                env=env, text=True)
        self.procs.append(proc)
        return proc

    def role(self, role: str, env: dict[str, str] | None = None, **opts) -> subprocess.Popen:
        """The script in ``role`` with ``--KEY VALUE`` for each of ``opts``; ``env`` is added
        to this process's environment."""
        argv = [sys.executable, self.script, "--role", role]
        for key, value in opts.items():
            argv += [f"--{key}", str(value)]
        return self.spawn(argv, env)

    def __enter__(self) -> "Procs":
        return self

    def __exit__(self, *exc) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def line(proc: subprocess.Popen) -> dict:
    """The child's next stdout line: a JSON object, or ``{"line": text}``."""
    text = proc.stdout.readline()
    if not text:
        raise RuntimeError(f"child exited early with code {proc.wait()}")
    return json.loads(text) if text.startswith("{") else {"line": text.strip()}


def proc_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
