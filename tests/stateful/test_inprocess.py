"""A replica group in one process: three replicas over real sockets and real disks, a real
name service (its own process) and two intermediaries (threads)."""
from __future__ import annotations

import asyncio
import contextlib

import pytest

from fabric import OutputPort
from fabric.ports.input import InputPort
from fabric.stateful.replica import Replica
from fabric.timing import Timing
from nameservice.client import NameServiceClient
from nameservice.names import Names
from nameservice.server.local import LocalCluster
from tests.datapath.helpers import running_intermediary
from tests.stateful.counting import Counter
from tests.waiting import async_wait_for

N = 20_000
TIMING = Timing(heartbeat=0.1, misses=10)


@pytest.fixture
def ns(tmp_path):
    with LocalCluster(tmp_path / "ns", 1) as cluster:
        cluster.start()
        yield list(cluster.addresses.values())


def fixed_ports(endpoints: list[str]):
    async def open_port(handler):
        port = InputPort("counted", endpoints, batch_handler=handler, auto_ack=False,
                         timing=TIMING)
        await port.start()

        async def stop_following() -> None:
            return None
        return port, stop_following
    return open_port


@contextlib.asynccontextmanager
async def replicas(ns, tmp_path, endpoints, count=3):
    async with NameServiceClient(ns) as client:
        names = Names(client)
        group = [Replica(Counter(), names, name="count", data_dir=str(tmp_path / f"r{i}"),
                         open_port=fixed_ports(endpoints), size=count) for i in range(count)]
        stops = [asyncio.Event() for _ in group]
        tasks = [asyncio.ensure_future(r.run(s)) for r, s in zip(group, stops)]
        try:
            yield group
        finally:
            for stop in stops:
                stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)


async def test_three_replicas_apply_every_message_once_and_agree(ns, tmp_path):
    async with running_intermediary("counted", timing=TIMING) as a, \
            running_intermediary("counted", timing=TIMING) as b:
        endpoints = [a.endpoint, b.endpoint]
        async with replicas(ns, tmp_path, endpoints) as group:
            await async_wait_for(lambda: all(len(r.member.core.conf_state.voters) == 3
                                             for r in group if r.member), 30, "three voters")
            async with OutputPort("counted", endpoints, timing=TIMING) as producer:
                for i in range(N):
                    await producer.send(i)
                await producer.flush(timeout=30)
            # Acknowledged only once applied (on a quorum, the leader among them).
            assert max(r.component.state["count"] for r in group) == N
            await async_wait_for(lambda: all(r.component.state["count"] == N for r in group),
                                 10, "every replica to apply everything")
            assert all(r.component.state["sum"] == N * (N - 1) // 2 for r in group)
            assert len({r.machine.state_digest() for r in group}) == 1
            assert sum(r.machine.counters["duplicates_skipped"] for r in group) == 0
