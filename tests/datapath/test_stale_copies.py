"""A consumer drops a copy of a batch its producer has already declared acknowledged."""
from __future__ import annotations

import asyncio
import os

from fabric import protocol as p
from fabric.ports.input import InputPort
from tests.datapath.helpers import fake_intermediary, next_ack
from tests.waiting import async_wait_for


async def test_a_copy_of_a_batch_below_acked_below_is_acknowledged_and_not_delivered():
    # The window forgets batch 0 once the producer says everything below 5 is acknowledged; a
    # copy arriving later (from an intermediary that was cut off or frozen) must not be
    # handled again.
    fake, endpoint = fake_intermediary()
    pid = os.urandom(16)
    got = []
    try:
        async with InputPort("stale", [endpoint],
                             got.append) as consumer:
            rid, hello = await asyncio.wait_for(fake.recv_multipart(), 10)
            assert p.decode(hello).role == p.ROLE_CONSUMER
            first = p.batch_frame(pid, 0, 2, 0, p.encode_payloads(["a", "b"]))
            await fake.send_multipart([rid, first])
            assert (await next_ack(fake, rid)).entries == ((0, 2),)
            later = p.batch_frame(pid, 5, 1, 5, p.encode_payloads(["c"]))
            await fake.send_multipart([rid, later])
            assert (await next_ack(fake, rid)).entries == ((5, 1),)
            await fake.send_multipart([rid, p.mark_redelivered(first, 0)])  # the stale copy
            assert (await next_ack(fake, rid)).entries == ((0, 2),)  # acknowledged again...
            await async_wait_for(lambda: consumer.stats.stale_batches == 1, 5, "the copy counted")
    finally:
        fake.close()
    assert [m.payload for m in got] == ["a", "b", "c"]  # ...and not handled twice


async def test_a_batch_never_says_it_is_acknowledged_itself():
    # acked_below is the lowest unacknowledged sequence number *before* the batch counts: a
    # batch claiming to be below it would be dropped as stale by every consumer.
    from fabric.ports.output import OutputPort

    fake, endpoint = fake_intermediary()
    try:
        async with OutputPort("stale", [endpoint]) as producer:
            rid, _ = await asyncio.wait_for(fake.recv_multipart(), 10)
            await async_wait_for(lambda: producer.connected, 5, "the connection")
            async def batch():  # (heartbeats skipped)
                _, frame = await fake.recv_multipart()
                return p.decode(frame) if p.frame_type(frame) == p.T_BATCH else None
            batches = []
            for i in range(3):
                await producer.send(i)
                batches.append(await async_wait_for(batch, 10, f"batch {i}", interval=0))
                if i == 0:  # acknowledge the first: the next batch may say so
                    ack = p.Ack(producer.producer_id, os.urandom(16), 0, ((0, 1),))
                    await fake.send_multipart([rid, p.encode(ack)])
                    await async_wait_for(lambda: producer.unacked == 0, 5, "the ack")
            await producer.close()  # the fake acknowledges only the first: do not drain
    finally:
        fake.close()
    assert [(b.first_seq, b.acked_below) for b in batches] == [(0, 0), (1, 1), (2, 1)]
