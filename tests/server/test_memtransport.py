"""The in-memory transport alone: the wire frames of NodeTransport, drops, partitions."""
from __future__ import annotations

import asyncio

import pytest

from nameservice import wire
from nameservice.raft import messages as m
from nameservice.server.memtransport import MemoryNetwork

CLUSTER = {1: "n1:1", 2: "n2:2", 3: "n3:3"}


def test_a_flush_sends_one_peer_frame_per_peer_and_one_reply_frame_per_client():
    network = MemoryNetwork()
    one, two = network.transport(1, CLUSTER), network.transport(2, CLUSTER)
    client = network.client("c")
    beats = [m.Heartbeat(1, 2, 5, 3, b""), m.Heartbeat(1, 2, 5, 4, b"x")]
    one.queue_messages(beats)
    one.queue_reply(client.identity, 7, wire.ST_OK, [None, 1])
    one.queue_reply(client.identity, 8, wire.ST_BUSY, "later")
    assert one.flush() is False
    assert two.drain(10) == [[b"node-1", wire.encode_peer_frame(beats)]]
    assert client.unmatched == [("n1:1", [7, wire.ST_OK, [None, 1]]),
                                ("n1:1", [8, wire.ST_BUSY, "later"])]
    assert one.peer_drops == 0  # node 3 was sent nothing


def test_frames_for_a_peer_that_is_down_or_a_client_that_is_gone_are_dropped_and_counted():
    network = MemoryNetwork()
    one = network.transport(1, CLUSTER)
    one.queue_messages([m.Heartbeat(1, 3, 5, 3, b"")])
    one.queue_reply(b"nobody", 1, wire.ST_OK, None)
    one.flush()
    assert (one.peer_drops, one.reply_drops) == (1, 1)


def test_pushes_for_a_client_that_is_gone_are_reported_gone():
    network = MemoryNetwork()
    one = network.transport(1, CLUSTER)
    failed = []
    one.on_push_failed = lambda *args: failed.append(args)
    one.queue_push(b"nobody", [[1], wire.PUSH_EVENTS, 1, 1, []])
    one.flush()
    assert failed == [(b"nobody", [[[1], wire.PUSH_EVENTS, 1, 1, []]], True)]


def test_a_cut_link_loses_frames_both_ways_until_healed():
    network = MemoryNetwork()
    one, two = network.transport(1, CLUSTER), network.transport(2, CLUSTER)
    network.cut("n1:1", "n2:2")
    for a, b in ((one, 2), (two, 1)):
        a.queue_messages([m.Heartbeat(0, b, 5, 3, b"")])
        a.flush()
    assert not one.has_input() and not two.has_input() and network.lost == 2
    assert one.peer_drops == 0  # lost on the way, as in a partition: not refused
    network.heal()
    one.queue_messages([m.Heartbeat(1, 2, 5, 3, b"")])
    one.flush()
    assert two.has_input()


def test_an_isolated_node_hears_no_client_and_no_client_hears_it():
    network = MemoryNetwork()
    one = network.transport(1, CLUSTER)
    client = network.client()
    network.isolate("n1:1")
    assert client.send("n1:1", [[1, wire.OP_STATUS]]) is True and not one.has_input()
    one.queue_reply(client.identity, 1, wire.ST_OK, None)
    one.flush()
    assert client.unmatched == [] and network.lost == 2


def test_an_address_is_bound_by_one_transport_at_a_time():
    network = MemoryNetwork()
    one = network.transport(1, CLUSTER)
    with pytest.raises(OSError):
        network.transport(1, CLUSTER)
    one.close()
    network.transport(1, CLUSTER)


async def test_a_call_gets_its_reply_and_receive_waits_for_a_frame():
    network = MemoryNetwork()
    node = network.transport(1, CLUSTER)
    client = network.client()

    async def serve() -> None:
        identity, data = await node.receive()
        _, [[rid, op]] = wire.split_frame(data, wire.MAX_CLIENT_FRAME)
        node.queue_reply(identity, rid, wire.ST_OK, op)
        node.flush()

    server = asyncio.create_task(serve())  # waits in receive() until the request arrives
    assert await client.call("n1:1", wire.OP_STATUS, [], timeout=5.0) == (wire.ST_OK,
                                                                         wire.OP_STATUS)
    await server
    with pytest.raises(TimeoutError):
        await client.call("n2:2", wire.OP_STATUS, [], timeout=0.01)  # nobody there
