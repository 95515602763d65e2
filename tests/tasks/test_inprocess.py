"""A queue in one process: three replicas over real sockets and disks, a real name service (its
own process), workers and clients."""
from __future__ import annotations

import asyncio
import contextlib

import pytest

from fabric.tasks import TaskQueue, Worker
from fabric.tasks.service import QueueReplica
from nameservice.client import NameServiceClient
from nameservice.names import Names
from nameservice.server.local import LocalCluster
from tests.waiting import async_wait_for


@pytest.fixture
def ns(tmp_path):
    with LocalCluster(tmp_path / "ns", 1) as cluster:
        cluster.start()
        yield list(cluster.addresses.values())


@contextlib.asynccontextmanager
async def queue_group(names, tmp_path, count=3, lease_s=2.0, stop_leader=False):
    """``count`` queue replicas, once one leads with a quorum; with ``stop_leader``, yields
    ``(group, stop_leader)``: a coroutine function stopping the replica that leads."""
    group = [QueueReplica(names, name="jobs", data_dir=str(tmp_path / f"q{i}"), size=count,
                          lease_s=lease_s) for i in range(count)]
    stops = [asyncio.Event() for _ in group]
    tasks = [asyncio.ensure_future(r.run(s)) for r, s in zip(group, stops)]
    try:
        await async_wait_for(lambda: all(r.group.member is not None for r in group), 20,
                             "replicas running")
        await async_wait_for(lambda: any(r.front and r.front.leading for r in group), 30,
                             "a leader with a quorum")

        async def stop_leading() -> None:
            i = next(i for i, r in enumerate(group) if r.front and r.front.leading)
            stops[i].set()
            await tasks[i]
        yield (group, stop_leading) if stop_leader else group
    finally:
        for stop in stops:
            stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def running_worker(names, **kwargs):
    worker = Worker(names, "jobs", **kwargs)
    stop = asyncio.Event()
    task = asyncio.ensure_future(worker.run(stop))
    try:
        yield worker
    finally:
        stop.set()
        await asyncio.gather(task, return_exceptions=True)


async def test_tasks_submitted_run_once_and_replicas_agree(ns, tmp_path):
    async with NameServiceClient(ns) as client:
        names = Names(client)
        async with queue_group(names, tmp_path) as group:
            seen: list[int] = []

            async def double(payload):
                seen.append(payload)
                return payload * 2

            async with running_worker(names, handlers={"double": (double, "")}, capacity=8), \
                    TaskQueue(names, "jobs") as queue:
                handles = [await queue.submit("double", i) for i in range(200)]
                results = [await h.result(timeout=30) for h in handles]
                assert results == [2 * i for i in range(200)]
                assert sorted(seen) == list(range(200))
                again = await queue.submit("double", 5, key="five")
                same = await queue.submit("double", 6, key="five")
                assert same.id == again.id and not same.created
            await async_wait_for(
                lambda: len({r.state.state_digest() for r in group}) == 1
                and len({r.state.applied_index for r in group}) == 1, 10, "replicas to agree")
