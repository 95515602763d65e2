"""The butterfly demo end to end, as a user runs it, with a small message count."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fabric.butterfly.report import FIELDS
from tests.butterfly.conftest import ROOT

pytestmark = pytest.mark.slow


def test_the_butterfly_scenario_loses_and_duplicates_nothing(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "fabric", "butterfly", "--json", "--messages", "20000",
         "--duration", "4", "--work-dir", str(tmp_path / "run")],
        capture_output=True, timeout=240, cwd=ROOT)
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, err[-4000:]
    result = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    assert tuple(result) == FIELDS
    assert result["lost"] == 0 and result["duplicates"] == 0, result
    assert result["sent"] == result["delivered"] == 20000, result
    for event in ("(a) SIGKILL", "(b) start intermediary a again", "(c) drain", "(d) SIGKILL",
                  "(e) every message delivered"):
        assert event in err, err[-4000:]
    assert result["reresolve_ms"] is not None and result["drain_ms"] is not None
