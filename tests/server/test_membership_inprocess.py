"""Membership changes on real nodes in one process (MemoryNetwork, MemoryStorage): a node
added as a learner, promoted, members removed — the node's MEMBERS and MEMBER_CHANGE ops, its
address book and its peer connections."""
from __future__ import annotations

import pytest

from nameservice import wire
from nameservice.server.members import member_key
from nameservice.server.metrics import node_samples
from tests.server.inprocess import InProcessCluster, Refused
from tests.waiting import async_wait_for

pytestmark = pytest.mark.asyncio


async def _change(client, kind: int, node: int, address: str = "") -> dict:
    payload = await client.call(wire.OP_MEMBER_CHANGE, [kind, node, address])
    assert isinstance(payload, dict)
    return payload


def _roles(payload: dict) -> dict[int, str]:
    return {m["id"]: m["role"] for m in payload["members"]}


async def test_a_node_added_as_learner_catches_up_is_promoted_and_counts_in_the_quorum():
    async with InProcessCluster(3) as cluster:
        await cluster.wait_for_leader()
        client = cluster.client()
        await client.open_session()
        for i in range(50):
            await client.put(b"k%d" % i, b"v%d" % i)
        members = await client.call(wire.OP_MEMBERS, [])
        assert _roles(members) == {1: "voter", 2: "voter", 3: "voter"}

        address = cluster.join(4, dict(cluster.addresses), learners=(4,))
        added = await _change(client, wire.MEMBER_ADD_LEARNER, 4, address)
        assert _roles(added)[4] == "learner"
        assert {m["id"]: m["address"] for m in added["members"]}[4] == address
        # The learner receives the log: every key written before it joined.
        await cluster.wait_caught_up([1, 2, 3, 4])
        assert cluster.nodes[4].machine.get(b"k49").value == b"v49"
        assert cluster.nodes[4].machine.get(member_key(4)).value == address.encode()

        promoted = await _change(client, wire.MEMBER_PROMOTE, 4)
        assert _roles(promoted) == {1: "voter", 2: "voter", 3: "voter", 4: "voter"}
        for i in (1, 2, 3, 4):
            await async_wait_for(lambda i=i: 4 in cluster.nodes[i].core.conf_state.voters, 5.0,
                                 f"node {i} to know node 4 votes")
        # Four voters: a quorum is three; with one of the original three down, writes commit.
        leader = await cluster.wait_for_leader()
        assert cluster.nodes[leader].core.quorum == 3
        samples = {(name, labels): value
                   for name, labels, value in node_samples(cluster.nodes[leader])}
        assert samples[("fabric_ns_members", ("voter",))] == 4
        assert samples[("fabric_ns_members", ("learner",))] == 0
        assert ("fabric_ns_member_lag_entries", ("4",)) in samples
        proposed = sum(value for i in (1, 2, 3) for name, labels, value
                       in node_samples(cluster.nodes[i])
                       if name == "fabric_ns_member_changes_total" and labels == ("proposed",))
        assert proposed >= 2  # the addition and the promotion
        down = [i for i in (1, 2, 3) if i != leader][0]
        await cluster.crash(down)
        await client.put(b"after", b"promotion")
        await cluster.wait_caught_up([i for i in (1, 2, 3, 4) if i != down])
        assert cluster.nodes[4].machine.get(b"after").value == b"promotion"


async def test_changes_already_in_force_are_answered_ok_and_bad_ones_are_refused():
    async with InProcessCluster(3) as cluster:
        await cluster.wait_for_leader()
        client = cluster.client()
        address = cluster.join(4, dict(cluster.addresses), learners=(4,))
        await _change(client, wire.MEMBER_ADD_LEARNER, 4, address)
        # A retry of the same addition is answered OK without a second entry.
        last = cluster.nodes[cluster.leader()].core.last_index
        again = await _change(client, wire.MEMBER_ADD_LEARNER, 4, address)
        assert _roles(again)[4] == "learner"
        assert cluster.nodes[cluster.leader()].core.last_index == last
        with pytest.raises(Refused, match="already a member"):
            await _change(client, wire.MEMBER_ADD_LEARNER, 4, "elsewhere.memory:1")
        with pytest.raises(Refused, match="not a learner"):
            await _change(client, wire.MEMBER_PROMOTE, 9)
        with pytest.raises(Refused, match="HOST:PORT"):
            await _change(client, wire.MEMBER_ADD_LEARNER, 5, "")
        # Removing a node that is not a member is in force already.
        assert 9 not in _roles(await _change(client, wire.MEMBER_REMOVE, 9))


async def test_a_removed_leader_hands_over_and_the_removed_node_stops():
    async with InProcessCluster(3) as cluster:
        leader = await cluster.wait_for_leader()
        client = cluster.client()
        await client.open_session()
        await client.put(b"before", b"1")
        after = await _change(client, wire.MEMBER_REMOVE, leader)
        assert leader not in _roles(after)
        rest = [i for i in cluster.ids if i != leader]
        await cluster.wait_for_leader(rest)
        await async_wait_for(lambda: not cluster.running(leader), 10.0,
                             f"removed node {leader} to stop")
        await client.put(b"after", b"2")
        await cluster.wait_caught_up(rest)
        for i in rest:
            assert cluster.nodes[i].core.conf_state.voters == tuple(rest)
            assert cluster.nodes[i].machine.get(b"after").value == b"2"
            assert cluster.nodes[i].machine.get(member_key(leader)) is None

