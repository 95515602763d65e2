"""Fixtures for the name-service tests: real daemons on 127.0.0.1, killed at teardown."""
from __future__ import annotations

import asyncio
import time

import pytest

from nameservice.client import NameServiceClient
from nameservice.server.local import LocalCluster
from tests.waiting import async_wait_for


async def statuses(client: NameServiceClient, cluster: LocalCluster) -> dict[int, dict]:
    """The status of every running node that answers, by node id."""
    out = {}
    for node_id, address in cluster.addresses.items():
        if cluster.running(node_id):
            try:
                out[node_id] = await client.status(address, timeout=0.5)
            except Exception:
                pass
    return out


async def leader_of(client: NameServiceClient, cluster: LocalCluster, timeout: float = 10.0) -> int:
    """The id of the node that says it leads (waiting for one)."""
    async def find():
        for node_id, s in (await statuses(client, cluster)).items():
            if s["role"] == "leader":
                return node_id
        return None
    return await async_wait_for(find, timeout, "a leader")


async def caught_up(client: NameServiceClient, cluster: LocalCluster) -> bool:
    """Every node runs, agrees on the leader and has applied the highest commit index."""
    st = await statuses(client, cluster)
    if len(st) != len(cluster.ids):
        return False
    top = max(s["commit_index"] for s in st.values())
    leaders = {s["leader"] for s in st.values()}
    return len(leaders) == 1 and 0 not in leaders and all(
        s["applied_index"] >= top for s in st.values())


@pytest.fixture
def make_cluster(tmp_path):
    """Start a cluster of daemons (``make_cluster(nodes=3, election_timeout=...)``)."""
    clusters = []

    def make(nodes: int = 3, election_timeout: str = "150-300", start: bool = True,
             extra_args: list[str] | None = None, cluster_name: str | None = None):
        cluster = LocalCluster(tmp_path / f"cluster{len(clusters)}", nodes,
                               election_timeout=election_timeout, extra_args=extra_args,
                               cluster_name=cluster_name)
        clusters.append(cluster)
        if start:
            cluster.start()
        return cluster

    try:
        yield make
    finally:
        for cluster in clusters:
            cluster.close()


async def longest_write_pause(ns, stop_leader, proc) -> float:
    """Keep writing while ``stop_leader()`` (awaited) stops the leader's process ``proc``;
    check that it exits 0 and that writes go on, and return the longest pause (s) between two
    acknowledged writes from the stop on. A hand-over takes a few round trips; an election at
    least an election timeout."""
    done: list[float] = []
    stop = asyncio.Event()

    async def write() -> None:
        i = 0
        while not stop.is_set():
            await ns.put(f"drain/{i}", str(i))
            done.append(time.monotonic())
            i += 1

    writer = asyncio.create_task(write())
    try:
        await async_wait_for(lambda: len(done) >= 100, 30, "writes to flow")
        asked = time.monotonic()
        await stop_leader()
        assert await asyncio.to_thread(proc.wait, 20) == 0, "the stopped node did not exit 0"
        count_then = len(done)
        await async_wait_for(lambda: len(done) >= count_then + 100, 30, "writes after the stop")
        stop.set()
        await writer
    finally:
        writer.cancel()
    for i in (0, len(done) - 1):
        assert (await ns.get(f"drain/{i}")).value == str(i).encode()
    times = [t for t in done if t >= asked]
    return max(b - a for a, b in zip([asked, *times], times))
