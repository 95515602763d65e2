"""Garbage at every socket: counted and dropped, nothing crashes, other messages still flow."""
from __future__ import annotations

import asyncio
import os
import random

import zmq
import zmq.asyncio

from fabric import protocol as p
from fabric.ports.input import InputPort
from fabric.ports.output import OutputPort
from tests.datapath.conftest import stats_from
from tests.datapath.helpers import fake_intermediary, running_intermediary
from tests.waiting import async_wait_for

PID = os.urandom(16)
CID = os.urandom(16)


def garbage_frames(channel: str) -> list[list[bytes]]:
    """Frames (as DEALER multiparts) no intermediary may accept, each counted as bad."""
    rng = random.Random(7)
    batch = p.batch_frame(PID, 0, 1, 0, p.encode_payloads([1]))
    frames = [
        [b""],
        [b"\x01"],
        [bytes([9, p.T_HEARTBEAT])],  # wrong version
        [bytes([p.VERSION, 99])],  # unknown type
        [p.heartbeat_frame() + b"x"],  # heartbeat with a body
        [p.encode(p.Hello(p.ROLE_CONSUMER, CID, 10, channel + "-other"))],  # wrong channel
        [p.encode(p.Hello(p.ROLE_CONSUMER, os.urandom(16), 10, channel))],  # id != routing id
        [bytes([p.VERSION, p.T_HELLO, 7, 0]) + CID + b"\0\0\0\1"],  # unknown role
        [batch],  # a batch from a peer that never said HELLO as that producer
        [batch[:20]],  # truncated header
        [p.encode(p.Nack((1,)))],  # intermediaries never receive NACK
        [p.encode(p.Ack(PID, CID, 1, ((0, 1),)))[:-3]],  # partial ack entry
        [bytes([p.VERSION, p.T_BATCH]) + b"\0" * (p.MAX_FRAME + 10)],  # oversized
        [b"a", b"b"],  # two frames where one is expected
        [p.encode(p.Claim(1, PID, "tcp://127.0.0.1:1"))],  # a CLAIM from a consumer's id
        [p.encode(p.Claimed(1, PID))[:-1]],  # truncated
    ]
    frames += [[bytes(rng.randrange(256) for _ in range(rng.randrange(1, 80)))] for _ in range(30)]
    return frames


async def test_an_intermediary_process_counts_and_drops_garbage_and_keeps_working(cluster):
    proc, endpoint = cluster.intermediary()
    ctx = zmq.asyncio.Context.instance()
    raw = ctx.socket(zmq.DEALER)
    raw.setsockopt(zmq.ROUTING_ID, b"C" + CID)
    raw.setsockopt(zmq.LINGER, 0)
    raw.connect(endpoint)
    frames = garbage_frames(cluster.channel)
    for parts in frames:
        await raw.send_multipart(parts)
    # An ACK for a batch nobody sent, from a registered consumer: counted as unknown.
    await raw.send(p.encode(p.Hello(p.ROLE_CONSUMER, CID, 0, cluster.channel)))
    await raw.send(p.encode(p.Ack(PID, CID, 0, ((12345, 1),))))
    # An answer to a claim round nobody opened: counted as unknown.
    await raw.send(p.encode(p.Claimed(5, PID)))

    got = []
    async with InputPort(cluster.channel, [endpoint], got.append) as consumer, \
            OutputPort(cluster.channel, [endpoint]) as producer:
        for i in range(1000):
            await producer.send(i)
        await asyncio.wait_for(producer.flush(), 20)
        await async_wait_for(lambda: len(got) == 1000, 10, "every message")
    raw.close()
    assert sorted(m.payload for m in got) == list(range(1000))
    assert consumer.stats.bad_frames == 0
    stats = stats_from(cluster.stop(proc))
    # Every garbage message is one bad frame, except the random ones that happen to be a
    # valid frame (none with this seed) and the oversized one, which is counted too.
    assert stats["bad_frames"] == len(frames)
    assert stats["unknown_acks"] == 1
    assert stats["unknown_claims"] == 1
    assert stats["unroutable"] >= 1  # that ACK's producer is not connected


