"""A name-service leader stopped with SIGTERM hands its leadership over before it exits."""
from __future__ import annotations

import asyncio
import signal
import time

from nameservice.client import NameServiceClient
from tests.server.conftest import leader_of, wait_until

ELECTION_TIMEOUT = "3000-6000"  # ms: a gap this long would mean an election, not a hand-over


async def test_a_leader_stopped_by_sigterm_hands_over_and_writes_never_wait_for_an_election(
        make_cluster):
    cluster = make_cluster(election_timeout=ELECTION_TIMEOUT)
    async with NameServiceClient(cluster.ns_arg, timeout=20) as ns:
        old = await leader_of(ns, cluster, timeout=30)
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
            await wait_until(lambda: len(done) >= 100, 30, "writes to flow")
            proc = cluster.procs[old]
            proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            assert await asyncio.to_thread(proc.wait, 20) == 0, "the leader did not exit 0"
            count_then = len(done)
            await wait_until(lambda: len(done) >= count_then + 100, 30,
                             "writes after the hand-over")
            stop.set()
            await writer
        finally:
            writer.cancel()

        new = await leader_of(ns, cluster, timeout=5)
        assert new != old
        # The longest pause between two acknowledged writes from the signal on: a hand-over
        # takes a few round trips; an election would take at least 3 s.
        times = [t for t in done if t >= signalled]
        gaps = [b - a for a, b in zip([signalled, *times], times)]
        assert max(gaps) < 1.5, f"writes paused {max(gaps):.2f} s: an election, not a hand-over"
        for i in (0, len(done) - 1):
            assert (await ns.get(f"drain/{i}")).value == str(i).encode()
    log = cluster.node_dir(old).with_suffix(".log").read_text()
    assert f"handing leadership to node {new}" in log, log[-2000:]
