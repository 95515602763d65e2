"""A 3-node cluster inside this process, on one event loop: MemoryStorage and the in-memory
transport under the real nodes, a client speaking the real wire frames (tests/server/inprocess.py).
"""
from __future__ import annotations

import asyncio

from nameservice import wire
from nameservice.kv import CasResult, PutResult
from nameservice.raft.types import NONE, Role
from nameservice.storage import MemoryStorage
from tests.server.inprocess import InProcessCluster, cas_absent, cas_value
from tests.waiting import async_wait_for


async def test_a_put_is_read_back_by_a_consistent_read_on_every_node():
    async with InProcessCluster(3) as cluster:
        leader = await cluster.wait_for_leader()
        ns = cluster.client()
        await ns.open_session()
        result = await ns.put(b"greeting", b"hello")
        assert type(result) is PutResult and result.revision > 0
        for node_id, address in cluster.addresses.items():  # followers ask the leader
            kv = await ns.get(b"greeting", address=address)
            assert kv is not None and kv.value == b"hello", node_id
        assert cluster.nodes[leader].status()["counters"]["writes"] >= 2  # session + put


async def test_a_write_sent_to_a_follower_is_redirected_to_the_leader():
    async with InProcessCluster(3) as cluster:
        leader = await cluster.wait_for_leader()
        follower = next(i for i in cluster.ids if i != leader)
        ns = cluster.client()
        status, payload = await ns.raw.call(cluster.addresses[follower], wire.OP_WRITE, [[9]])
        assert (status, payload) == (wire.ST_NOT_LEADER, cluster.addresses[leader])


async def test_consistent_reads_after_a_leader_change_see_every_acknowledged_write():
    async with InProcessCluster(3) as cluster:
        old = await cluster.wait_for_leader()
        ns = cluster.client()
        await ns.open_session()
        for i in range(20):
            await ns.put(b"k/%d" % i, b"v%d" % i)
        await cluster.stop(old)  # a clean stop: the leadership is handed over
        others = [i for i in cluster.ids if i != old]
        new = await cluster.wait_for_leader(others)
        assert new != old
        for node_id in others:
            for i in (0, 19):
                kv = await ns.get(b"k/%d" % i, address=cluster.addresses[node_id])
                assert kv is not None and kv.value == b"v%d" % i
        await ns.put(b"k/after", b"x")
        assert (await ns.get(b"k/after")).value == b"x"


async def test_an_isolated_leader_is_replaced_writes_go_on_and_nothing_acknowledged_is_lost():
    async with InProcessCluster(3) as cluster:
        old = await cluster.wait_for_leader()
        ns = cluster.client()
        await ns.open_session()
        acked = {}
        for i in range(30):
            await ns.put(b"a/%d" % i, b"%d" % i)
            acked[b"a/%d" % i] = b"%d" % i
        cluster.network.isolate(cluster.addresses[old])
        others = [i for i in cluster.ids if i != old]
        new = await cluster.wait_for_leader(others)
        assert new != old
        for i in range(30):  # the client finds the new leader by itself
            await ns.put(b"b/%d" % i, b"%d" % i)
            acked[b"b/%d" % i] = b"%d" % i
        # The old leader cannot hear a quorum: it steps down.
        await async_wait_for(lambda: cluster.nodes[old].core.role is not Role.LEADER, 10,
                         "the isolated leader to step down")
        cluster.network.heal()
        await async_wait_for(lambda: cluster.nodes[old].core.leader == new, 10,
                         "the old leader to follow the new one")
        await cluster.wait_caught_up()
        for key, value in acked.items():
            assert (await ns.get(key)).value == value
        for node_id in cluster.ids:  # every node applied the same state
            machine = cluster.nodes[node_id].machine
            assert {k: machine.get(k).value for k in acked} == acked, node_id


async def test_a_crashed_leader_restarts_from_its_durable_log_and_catches_up():
    async with InProcessCluster(3) as cluster:
        old = await cluster.wait_for_leader()
        ns = cluster.client()
        await ns.open_session()
        for i in range(10):
            await ns.put(b"c/%d" % i, b"%d" % i)
        await cluster.crash(old)
        await cluster.wait_for_leader([i for i in cluster.ids if i != old])
        await ns.put(b"c/after", b"x")
        cluster.start(old)
        await cluster.wait_for_leader()
        await cluster.wait_caught_up()
        machine = cluster.nodes[old].machine
        assert [machine.get(b"c/%d" % i).value for i in range(10)] == [b"%d" % i for i in range(10)]
        assert machine.get(b"c/after").value == b"x"


