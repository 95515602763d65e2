"""A name-service leader stopped with SIGTERM hands its leadership over before it exits."""
from __future__ import annotations

import signal

from nameservice.client import NameServiceClient
from tests.server.conftest import leader_of, longest_write_pause

ELECTION_TIMEOUT = "3000-6000"  # ms: a gap this long would mean an election, not a hand-over


async def test_a_leader_stopped_by_sigterm_hands_over_and_writes_never_wait_for_an_election(
        make_cluster):
    cluster = make_cluster(election_timeout=ELECTION_TIMEOUT)
    async with NameServiceClient(cluster.ns_arg, timeout=20) as ns:
        old = await leader_of(ns, cluster, timeout=30)
        proc = cluster.procs[old]

        async def sigterm() -> None:
            proc.send_signal(signal.SIGTERM)

        pause = await longest_write_pause(ns, sigterm, proc)
        new = await leader_of(ns, cluster, timeout=5)
        assert new != old
        assert pause < 1.5, f"writes paused {pause:.2f} s: an election, not a hand-over"
    log = cluster.node_dir(old).with_suffix(".log").read_text()
    assert f"handing leadership to node {new}" in log, log[-2000:]
