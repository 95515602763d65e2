"""Membership changes on real daemons while writes, CAS and a watch run throughout: grow 3 → 5,
replace every node, remove the leader, a learner SIGKILLed while it catches up. At the end
every acknowledged write is present, no CAS was applied twice and the watch saw every change
once (``membership_load.Load``)."""
from __future__ import annotations

import asyncio
import signal

import pytest

from nameservice import wire
from nameservice.client import NameServiceClient
from nameservice.client.api import MEMBERS_REFRESH_S
from tests.server.conftest import leader_of, statuses
from tests.server.membership_load import Load
from tests.waiting import async_wait_for

pytestmark = pytest.mark.asyncio

CHANGE_TIMEOUT = 30.0


def _roles(payload: dict) -> dict[int, str]:
    return {m["id"]: m["role"] for m in payload["members"]}


async def _add(client: NameServiceClient, cluster, node: int, promote: bool = True) -> dict:
    """Add node ``node`` the way an operator does: member add, start it with --join, promote."""
    address = cluster.add(node)
    await client.member_change(wire.MEMBER_ADD_LEARNER, node, address, timeout=CHANGE_TIMEOUT)
    await asyncio.to_thread(cluster.start, node)  # the load goes on meanwhile
    if not promote:
        return await client.members()
    return await client.member_change(wire.MEMBER_PROMOTE, node, timeout=CHANGE_TIMEOUT)


async def _remove(client: NameServiceClient, cluster, node: int) -> dict:
    after = await client.member_change(wire.MEMBER_REMOVE, node, timeout=CHANGE_TIMEOUT)
    proc = cluster.procs[node]
    await async_wait_for(lambda: proc.poll() is not None, 10.0, f"removed node {node} to stop")
    assert proc.returncode == 0
    cluster.forget(node)
    return after


async def test_a_cluster_grows_from_three_to_five_nodes_while_it_serves(make_cluster):
    cluster = make_cluster(3)
    async with NameServiceClient(cluster.ns_arg, timeout=20.0) as client, \
            NameServiceClient(cluster.ns_arg) as bystander:
        async with Load(client) as load:
            for node in (4, 5):
                after = await _add(client, cluster, node)
                assert _roles(after)[node] == "voter"
            members = await client.members()
            assert _roles(members) == {i: "voter" for i in (1, 2, 3, 4, 5)}
            # A client that only knew the first three learns of the new members by itself.
            await async_wait_for(
                lambda: {cluster.addresses[4], cluster.addresses[5]}
                <= set(bystander.channel.addresses), 3 * MEMBERS_REFRESH_S,
                "a client to learn of the new members")
            await load.stop()
            await load.check(client)
            st = await statuses(client, cluster)
            assert {s["id"] for s in st.values()} == {1, 2, 3, 4, 5}
            assert all(s["voters"] == [1, 2, 3, 4, 5] for s in st.values())


async def test_every_node_of_a_cluster_is_replaced_one_by_one_while_it_serves(make_cluster):
    cluster = make_cluster(3)
    async with NameServiceClient(cluster.ns_arg, timeout=20.0) as client:
        async with Load(client) as load:
            for old, new in ((1, 4), (2, 5), (3, 6)):
                await _add(client, cluster, new)
                await _remove(client, cluster, old)
            members = await client.members()
            assert _roles(members) == {4: "voter", 5: "voter", 6: "voter"}
            await load.stop()
            await load.check(client)
            assert len(load.acked) > 0 and len(load.cas_ok) > 0


async def test_the_leader_is_removed_and_another_node_leads_without_losing_a_write(make_cluster):
    cluster = make_cluster(3)
    async with NameServiceClient(cluster.ns_arg, timeout=20.0) as client:
        async with Load(client) as load:
            leader = await leader_of(client, cluster)
            after = await _remove(client, cluster, leader)
            assert leader not in _roles(after)
            new_leader = await leader_of(client, cluster)
            assert new_leader != leader
            await load.stop()
            await load.check(client)


async def test_a_learner_killed_while_catching_up_restarts_and_catches_up(make_cluster):
    cluster = make_cluster(3, extra_args=["--snapshot-threshold", "200"])
    async with NameServiceClient(cluster.ns_arg, timeout=20.0) as client:
        value = "x" * 2000
        for i in range(3000):  # several snapshots' worth: the learner needs one
            await client.put(f"bulk/{i}", value)
        async with Load(client) as load:
            await _add(client, cluster, 4, promote=False)
            cluster.kill(4, signal.SIGKILL)
            await asyncio.to_thread(cluster.start, 4)

            async def learner_caught_up() -> bool:
                row = [m for m in (await client.members())["members"] if m["id"] == 4]
                return bool(row) and row[0].get("lag", 1 << 30) <= 64
            await async_wait_for(learner_caught_up, 30.0, "the restarted learner to catch up")
            after = await client.member_change(wire.MEMBER_PROMOTE, 4, timeout=CHANGE_TIMEOUT)
            assert _roles(after)[4] == "voter"
            await load.stop()
            await load.check(client)
            kv = await client.get("bulk/2999")
            assert kv is not None and kv.value.decode() == value
