"""Waiting on a condition with a deadline: the one way the tests poll.

``wait_for`` blocks the calling thread; ``async_wait_for`` is its twin for a running event
loop (the loop keeps serving meanwhile), and its condition may also return an awaitable (an
RPC, a read), which is awaited within the same deadline. Both return the condition's first
truthy value and fail the test, naming what was awaited, once ``timeout`` seconds are up.
"""
from __future__ import annotations

import asyncio
import inspect
import time

import pytest

INTERVAL = 0.005
"""Seconds between two evaluations of a condition, unless the caller says otherwise."""


def _timed_out(timeout: float, what: str):
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def wait_for(condition, timeout: float, what: str, interval: float = INTERVAL):
    """Poll ``condition()`` until it returns a truthy value, and return that value; fail the
    test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            _timed_out(timeout, what)
        time.sleep(interval)


async def async_wait_for(condition, timeout: float, what: str, interval: float = INTERVAL):
    """Evaluate ``condition()`` (awaiting what it returns, if awaitable) until truthy, and
    return that value; fail the test after ``timeout`` seconds, cancelling an evaluation still
    awaited then."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await _until(value, deadline)
        if value:
            return value
        if time.monotonic() > deadline:
            _timed_out(timeout, what)
        await asyncio.sleep(interval)


async def _until(awaitable, deadline: float):
    """What ``awaitable`` gives, or None if it is still pending at ``deadline`` (it is then
    cancelled). Its own exceptions, a timeout of its own included, go to the caller."""
    task = asyncio.ensure_future(awaitable)
    try:
        await asyncio.wait({task}, timeout=max(0.0, deadline - time.monotonic()))
    finally:
        if not task.done():
            task.cancel()
            await asyncio.wait({task})
    return None if task.cancelled() else task.result()
