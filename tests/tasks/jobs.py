"""Task handlers for the real-process queue tests: each execution is written (flushed) to
``$FABRIC_TEST_RUNS/<pid>.log`` as ``task_id epoch type pid``, so a test can count where and how
often each task ran."""
from __future__ import annotations

import asyncio
import os

from fabric.tasks import Attempt, task

_LOG = None


def _record(attempt: Attempt) -> None:
    global _LOG
    if _LOG is None:
        directory = os.environ["FABRIC_TEST_RUNS"]
        _LOG = open(os.path.join(directory, f"{os.getpid()}.log"), "a", buffering=1)
    _LOG.write(f"{attempt.id} {attempt.epoch} {attempt.type} {os.getpid()}\n")


@task("A")
async def job_a(payload, attempt: Attempt):
    _record(attempt)
    if isinstance(payload, dict) and payload.get("sleep"):
        await asyncio.sleep(payload["sleep"])
        return payload["n"] * 2
    return payload * 2


@task("B")
async def job_b(payload, attempt: Attempt):
    _record(attempt)
    return ["b", payload]
