"""The fence, with real child processes: a child dies by SIGKILL when its deadline passes
without a newer one from the agent's end of the pipe, and refuses to run unfenced when its
variables are bad."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fabric.cluster.fence import ENV_DEADLINE, ENV_FD, FenceLine, guard_from_environment
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import os, sys, time
from fabric.cluster.fence import guard_from_environment
guard = guard_from_environment()
print("guarded" if guard is not None else "unguarded",
      os.environ.get("FABRIC_FENCE_FD"), os.environ.get("FABRIC_FENCE_DEADLINE"), flush=True)
print("ran the rest", flush=True)
time.sleep(30)
"""
"""A child as an agent starts it: the guard first, then its work (here: sleep)."""

QUICK = CHILD.replace("time.sleep(30)", "")
"""The same child, ending once its work is done."""

LATE = 2.0
"""How long after its deadline a child may still be seen alive (a loaded 2-core machine)."""


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (ENV_FD, ENV_DEADLINE)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


@pytest.fixture
def children():
    """Start fenced children; kill (by handle) whatever is still running at the end."""
    started: list[tuple[subprocess.Popen, FenceLine]] = []

    def start(deadline: float) -> tuple[subprocess.Popen, FenceLine]:
        line = FenceLine()
        proc = subprocess.Popen([sys.executable, "-c", CHILD], cwd=ROOT,
                                env={**_base_env(), **line.env(deadline)},
                                pass_fds=(line.child_fd,), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        line.started()
        started.append((proc, line))
        return proc, line

    yield start
    for proc, line in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)
        line.close()


def _alive_until(proc: subprocess.Popen, moment: float) -> None:
    """Assert the child is still running at ``moment`` (``time.monotonic()``)."""
    wait_for(lambda: time.monotonic() >= moment or proc.poll() is not None, moment
             - time.monotonic() + LATE, "the moment to check the child")
    assert proc.poll() is None, f"the child died before {moment - time.monotonic():.3f} s " \
                                f"from now: {proc.communicate()}"


def _died(proc: subprocess.Popen, deadline: float) -> tuple[float, str, str]:
    """Wait for the child to die; when it was seen dead, its stdout and stderr."""
    wait_for(lambda: proc.poll() is not None, deadline - time.monotonic() + LATE,
             "the child to kill itself")
    seen = time.monotonic()
    out, err = proc.communicate(timeout=10)
    return seen, out, err


def _assert_fenced(proc: subprocess.Popen, deadline: float, ran: bool = True) -> None:
    """The child dies by its own SIGKILL at ``deadline``, saying why; ``ran``: it got past
    the guard first (which also took its variables out of its environment)."""
    seen, out, err = _died(proc, deadline)
    assert proc.returncode == -signal.SIGKILL
    assert deadline - 0.05 <= seen <= deadline + LATE
    if ran:
        assert out.splitlines() == ["guarded None None", "ran the rest"]
    [message] = [line for line in err.splitlines() if "fence" in line]
    late = re.search(r"\((\d+) ms past the deadline\)", message)
    assert late is not None and 0 <= int(late.group(1)) <= LATE * 1000


def test_a_child_whose_deadline_passes_kills_itself(children):
    deadline = time.monotonic() + 0.5
    proc, _line = children(deadline)
    _alive_until(proc, deadline - 0.2)
    _assert_fenced(proc, deadline)


def test_a_child_whose_deadline_is_extended_stays_alive_then_dies_at_the_last(children):
    """Extended every 0.1 s to 0.4 s ahead, the child outlives its first deadline (0.5 s)
    by far; once the extensions stop, it dies at the last deadline."""
    start = time.monotonic()
    first = start + 0.5
    proc, line = children(first)
    last = first
    while time.monotonic() < start + 1.5:
        last = time.monotonic() + 0.4
        line.extend(last)
        assert line.deadline == last
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)  # the agent's renewal period, not a wait for a condition
    assert time.monotonic() > first + 0.9
    _alive_until(proc, last - 0.2)
    _assert_fenced(proc, last)


def test_when_the_agent_end_closes_the_child_keeps_its_last_deadline(children):
    """The agent dies (its end closes) after one extension: the child runs on until that
    deadline, past its first one, and then dies."""
    first = time.monotonic() + 0.5
    proc, line = children(first)
    last = time.monotonic() + 1.2
    line.extend(last)
    line.close()
    line.extend(last + 10)  # closed: no effect
    _alive_until(proc, first + 0.2)
    _alive_until(proc, last - 0.2)
    _assert_fenced(proc, last)


def test_a_deadline_already_past_kills_at_once(children):
    deadline = time.monotonic() - 0.2
    proc, _line = children(deadline)
    _assert_fenced(proc, deadline, ran=False)


def _bad(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", QUICK], cwd=ROOT, env={**_base_env(), **env},
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=20)


def _closed_fd() -> str:
    """An fd number open in no child: a pipe's, closed again (a child inherits no fd beyond
    0-2 unless passed)."""
    read, write = os.pipe()
    os.close(read)
    os.close(write)
    return str(read)


@pytest.mark.parametrize("fd, deadline", [
    ("abc", "100.0"),
    ("", "100.0"),
    ("closed", "100.0"),
    ("-1", "100.0"),
    ("0", "soon"),
    ("0", ""),
    ("0", None),
    (None, "100.0"),
], ids=["fd-not-a-number", "fd-empty", "fd-closed", "fd-negative", "deadline-not-a-number",
        "deadline-empty", "deadline-missing", "fd-missing"])
def test_bad_variables_stop_the_process_before_it_runs(fd, deadline):
    env = {}
    if fd is not None:
        env[ENV_FD] = _closed_fd() if fd == "closed" else fd
    if deadline is not None:
        env[ENV_DEADLINE] = deadline
    done = _bad(env)
    assert done.returncode != 0 and done.returncode > 0
    assert done.stdout == ""  # nothing after the guard ran
    [message] = done.stderr.splitlines()
    assert message.startswith("fence: bad ") and "not running unfenced" in message


def test_a_nan_deadline_stops_the_process_before_it_runs():
    done = _bad({ENV_FD: "0", ENV_DEADLINE: "nan"})
    assert done.returncode > 0
    assert "ran the rest" not in done.stdout
    assert "fence" in done.stderr


def test_no_variables_means_no_guard(monkeypatch):
    monkeypatch.delenv(ENV_FD, raising=False)
    monkeypatch.delenv(ENV_DEADLINE, raising=False)
    assert guard_from_environment() is None


def test_a_child_without_variables_runs_unguarded():
    done = subprocess.run([sys.executable, "-c", QUICK], cwd=ROOT, env=_base_env(),
                          capture_output=True, text=True, timeout=20)
    assert done.returncode == 0
    assert done.stdout.splitlines() == ["unguarded None None", "ran the rest"]
