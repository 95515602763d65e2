"""The butterfly demo end to end, as a user runs it, with a small message count: without keys,
and with --secure (CURVE on every socket, one key pair per process)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fabric.butterfly.report import FIELDS, ZAP_COUNTERS
from tests.butterfly.conftest import ROOT

pytestmark = pytest.mark.slow

EVENTS = ("(a) SIGKILL", "(b) start intermediary a again", "(c) drain", "(d) SIGKILL",
          "(e) every message delivered")
PROCESSES = ("node-1", "node-2", "node-3", "intermediary-a-killed", "intermediary-a",
             "intermediary-b", "producer-1", "producer-2", "consumer-1", "consumer-2")


def run_butterfly(work: Path, *args: str) -> tuple[dict, str]:
    """Run ``fabric butterfly --json`` with 20,000 messages over 4 s: its result and stderr,
    once it exited 0 with nothing lost or duplicated and every event done."""
    proc = subprocess.run(
        [sys.executable, "-m", "fabric", "butterfly", "--json", "--messages", "20000",
         "--duration", "4", "--work-dir", str(work), *args],
        capture_output=True, timeout=240, cwd=ROOT)
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, err[-4000:]
    result = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    assert result["lost"] == 0 and result["duplicates"] == 0, result
    assert result["sent"] == result["delivered"] == 20000, result
    for event in EVENTS:
        assert event in err, err[-4000:]
    assert result["reresolve_ms"] is not None and result["drain_ms"] is not None
    return result, err


def test_the_butterfly_scenario_loses_and_duplicates_nothing(tmp_path):
    result, _ = run_butterfly(tmp_path / "run")
    assert tuple(result) == FIELDS
    assert result["secure"] is False


def test_the_secured_butterfly_runs_every_process_with_curve_and_refuses_nobody(tmp_path):
    work = tmp_path / "run"
    result, _ = run_butterfly(work, "--secure")
    assert tuple(result) == (*FIELDS, "security")
    assert result["secure"] is True
    security = result["security"]
    processes = security["processes"]
    assert set(processes) == set(PROCESSES), processes
    for name, found in processes.items():
        # Each process under its own identity; a restarted intermediary keeps its own.
        assert found["mode"] == "curve", (name, found)
        assert found["identity"] == name.removesuffix("-killed"), (name, found)
        assert found["zap_allowed"] >= 1, (name, found)  # the scenario's status request, at least
        assert all(found[c] == 0 for c in ZAP_COUNTERS if c != "zap_allowed"), (name, found)
    assert security["curve"] == len(PROCESSES)
    assert security["refused"] == 0, security
    assert security["zap_allowed"] == sum(p["zap_allowed"] for p in processes.values())
    logs = [*work.glob("*.log"), *(work / "ns").glob("*.log")]
    assert len(logs) >= len(PROCESSES) - 1  # the two intermediary-a share a log
    for log in logs:
        assert "INSECURE MODE" not in log.read_text(errors="replace"), log