def port_garbage(producer_id: bytes) -> list[bytes]:
    """Frames no port may accept (valid framing, wrong content), each counted as bad."""
    bad_body = p.batch_frame(producer_id, 0, 3, 0, b"\xc1not msgpack")
    return [
        b"",
        bytes([9, p.T_HEARTBEAT]),
        bytes([p.VERSION, 42]),
        bytes([p.VERSION, p.T_HELLO]) + b"\0" * 30,
        bytes([p.VERSION, p.T_PEER_GONE, 0]),
        p.heartbeat_frame() + b"!",
        bad_body,
        p.batch_frame(producer_id, 0, 2, 0, p.encode_payloads([1])),  # count mismatch
        bytes([p.VERSION, p.T_ACK]) + b"\0" * 3,
        bytes([p.VERSION, p.T_CLAIM]) + b"\0" * 5,
        p.encode(p.Claimed(1, producer_id)),  # sent to producers, never to ports' other side
    ]


async def test_a_consumer_counts_and_drops_garbage_from_an_intermediary():
    channel = "garbage-consumer"
    fake, fake_endpoint = fake_intermediary()
    got = []
    try:
        async with running_intermediary(channel) as real, \
                InputPort(channel, [real.endpoint, fake_endpoint], got.append) as consumer, \
                OutputPort(channel, [real.endpoint]) as producer:
            rid, hello = await asyncio.wait_for(fake.recv_multipart(), 10)
            assert p.decode(hello).role == p.ROLE_CONSUMER
            frames = port_garbage(os.urandom(16))
            for frame in frames:
                await fake.send_multipart([rid, frame])
            for i in range(500):
                await producer.send(i)
            await asyncio.wait_for(producer.flush(), 10)
            await async_wait_for(lambda: consumer.stats.bad_frames == len(frames), 10,
                                 "garbage counted")
            # A CLAIM about an intermediary it never heard of is answered at once, where it
            # came from, with nothing claimed.
            pid = os.urandom(16)
            await fake.send_multipart([rid, p.encode(p.Claim(9, pid, "tcp://127.0.0.1:1"))])
            async def claimed():  # (heartbeats and acks come before it)
                _, frame = await fake.recv_multipart()
                return frame if p.frame_type(frame) == p.T_CLAIMED else None
            frame = await async_wait_for(claimed, 10, "the CLAIMED answer", interval=0)
            assert p.decode(frame) == p.Claimed(9, pid)
            assert consumer.stats.claims_unknown == 1 and consumer.stats.claims_answered == 1
    finally:
        fake.close()
    assert sorted(m.payload for m in got) == list(range(500))


async def test_a_producer_counts_garbage_and_resends_what_a_dead_intermediary_swallowed():
    channel = "garbage-producer"
    fake, fake_endpoint = fake_intermediary()
    got = []
    async with running_intermediary(channel) as real, \
            InputPort(channel, [real.endpoint], got.append), \
            OutputPort(channel, [fake_endpoint, real.endpoint]) as producer:
        rid, hello = await asyncio.wait_for(fake.recv_multipart(), 10)
        assert p.decode(hello).role == p.ROLE_PRODUCER
        pid = hello[4:20]
        frames = port_garbage(pid)[:6] + [
            p.encode(p.Ack(pid, CID, 0, ((999_999, 1),))),  # ack for an unknown batch
            p.encode(p.Ack(os.urandom(16), CID, 0, ((0, 1),))),  # ack for another producer
            p.encode(p.Nack((424242,))),  # nack for an unknown batch
            p.encode(p.Claimed(77, pid)),  # the answer to a round it never opened
        ]
        for frame in frames:
            await fake.send_multipart([rid, frame])
        await async_wait_for(lambda: producer.stats.bad_frames + producer.stats.stale_acks
                             == len(frames), 10, f"garbage counted {producer.stats}")
        assert producer.stats.stale_acks == 3
        # Whatever the fake swallows is resent through the real intermediary once it dies.
        for i in range(2000):
            await producer.send(i)
        fake.close()
        await asyncio.wait_for(producer.flush(), 20)
        await async_wait_for(lambda: len(got) == 2000, 10, "every message")
    assert sorted(m.payload for m in got) == list(range(2000))
    assert producer.stats.intermediaries_lost == 1