async def test_a_cas_retried_with_the_same_session_and_seq_is_applied_once():
    async with InProcessCluster(3) as cluster:
        await cluster.wait_for_leader()
        ns = cluster.client()
        await ns.open_session()
        first = await ns.write(cas_absent(b"lock", b"me"))
        assert type(first) is CasResult and first.succeeded
        again = await ns.write(cas_absent(b"lock", b"me"), seq=ns.seq)  # the same request
        assert again == first  # the original outcome, not a failed compare
        # A different request is applied: it sees the key, so its compare fails.
        third = await ns.write(cas_absent(b"lock", b"other"))
        assert type(third) is CasResult and not third.succeeded
        kv = await ns.get(b"lock")
        assert (kv.value, kv.version) == (b"me", 1)


async def test_a_cas_whose_reply_was_lost_is_retried_on_the_new_leader_and_applied_once():
    async with InProcessCluster(3) as cluster:
        old = await cluster.wait_for_leader()
        ns = cluster.client()
        await ns.open_session()
        await ns.put(b"counter", b"1")
        ns.seq += 1
        request = ns.request(cas_value(b"counter", b"2", b"1"), ns.seq)
        # The request reaches the leader, and its reply is lost on the way back.
        assert ns.raw.send(cluster.addresses[old], [[ns.raw.next_rid(), wire.OP_WRITE, *request]])
        cluster.network.cut(ns.raw.name, cluster.addresses[old])
        await async_wait_for(lambda: all(node.machine.get(b"counter").value == b"2"
                                     for node in cluster.nodes.values()), 10,
                         "every node to apply the CAS")
        # Then the leader is lost; the client retries the same request on the new one.
        cluster.network.isolate(cluster.addresses[old])
        await cluster.wait_for_leader([i for i in cluster.ids if i != old])
        retried = await ns.write(cas_value(b"counter", b"2", b"1"), seq=ns.seq)
        assert type(retried) is CasResult and retried.succeeded  # the original outcome
        assert ns.raw.unmatched == []  # the lost reply never arrived
        kv = await ns.get(b"counter")
        assert (kv.value, kv.version) == (b"2", 2)


async def test_a_request_sent_before_any_leader_is_parked_and_answered_once_one_is_elected():
    async with InProcessCluster(3, election_timeout_ms=(300, 400)) as cluster:
        node = cluster.nodes[1]
        await async_wait_for(lambda: node.transport is not None, 5, "node 1 to listen")
        assert node.core.leader == NONE
        ns = cluster.client()
        call = asyncio.create_task(
            ns.raw.call(cluster.addresses[1], wire.OP_WRITE, [[9]], timeout=10.0))
        await async_wait_for(lambda: node.intake.parked == 1, 5, "the request to be parked")
        status, payload = await call
        leader = node.core.leader
        assert leader != NONE and node.intake.parked == 0
        if leader == 1:
            assert status == wire.ST_OK
        else:
            assert (status, payload) == (wire.ST_NOT_LEADER, cluster.addresses[leader])


async def test_a_node_counts_and_drops_bad_frames():
    async with InProcessCluster(1) as cluster:
        await cluster.wait_for_leader()
        ns = cluster.client()
        network, address = cluster.network, cluster.addresses[1]
        network.send_to_node(ns.raw.name, address, ns.raw.identity, b"\x01\x02garbage")
        network.send_to_node(ns.raw.name, address, ns.raw.identity, b"\x07\x02x")
        status, payload = await ns.raw.call(address, wire.OP_WRITE, [b"not a command"])
        assert status == wire.ST_BAD_REQUEST
        counters = cluster.nodes[1].status()["counters"]
        assert counters["bad_client_frames"] == 2 and counters["bad_requests"] == 1


async def test_a_crashed_follower_catches_up_by_a_snapshot_streamed_in_memory():
    cluster = InProcessCluster(3)
    cluster.storages = {i: MemoryStorage(snapshot_threshold=20) for i in cluster.ids}
    async with cluster:
        leader = await cluster.wait_for_leader()
        follower = next(i for i in cluster.ids if i != leader)
        ns = cluster.client()
        await ns.open_session()
        await cluster.crash(follower)
        for i in range(60):  # one entry each: the leader compacts past the follower's log
            await ns.put(b"s/%d" % i, b"%d" % i * 100)
        cluster.start(follower)
        await cluster.wait_caught_up()
        node = cluster.nodes[follower]
        assert node.counters["snapshot_receives_completed"] == 1
        assert node.counters["snapshots_installed"] == 1
        assert [node.machine.get(b"s/%d" % i).value for i in range(60)] == [
            b"%d" % i * 100 for i in range(60)]
