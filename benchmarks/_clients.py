"""The load generator's clock, shared by every side a benchmark compares (``ns_bench.py`` and
``etcd_side.py``): each client issues one request after another and each is timed the same
way, so that a ratio compares the systems, not two generators."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

Request = Callable[[], Awaitable[object]]


async def timed_clients(requests: list[Request], start_at: float,
                        duration: float) -> list[float]:
    """From ``start_at`` (wall clock) for ``duration`` s, every one of ``requests`` is called
    again as soon as its last call returns (one coroutine each); the latency of every call,
    in seconds."""
    latencies: list[float] = []
    clock = time.perf_counter
    while time.time() < start_at:
        await asyncio.sleep(0.001)
    stop_at = clock() + duration

    async def one_client(request: Request) -> None:
        record = latencies.append
        while clock() < stop_at:
            t = clock()
            await request()
            record(clock() - t)

    await asyncio.gather(*(one_client(r) for r in requests))
    return latencies
