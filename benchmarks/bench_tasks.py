"""The task handlers of benchmarks/task_bench.py: a no-op, and one that returns the time it
started (for dispatch latency and lateness)."""
from __future__ import annotations

import time

from fabric.tasks import task


@task("noop")
async def noop(payload):
    return None


@task("stamp")
async def stamp(payload):
    return time.time()
