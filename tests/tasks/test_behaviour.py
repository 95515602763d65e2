"""What a user of the queue relies on, in one process over real sockets and disks: versions
route tasks, a handler's timeout and errors are retried then end dead with their history, a
running task is cancelled (its result refused), and a periodic task fires once per period
across a leader's failover."""
from __future__ import annotations

import asyncio

import pytest

from fabric.tasks import TaskFailed, TaskQueue
from nameservice.client import NameServiceClient
from nameservice.names import Names
from tests.tasks.test_inprocess import ns, queue_group, running_worker  # noqa: F401
from tests.waiting import async_wait_for


async def test_a_task_asking_for_a_version_runs_only_on_that_version(ns, tmp_path):  # noqa: F811
    async with NameServiceClient(ns) as client:
        names = Names(client)
        ran: dict[str, list[int]] = {"1": [], "2": []}

        def handler(version):
            async def run(payload):
                ran[version].append(payload)
                return version
            return run
        async with queue_group(names, tmp_path), \
                running_worker(names, handlers={"job": (handler("1"), "1")}, capacity=4), \
                running_worker(names, handlers={"job": (handler("2"), "2")}, capacity=4), \
                TaskQueue(names, "jobs") as queue:
            pinned = [await queue.submit("job", i, version="2") for i in range(20)]
            free = [await queue.submit("job", 100 + i) for i in range(40)]
            assert [await h.result(timeout=30) for h in pinned] == ["2"] * 20
            for handle in free:
                await handle.result(timeout=30)
    assert not set(range(20)) & set(ran["1"])
    assert ran["1"] and ran["2"], "unpinned tasks go to either version"


async def test_timeouts_and_errors_are_retried_then_dead_with_their_history(ns, tmp_path):  # noqa: F811,E501
    async with NameServiceClient(ns) as client:
        names = Names(client)
        calls: list[str] = []

        async def flaky(payload):
            calls.append(payload)
            if payload == "slow":
                await asyncio.sleep(5)
            if payload == "fails-twice" and calls.count(payload) <= 2:
                raise RuntimeError(f"failure {calls.count(payload)}")
            if payload == "always":
                raise ValueError("no")
            if payload == "cancels-itself":
                raise asyncio.CancelledError()
            return "ok"
        async with queue_group(names, tmp_path), \
                running_worker(names, handlers={"job": (flaky, "")}, capacity=4), \
                TaskQueue(names, "jobs") as queue:
            recovers = await queue.submit("job", "fails-twice", retries=2, backoff=0.05)
            dies = await queue.submit("job", "always", retries=1, backoff=0.05)
            times_out = await queue.submit("job", "slow", timeout=0.2, retries=0)
            cancels = await queue.submit("job", "cancels-itself")
            with pytest.raises(TaskFailed) as cancelled:  # not left running for ever
                await cancels.result(timeout=30)
            assert cancelled.value.task["errors"] == ["CancelledError raised by the handler"]
            assert await recovers.result(timeout=30) == "ok"
            with pytest.raises(TaskFailed) as dead:
                await dies.result(timeout=30)
            assert dead.value.task["state"] == "dead"
            assert dead.value.task["errors"] == ["ValueError: no", "ValueError: no"]
            with pytest.raises(TaskFailed) as late:
                await times_out.result(timeout=30)
            assert late.value.task["errors"] == ["timeout after 0.2 s"]
            task = await recovers.status()
            assert (task["attempts"], task["errors"]) == (
                3, ["RuntimeError: failure 1", "RuntimeError: failure 2"])


async def test_a_cancelled_running_task_has_its_result_refused(ns, tmp_path):  # noqa: F811
    async with NameServiceClient(ns) as client:
        names = Names(client)
        started, release = asyncio.Event(), asyncio.Event()

        async def waits(payload):
            started.set()
            await release.wait()
            return "late"
        async with queue_group(names, tmp_path) as group, \
                running_worker(names, handlers={"job": (waits, "")}) as worker, \
                TaskQueue(names, "jobs") as queue:
            handle = await queue.submit("job", 1)
            await asyncio.wait_for(started.wait(), 30)
            await queue.cancel(handle.id)
            release.set()
            with pytest.raises(TaskFailed):
                await handle.result(timeout=30)
            await async_wait_for(lambda: worker.counters["refused"] == 1, 30,
                                 "the late result to be refused")
            leader = next(r for r in group if r.front and r.front.leading)
            assert leader.state.tasks[handle.id].state == "cancelled"
            assert leader.state.counters["zombie_results_refused"] == 1


async def test_a_periodic_task_fires_once_per_period_across_a_leader_failover(ns, tmp_path):  # noqa: F811,E501
    async with NameServiceClient(ns) as client:
        names = Names(client)

        async def tick(payload):
            return payload
        async with queue_group(names, tmp_path, stop_leader=True) as (group, stop_leader), \
                running_worker(names, handlers={"tick": (tick, "")}, capacity=4), \
                TaskQueue(names, "jobs") as queue:
            schedule = await queue.submit("tick", "t", every=0.2, key="ticks")

            def children() -> list[float]:
                leader = next((r for r in group if r.front and r.front.leading), None)
                if leader is None:
                    return []
                return [t.run_at for t in leader.state.tasks.values()
                        if t.parent == schedule.id]
            await async_wait_for(lambda: len(children()) >= 5, 30, "five firings")
            await stop_leader()
            before = len(children())
            await async_wait_for(lambda: len(children()) >= before + 5, 30,
                                 "five firings under the new leader")
            state = next(r for r in group if r.front and r.front.leading).state
            slots = sorted(children())
            gaps = [round((b - a) / 0.2) for a, b in zip(slots, slots[1:])]
            assert all(g >= 1 for g in gaps), "a slot fired twice"
            assert sum(g - 1 for g in gaps) == state.tasks[schedule.id].skipped, \
                "a missed period not counted"
