"""Waiting on a condition with a deadline, for tests that watch real processes."""
from __future__ import annotations

import time

import pytest


def wait_for(condition, timeout: float, what: str, interval: float = 0.005):
    """Poll ``condition`` until it returns a truthy value; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
