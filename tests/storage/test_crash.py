"""Real crashes: a writer process is SIGKILLed at a random moment; every entry it reported as
synced must be there when the directory is reopened, and the log must be whole."""
from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time

import pytest

from nameservice.storage import DiskStorage

from .crash_writer import payload, snapshot_data

WRITER = os.path.join(os.path.dirname(__file__), "crash_writer.py")
DEADLINE_S = 30.0
NEWLINE = b"\n"


def read_reports(proc: subprocess.Popen, want: int | None, deadline: float) -> list[list[int]]:
    """Complete report lines from the writer: ``want`` of them, or (None) all until it exits."""
    fd = proc.stdout.fileno()
    data = b""
    while want is None or data.count(NEWLINE) < want:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"writer gave {data.count(NEWLINE)} reports, wanted {want}")
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            if want is None:
                break
            raise AssertionError(f"writer exited early: {proc.wait()}, "
                                 f"{proc.stderr.read().decode(errors='replace')}")
        data += chunk
    lines = data.split(b"\n")[:-1]  # a line cut short by the kill says nothing
    return [[int(x) for x in line.split()] for line in lines]


def run_and_kill(data_dir: str, seed: int, reports_before_kill: int) -> list[int]:
    """Start a writer, SIGKILL it after some reports; the last report it completed."""
    proc = subprocess.Popen([sys.executable, WRITER, data_dir, str(seed)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + DEADLINE_S
        reports = read_reports(proc, reports_before_kill, deadline)
        proc.send_signal(signal.SIGKILL)
        reports += read_reports(proc, None, deadline)  # whatever it wrote before dying
        assert proc.wait(timeout=DEADLINE_S) == -signal.SIGKILL
        return reports[-1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def check_recovered(data_dir: str, report: list[int]) -> None:
    last, last_term, commit, commit_term, term = report
    with DiskStorage(data_dir) as storage:
        state = storage.initial_state()
        base = state.snapshot.meta.index
        assert storage.last_index() >= last
        assert state.hard_state.term >= term
        assert state.hard_state.commit >= commit
        if last > base:  # only a later synced write of a newer term may have replaced it
            assert storage.term(last) >= last_term
        if commit > base:
            assert storage.term(commit) == commit_term
        if base:
            assert state.snapshot.data == snapshot_data(base)
        previous_term = state.snapshot.meta.term
        for offset, entry in enumerate(state.entries):
            assert entry.index == base + 1 + offset
            assert entry.data == payload(entry.term, entry.index)
            assert entry.term >= previous_term
            previous_term = entry.term


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_every_reported_sync_survives_sigkill(tmp_path, seed):
    rng = random.Random(seed)
    data_dir = str(tmp_path / "raft")
    for cycle in range(3):  # the later cycles recover, write on and are killed again
        report = run_and_kill(data_dir, seed * 10 + cycle, rng.randint(1, 300))
        check_recovered(data_dir, report)


@pytest.mark.soak
@pytest.mark.parametrize("seed", range(100, 130))
def test_every_reported_sync_survives_sigkill_soak(tmp_path, seed):
    test_every_reported_sync_survives_sigkill(tmp_path, seed)
