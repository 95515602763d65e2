"""Memory of real daemons after large writes are deleted: it stops growing (issue 13).

Large values once made every node keep what a delete had removed: 100 puts of 1 MiB then a
delete left +210-220 MB per node, growing each cycle (33 → 706 MB in 5 cycles), because the
log is held in memory until compacted and compaction came only every 10,000 entries. The
log now compacts once its entries hold ``--snapshot-bytes``, the watch history keeps about
``--history-bytes``, and large blocks go back to the system when freed.
"""
from __future__ import annotations

import pytest

from nameservice.client import NameServiceClient
from tests.procfs import rss_bytes
from tests.server.conftest import caught_up
from tests.waiting import async_wait_for

pytestmark = pytest.mark.slow

MIB = 1 << 20
HISTORY_BYTES = 4 * MIB
SNAPSHOT_BYTES = 4 * MIB
VALUES_PER_CYCLE = 16
CYCLES = 6


async def test_memory_of_every_node_stops_growing_across_put_delete_cycles(make_cluster):
    cluster = make_cluster(extra_args=["--history-bytes", str(HISTORY_BYTES),
                                       "--snapshot-bytes", str(SNAPSHOT_BYTES)])
    value = b"v" * MIB
    after: list[list[int]] = []
    async with NameServiceClient(cluster.ns_arg, timeout=30) as ns:
        for _ in range(CYCLES):
            for i in range(VALUES_PER_CYCLE):
                await ns.put(f"big/{i}", value)
            for i in range(VALUES_PER_CYCLE):
                await ns.delete(f"big/{i}")
            await async_wait_for(lambda: caught_up(ns, cluster), 30, "every node caught up")
            after.append([rss_bytes(proc.pid) for proc in cluster.procs.values()])
    # What a node may keep of deleted values, whatever the number of cycles: its history, its
    # log up to the next compaction, and one snapshot of the live state (at most one cycle's
    # values), with as much again for the allocator. Without the bounds each cycle added its
    # 16 MiB of log to every node: 80 MiB from the first cycle to the last.
    # A node may be building a snapshot when it is measured (a transient of up to one state's
    # size): growth is what stays, the lower of the last two cycles' RSS. Unbounded, it grows
    # every cycle, and both are 64-80 MiB above the first.
    bound = 2 * (HISTORY_BYTES + SNAPSHOT_BYTES + VALUES_PER_CYCLE * MIB // 2)
    growth = [min(after[-1][n], after[-2][n]) - after[0][n] for n in range(len(after[0]))]
    assert max(growth) < bound, (
        f"RSS grew by {[g // MIB for g in growth]} MiB after the first cycle "
        f"(bound {bound // MIB} MiB); per cycle: {[[r // MIB for r in c] for c in after]}")
