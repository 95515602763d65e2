"""Real daemons and hostile input (issue 13): forged Raft messages (a term beyond the bound,
vote requests that cannot win), a cluster left at an absurd term by an older version, and
client requests that got no reply or a huge one."""
from __future__ import annotations

import asyncio

import msgpack
import pytest
import zmq
import zmq.asyncio

from nameservice import wire
from nameservice.client import NameServiceClient
from nameservice.raft import messages as msg
from nameservice.raft.types import MAX_TERM, HardState
from nameservice.storage import codec
from tests.procfs import rss_bytes
from tests.server.conftest import caught_up, leader_of, statuses
from tests.waiting import async_wait_for

pytestmark = pytest.mark.slow

ABSURD = (1 << 63) - 1


async def test_forged_vote_requests_change_no_term_and_depose_no_leader(make_cluster):
    cluster = make_cluster()
    ctx = zmq.asyncio.Context()
    socks = []
    try:
        async with NameServiceClient(cluster.ns_arg, timeout=10) as ns:
            await ns.put("before", "1")
            # Every log holds entries, so a request claiming an empty log is behind each.
            await async_wait_for(lambda: caught_up(ns, cluster), 20, "every node to catch up")
            leader = await leader_of(ns, cluster)
            st = await statuses(ns, cluster)
            term = st[leader]["term"]
            for node_id, address in cluster.addresses.items():
                sock = ctx.socket(zmq.DEALER)
                sock.setsockopt(zmq.LINGER, 0)
                sock.connect(f"tcp://{address}")
                socks.append(sock)
                forged = [
                    # The attack of issue 13: transfer flag, the largest int64 term.
                    msg.VoteRequest(9, node_id, ABSURD - 1, 1 << 40, ABSURD - 1, False, True),
                    # Within the bound but with a log behind: it cannot win, so it is ignored,
                    # from a member's id and from an unknown one, with the flag or without.
                    msg.VoteRequest(2 if node_id != 2 else 3, node_id, term + 50, 0, 0,
                                    False, True),
                    msg.VoteRequest(9, node_id, term + 60, 0, 0, False, False),
                ]
                for _ in range(20):
                    await sock.send(wire.encode_peer_frame(forged))

            async def counted():
                now = {i: await ns.status(a, timeout=5) for i, a in cluster.addresses.items()}
                return all(
                    s["counters"]["dropped_invalid"] >= 20 and s["counters"]["ignored_behind"]
                    + s["counters"]["ignored_non_member"] >= 40 for s in now.values())

            await async_wait_for(counted, 30, "the forged requests to be counted")
            await ns.put("after", "2")
            assert (await ns.get("after")).value == b"2"
            now = await statuses(ns, cluster)
            assert {s["term"] for s in now.values()} == {term}
            assert {s["leader"] for s in now.values()} == {leader}
    finally:
        for sock in socks:
            sock.close(0)
        ctx.term()


async def test_a_cluster_left_at_an_absurd_term_elects_a_leader_after_a_restart(make_cluster):
    """An older version let one forged request put every node at term 2**63 - 1, where no
    node could campaign again, even after a restart. Recovery now brings such a term back
    within the bound (no vote), and the cluster elects a leader and keeps its data."""
    cluster = make_cluster()
    async with NameServiceClient(cluster.ns_arg, timeout=10) as ns:
        await ns.put("kept", "yes")
    cluster.stop()
    for node_id in cluster.ids:
        path = cluster.node_dir(node_id) / "hardstate"
        hs = codec.decode_hard_state(path.read_bytes(), str(path))
        path.write_bytes(codec.encode_hard_state(HardState(ABSURD, 9, hs.commit)))
    cluster.start()
    async with NameServiceClient(cluster.ns_arg, timeout=10) as ns:
        leader = await leader_of(ns, cluster, timeout=20)
        assert (await ns.get("kept")).value == b"yes"
        st = await statuses(ns, cluster)
        assert MAX_TERM // 2 < st[leader]["term"] < MAX_TERM
        await asyncio.wait_for(ns.put("new", "write"), 10)


async def _collect(sock, rids: set[int], answers: dict[int, int]) -> int:
    """Receive replies until every one of ``rids`` is answered; the largest frame's size."""
    largest = 0
    while not rids <= set(answers):
        data = await asyncio.wait_for(sock.recv(), 20)
        largest = max(largest, len(data))
        for rid, status, _ in wire.split_frame(data, wire.MAX_CLIENT_FRAME)[1]:
            answers[rid] = status
    return largest


async def test_every_hostile_request_gets_a_bounded_reply_and_the_node_keeps_serving(
        make_cluster):
    cluster = make_cluster()
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        async with NameServiceClient(cluster.ns_arg, timeout=10) as ns:
            await ns.put("big", b"x" * (1 << 20))
            leader = await leader_of(ns, cluster)
            address = cluster.addresses[leader]
            sock.connect(f"tcp://{address}")
            deep = msgpack.unpackb(b"\x91" * 1020 + b"\xc0")
            await sock.send(wire.frame(wire.REQUEST, [deep, [1, deep], [2, wire.OP_GET, deep,
                                                                         True]]))
            await sock.send(wire.frame(wire.REQUEST, [[3, 99]]))  # an unknown op
            await sock.send(wire.frame(wire.REQUEST, [[10 + i, wire.OP_STATUS]
                                                      for i in range(wire.MAX_BATCH + 1)]))
            answers: dict[int, int] = {}
            largest = max(0, await _collect(
                sock, {1, 2, 3} | set(range(10, 10 + wire.MAX_BATCH + 1)), answers))
            assert {answers[rid] for rid in (1, 2, 3)} == {wire.ST_BAD_REQUEST}
            assert {answers[rid] for rid in range(10, 10 + wire.MAX_BATCH + 1)} == {
                wire.ST_BAD_REQUEST}
            gets = [[100_000 + i, wire.OP_GET, b"big", False] for i in range(268)]
            await sock.send(wire.frame(wire.REQUEST, gets))  # 4.5 KB of stale GETs
            consistent = [[200_000 + i, wire.OP_GET, b"big", True] for i in range(268)]
            await sock.send(wire.frame(wire.REQUEST, consistent))
            largest = max(largest, await _collect(
                sock, {w[0] for w in gets + consistent}, answers))
            assert largest <= wire.MAX_CLIENT_FRAME
            got = [answers[w[0]] for w in gets]
            assert 0 < got.count(wire.ST_OK) <= 7 and set(got) == {wire.ST_OK, wire.ST_BUSY}
            # (Consistent reads fail NOT_LEADER if the leadership moved meanwhile.)
            assert [answers[w[0]] for w in consistent].count(wire.ST_OK) <= 7
            assert rss_bytes(cluster.procs[leader].pid) < 400 << 20
            counters = (await ns.status(address))["counters"]
            assert counters["bad_requests"] >= 3 + wire.MAX_BATCH + 1
            assert counters["replies_over_budget"] >= 268 - 7
            await ns.put("after", "1")
            assert (await ns.get("big")).value == b"x" * (1 << 20)
    finally:
        sock.close(0)
        ctx.term()
