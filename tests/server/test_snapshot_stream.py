"""Snapshots streamed between real daemons: a follower left far behind catches up by a
streamed snapshot, and one killed in the middle of a large stream resumes it."""
from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from nameservice.client import NameServiceClient
from nameservice.server.local import LocalCluster
from tests.server.conftest import caught_up, leader_of
from tests.waiting import async_wait_for, wait_for

pytestmark = pytest.mark.slow

VALUE_BYTES = 32 << 10
MIB = 1 << 20


def value_of(i: int) -> bytes:
    """The value written under key ``i`` (random-looking, so the image does not compress)."""
    return random.Random(i).randbytes(VALUE_BYTES)


async def fill(ns: NameServiceClient, megabytes: int, in_flight: int = 16) -> list[int]:
    """Put ``megabytes`` of values (``in_flight`` at a time, so many log entries); the keys
    acknowledged."""
    count = megabytes * MIB // VALUE_BYTES
    acked = []
    for start in range(0, count, in_flight):
        keys = range(start, min(count, start + in_flight))
        await asyncio.gather(*(ns.put(b"big/%06d" % i, value_of(i)) for i in keys))
        acked.extend(keys)
    return acked


async def counters(ns: NameServiceClient, cluster: LocalCluster, node: int) -> dict:
    return (await ns.status(cluster.addresses[node]))["counters"]


async def others(ns: NameServiceClient, cluster: LocalCluster, node: int) -> list[dict]:
    """The counters of every node but ``node`` (a leader change while the follower caught up
    may have split the sending between two leaders)."""
    return [await counters(ns, cluster, i) for i in cluster.ids if i != node]


async def check_every_write_on(cluster: LocalCluster, node: int, acked: list[int]) -> None:
    """Every acknowledged write is in ``node``'s own applied state (stale reads of it)."""
    async with NameServiceClient([cluster.addresses[node]], timeout=30) as one:
        for start in range(0, len(acked), 128):
            keys = acked[start:start + 128]
            got = await asyncio.gather(*(one.get(b"big/%06d" % i, consistent=False)
                                         for i in keys))
            bad = [i for i, kv in zip(keys, got) if kv is None or kv.value != value_of(i)]
            assert not bad, f"node {node} lacks or garbles {len(bad)} writes, e.g. {bad[:5]}"


def partial_files(cluster: LocalCluster, node: int) -> list[Path]:
    return list(cluster.node_dir(node).glob("snapshot-stream-*.partial"))


async def test_a_follower_left_behind_catches_up_by_a_streamed_snapshot(make_cluster):
    cluster = make_cluster(extra_args=["--snapshot-threshold", "20"])
    async with NameServiceClient(cluster.ns_arg, timeout=30) as ns:
        leader = await leader_of(ns, cluster)
        follower = next(i for i in cluster.ids if i != leader)
        cluster.kill(follower)
        acked = await fill(ns, 6, in_flight=4)  # 48 entries: compacted twice
        assert (await counters(ns, cluster, leader))["snapshots"] >= 2
        cluster.start(follower)
        await async_wait_for(lambda: caught_up(ns, cluster), 30,
                             "the follower to catch up by a snapshot")
        got = await counters(ns, cluster, follower)
        sent = await others(ns, cluster, follower)
        assert got["snapshot_receives_completed"] >= 1 and got["snapshots_installed"] >= 1
        # The newest snapshot holds at least 6 MiB less a snapshot interval (2.5 MiB).
        assert got["snapshot_chunks_received"] >= 4
        assert got["snapshot_bytes_received"] >= 3 * MIB
        assert got["snapshot_chunks_refused"] == 0
        assert sum(c["snapshot_chunks_sent"] for c in sent) >= got["snapshot_chunks_received"]
        assert sum(c["snapshot_streams_completed"] for c in sent) >= 1
        assert partial_files(cluster, follower) == []
        await check_every_write_on(cluster, follower, acked)


async def test_a_receiver_killed_in_the_middle_of_a_stream_resumes_it(make_cluster):
    cluster = make_cluster(extra_args=["--snapshot-threshold", "20"])
    async with NameServiceClient(cluster.ns_arg, timeout=30) as ns:
        leader = await leader_of(ns, cluster)
        follower = next(i for i in cluster.ids if i != leader)
        cluster.kill(follower)
        acked = await fill(ns, 48)
        assert (await counters(ns, cluster, leader))["snapshots"] >= 1
        cluster.start(follower)

        def part_way() -> Path | None:
            for path in partial_files(cluster, follower):
                try:
                    if path.stat().st_size >= 4 * MIB:
                        return path
                except FileNotFoundError:
                    pass
            return None

        partial = wait_for(part_way, 30, "4 MiB of the snapshot to reach the follower",
                           interval=0.001)
        cluster.kill(follower)
        held = partial.stat().st_size
        total = int(partial.name.split("-")[4])  # snapshot-stream-INDEX-TERM-SIZE-CRC
        assert held < total, "the stream ended before the follower was killed"
        held -= held % MIB  # a resume starts at a chunk boundary
        cluster.start(follower)
        await async_wait_for(lambda: caught_up(ns, cluster), 60,
                             "the follower to finish the snapshot")
        got = await counters(ns, cluster, follower)
        sent = await others(ns, cluster, follower)
        assert got["snapshot_receives_resumed"] >= 1 and got["snapshot_receives_completed"] >= 1
        assert sum(c["snapshot_streams_resumed"] for c in sent) >= 1
        # What the follower held was not sent again.
        assert sum(c["snapshot_bytes_skipped"] for c in sent) >= held >= 4 * MIB
        if got["snapshot_receives_completed"] == 1:  # (a leader change may need a newer one)
            assert got["snapshot_bytes_received"] <= total - held
        assert partial_files(cluster, follower) == []
        await check_every_write_on(cluster, follower, acked)
