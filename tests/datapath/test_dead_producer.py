"""A producer the intermediary declared dead is a stranger until it says HELLO again.

After a partition, a producer's abandoned connection still delivers, once the network heals,
what the producer had sent into it; and the intermediary still holds that producer's batches.
The producer resent all of it elsewhere, so none of it may reach a consumer, unless the producer
was only frozen and says HELLO AGAIN on the same connection. Raw sockets play the peers.
"""
from __future__ import annotations

import os

import pytest
import zmq
import zmq.asyncio

from fabric import protocol as p
from fabric.timing import Timing
from tests.datapath.helpers import running_intermediary
from tests.waiting import async_wait_for

TIMING = Timing(heartbeat=0.05)


def peer(ctx, prefix: bytes, endpoint: str) -> tuple[zmq.asyncio.Socket, bytes]:
    pid = os.urandom(16)
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.ROUTING_ID, prefix + pid)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    return sock, pid


async def next_of(sock, kind: int) -> bytes:
    """The next frame of type ``kind`` on ``sock`` (others skipped), within 5 s."""
    async def of_kind():
        frame = await sock.recv()
        return frame if p.frame_type(frame) == kind else None
    return await async_wait_for(of_kind, 5, f"a frame of type {kind}", interval=0)


def batch(pid: bytes, seq: int) -> bytes:
    return p.batch_frame(pid, seq, 1, 0, p.encode_payloads([seq]))


@pytest.mark.parametrize("comes_back", ["again", "new connection"])
async def test_a_dead_producer_s_batches_wait_for_its_hello(comes_back):
    ctx = zmq.asyncio.Context.instance()
    channel = f"dead-producer-{os.getpid()}"
    async with running_intermediary(channel, timing=TIMING) as node:
        producer, pid = peer(ctx, b"P", node.endpoint)
        await producer.send(p.encode(p.Hello(p.ROLE_PRODUCER, pid, 0, channel)))
        await producer.send(batch(pid, 0))  # no consumer yet: it waits in the queue
        await async_wait_for(lambda: node.stats.batches_in == 1, 5, "the batch to be queued")
        # Silent for the heartbeat timeout: declared dead; its batch is parked.
        await async_wait_for(lambda: node.stats.peers_expired == 1, 5, "the producer declared dead")

        consumer, cid = peer(ctx, b"C", node.endpoint)
        await consumer.send(p.encode(p.Hello(p.ROLE_CONSUMER, cid, 100, channel)))
        await next_of(consumer, p.T_HEARTBEAT)  # its HELLO was handled

        # Whatever it sends now could come from a connection it abandoned: WHO, and a NACK.
        await producer.send(p.heartbeat_frame())
        await next_of(producer, p.T_WHO)
        await producer.send(batch(pid, 1))
        assert p.decode(await next_of(producer, p.T_NACK)).first_seqs == (1,)
        assert node.stats.batches_out == 0, "a parked batch was delivered"

        if comes_back == "again":  # it was frozen: it still wants batch 0 delivered
            await producer.send(p.encode(p.Hello(p.ROLE_PRODUCER, pid, 0, channel, again=True)))
            expected = 0
        else:  # a new connection: it resent batch 0 elsewhere
            producer.close()
            producer = ctx.socket(zmq.DEALER)
            producer.setsockopt(zmq.ROUTING_ID, b"P" + pid)
            producer.setsockopt(zmq.LINGER, 0)
            producer.connect(node.endpoint)
            await producer.send(p.encode(p.Hello(p.ROLE_PRODUCER, pid, 0, channel)))
            expected = 2
        await producer.send(batch(pid, 2))
        got = p.decode(await next_of(consumer, p.T_BATCH))
        assert got.first_seq == expected
        if comes_back == "again":
            assert p.decode(await next_of(consumer, p.T_BATCH)).first_seq == 2
        else:
            assert node.stats.dropped_stale_batches == 1
        producer.close()
        consumer.close()
