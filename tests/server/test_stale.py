"""Quorum-less writes with real daemons: a minority node accepts, keeps and later replicates."""
from __future__ import annotations

import asyncio
import signal

import pytest
import zmq
import zmq.asyncio

from nameservice import wire
from nameservice.client import NameServiceClient
from nameservice.kv import MAX_KEY_BYTES
from tests.server.conftest import caught_up, leader_of
from tests.waiting import async_wait_for

pytestmark = pytest.mark.slow


async def value_at(address: str, key: str, *, consistent: bool = False) -> bytes | None:
    """The value of ``key`` as the node at ``address`` reads it (None if absent or no answer)."""
    async with NameServiceClient(address, timeout=1.0, attempt_timeout=0.5) as one:
        try:
            kv = await one.get(key, consistent=consistent)
        except Exception:
            return None
        return None if kv is None else kv.value


async def stale_status(address: str) -> dict:
    async with NameServiceClient(address, timeout=2.0) as one:
        return (await one.status(address))["stale"]


async def test_a_stale_put_on_a_cut_off_node_is_kept_and_replicated_after_the_heal(
        make_cluster):
    cluster = make_cluster()
    async with NameServiceClient(cluster.ns_arg) as ns:
        await ns.put("conf/base", "0")
        await async_wait_for(lambda: caught_up(ns, cluster), 10.0, "every node to apply the put")
    alone, others = 1, [2, 3]
    address = cluster.addresses[alone]
    try:
        for node in others:
            cluster.kill(node, signal.SIGSTOP)
        async with NameServiceClient(address, timeout=3.0) as one:
            result = await one.put("conf/x", "minority", consistent=False)
            assert result.revision == 0  # not in the log yet
            kv = await one.get("conf/x", consistent=False)
            assert kv.value == b"minority" and kv.mod_revision == 0
            listed = await one.range("conf/", consistent=False)
            assert [(k.key, k.value) for k in listed] == [
                (b"conf/base", b"0"), (b"conf/x", b"minority")]
        # The write is on the node's disk: it survives a crash and restart of that node.
        cluster.kill(alone, signal.SIGKILL)
        cluster.start(alone)
        assert await value_at(address, "conf/x") == b"minority"
        assert (await stale_status(address))["pending"] == 1
    finally:
        for node in others:
            cluster.kill(node, signal.SIGCONT)
    for node, node_address in cluster.addresses.items():
        await async_wait_for(lambda a=node_address: _equals(value_at(a, "conf/x"), b"minority"),
                             15.0,
                             f"the write to be applied on node {node}")
    assert await value_at(cluster.ns_arg, "conf/x", consistent=True) == b"minority"
    await async_wait_for(lambda: _pending_is_zero(address), 10.0, "the overlay to empty")
    assert (await stale_status(address))["conflicts"] == 0


async def _equals(awaitable, expected) -> bool:
    return await awaitable == expected


async def _pending_is_zero(address: str) -> bool:
    return (await stale_status(address))["pending"] == 0


async def test_a_conflicting_stale_write_is_reported_and_changes_nothing(make_cluster):
    cluster = make_cluster()
    async with NameServiceClient(cluster.ns_arg) as ns:
        await ns.put("conf/k", "v0")
        await async_wait_for(lambda: caught_up(ns, cluster), 10.0, "every node to apply the put")
    alone, others = 1, [2, 3]
    address = cluster.addresses[alone]
    majority = ",".join(cluster.addresses[n] for n in others)
    try:
        for node in others:
            cluster.kill(node, signal.SIGSTOP)
        # Wait until the node has given up on every leader: then nothing of its write can
        # sit in a stopped peer's socket buffer, to be delivered when that peer wakes.
        await async_wait_for(lambda: _knows_no_leader(address), 10.0, "the node to lose its leader")
        async with NameServiceClient(address, timeout=3.0) as one:
            await one.put("conf/k", "mine", consistent=False)
        # Now the node that took it is cut off, and the majority moves the key on.
        cluster.kill(alone, signal.SIGSTOP)
        for node in others:
            cluster.kill(node, signal.SIGCONT)
        async with NameServiceClient(majority, timeout=10.0) as ns:
            await ns.put("conf/k", "theirs")
    finally:
        for node in cluster.ids:
            cluster.kill(node, signal.SIGCONT)
    await async_wait_for(lambda: _conflicts(address), 15.0, "the conflict to be reported")
    status = await stale_status(address)
    assert status["pending"] == 0
    assert status["recent_conflicts"][-1]["key"] == "conf/k"
    assert status["recent_conflicts"][-1]["value"] == "mine"
    assert await value_at(cluster.ns_arg, "conf/k", consistent=True) == b"theirs"
    await async_wait_for(lambda: _equals(value_at(address, "conf/k"), b"theirs"), 10.0,
                         "the node that took the stale write to read the majority's value")


async def _knows_no_leader(address: str) -> bool:
    async with NameServiceClient(address, timeout=1.0) as one:
        return (await one.status(address))["leader"] == 0


async def _conflicts(address: str) -> bool:
    try:
        return (await stale_status(address))["conflicts"] == 1
    except Exception:
        return False


async def test_bad_quorum_less_writes_and_keepalives_are_refused_and_the_node_serves_on(
        make_cluster):
    cluster = make_cluster()
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.DEALER)
    try:
        async with NameServiceClient(cluster.ns_arg) as ns:
            leader = cluster.addresses[await leader_of(ns, cluster)]
            sock.connect(f"tcp://{leader}")
            bad = [
                [1, wire.OP_STALE_WRITE, b"", b"v"],                         # empty key
                [2, wire.OP_STALE_WRITE, b"k" * (MAX_KEY_BYTES + 1), b"v"],  # key too long
                [3, wire.OP_STALE_WRITE, b"k", 17],                          # value not bytes
                [4, wire.OP_KEEPALIVE, 0],                                   # no such lease id
                [5, wire.OP_KEEPALIVE, "one"],
            ]
            await sock.send(wire.frame(wire.REQUEST, bad))
            statuses = {}
            while len(statuses) < len(bad):
                _, body = wire.split_frame(await asyncio.wait_for(sock.recv(), 5),
                                           wire.MAX_CLIENT_FRAME)
                statuses.update({rid: status for rid, status, _ in body})
            assert statuses == {rid: wire.ST_BAD_REQUEST for rid in range(1, 6)}
            assert (await ns.status(leader))["stale"]["pending"] == 0
            await ns.put("still", "serving")
            assert (await ns.get("still")).value == b"serving"
        assert all(cluster.running(i) for i in cluster.ids)
    finally:
        sock.close(0)
        ctx.term()
