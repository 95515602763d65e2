"""Static checks of the packages: mypy (configured in setup.cfg) and ruff (ruff.toml) find nothing.

Each check runs its tool with this interpreter (``python -m mypy`` / ``python -m ruff``) from the
repository root and fails with the tool's own ``file:line`` report. A tool that is not installed
skips its check.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("fabric", "nameservice")  # the files setup.cfg gives mypy, too

# Known failures: modules of fabric/ and nameservice/server/ still report findings.
pytestmark = pytest.mark.xfail(
    strict=False,
    reason="fabric/ and five nameservice/server modules still have mypy and ruff findings",
)


def _run(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    if importlib.util.find_spec(tool) is None:
        pytest.skip(f"{tool} is not installed in this interpreter ({sys.executable})")
    return subprocess.run(
        [sys.executable, "-m", tool, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _report(tool: str, proc: subprocess.CompletedProcess[str]) -> str:
    return f"{tool} exited with {proc.returncode}:\n{proc.stdout}{proc.stderr}"


@pytest.mark.timeout(660)
def test_mypy_finds_nothing() -> None:
    proc = _run("mypy", "--no-color-output", "--no-pretty")
    if proc.returncode != 0:
        pytest.fail(_report("mypy", proc), pytrace=False)


@pytest.mark.timeout(660)
def test_ruff_finds_nothing() -> None:
    proc = _run("ruff", "check", "--no-fix", "--output-format", "concise", *PACKAGES)
    if proc.returncode != 0:
        pytest.fail(_report("ruff", proc), pytrace=False)
