"""A consumer that comes back on a new connection gets back what was in flight to it, and no
other consumer does.

libzmq hands a routing id over to a peer's new connection (``ROUTER_HANDOVER``) as soon as it
attaches it, before the intermediary reads the HELLO that comes first on it; a batch forwarded
in between reaches the consumer on its new connection, although the intermediary still counts
it as in flight on the old one. After a partition healed, such a batch was handled by its
consumer and then, requeued when its HELLO was read, by the other one (1 run in about 20 of
``test_partition.py``). Here the parts are driven directly: a real intermediary, and DEALER
sockets speaking the protocol for a producer and two consumers.
"""
from __future__ import annotations

import asyncio
import os

import zmq
import zmq.asyncio

from fabric import protocol as p
from fabric.timing import Timing
from tests.datapath.helpers import dealer, next_frame, running_intermediary
from tests.waiting import async_wait_for

CHANNEL = "handover"
# Nobody is declared dead while the test holds a connection silent on purpose.
PATIENT = Timing(heartbeat=0.1, misses=100, consumer_timeout=60)


async def first_batch(sockets: dict[str, zmq.asyncio.Socket]) -> tuple[str, p.Batch]:
    """Which of ``sockets`` receives a BATCH first, and the batch."""
    async def one(name: str, sock: zmq.asyncio.Socket) -> tuple[str, p.Batch]:
        return name, await next_frame(sock, p.T_BATCH)
    tasks = [asyncio.ensure_future(one(name, sock)) for name, sock in sockets.items()]
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.wait(tasks)
    return next(iter(done)).result()


def hello(cid: bytes, credit: int) -> bytes:
    return p.encode(p.Hello(p.ROLE_CONSUMER, cid, credit, CHANNEL))


async def test_a_batch_sent_to_a_consumers_new_connection_before_its_hello_goes_to_nobody_else():
    pid, cid, other_id = os.urandom(16), os.urandom(16), os.urandom(16)
    sockets: list[zmq.asyncio.Socket] = []
    async with running_intermediary(CHANNEL, timing=PATIENT) as node:
        try:
            producer = dealer(b"P" + pid, node.endpoint)
            old = dealer(b"C" + cid, node.endpoint)
            other = dealer(b"C" + other_id, node.endpoint)
            sockets += [producer, old, other]
            await producer.send(p.encode(p.Hello(p.ROLE_PRODUCER, pid, 0, CHANNEL)))
            await old.send(hello(cid, 300))  # the most credit: the batch will be routed to it
            await other.send(hello(other_id, 200))
            await async_wait_for(lambda: node.status()["consumers"] == 2
                                 and node.status()["producers"] == 1, 5, "all three known")

            # The consumer gave up on its connection and opens a new one; the intermediary
            # cannot tell (after a partition, the old one is silently cut). The new connection
            # has taken over the routing id once the intermediary's heartbeat comes through
            # it: its HELLO is not sent yet.
            new = dealer(b"C" + cid, node.endpoint)
            sockets.append(new)
            await next_frame(new, p.T_HEARTBEAT)

            batch = p.Batch(pid, 0, 1, p.encode_payloads(["once"]))
            await producer.send(p.encode(batch))
            got = await next_frame(new, p.T_BATCH)
            assert (got.first_seq, got.redelivered) == (0, False)  # handled here, as it is new

            # Now its HELLO: less credit than the other consumer has left.
            await new.send(hello(cid, 100))
            where, copy = await first_batch({"itself": new, "the other consumer": other})
            # Back to it, which recognises its copy and drops it; the other could not.
            assert where == "itself", "the batch went to the other consumer too: handled twice"
            assert copy.first_seq == 0

            # A barrier on the other consumer's connection: the intermediary forwards this
            # CLAIM to it after everything the HELLO made it send. No batch came before it.
            await producer.send(p.encode(p.Claim(1, pid, "tcp://127.0.0.1:9")))
            first = await next_frame(other, p.T_BATCH, p.T_CLAIM)
            assert isinstance(first, p.Claim), "the other consumer got the batch too: handled twice"
        finally:
            for sock in sockets:
                sock.close()


async def test_what_was_in_flight_to_a_reconnecting_consumer_is_sent_to_it_again():
    # The plain case (a connection that broke while both ends live): the batch the old
    # connection lost goes to the consumer itself, on its new connection, not to another one.
    pid, cid, other_id = os.urandom(16), os.urandom(16), os.urandom(16)
    sockets: list[zmq.asyncio.Socket] = []
    async with running_intermediary(CHANNEL, timing=PATIENT) as node:
        try:
            producer = dealer(b"P" + pid, node.endpoint)
            old = dealer(b"C" + cid, node.endpoint)
            sockets += [producer, old]
            await producer.send(p.encode(p.Hello(p.ROLE_PRODUCER, pid, 0, CHANNEL)))
            await old.send(hello(cid, 100))
            await async_wait_for(lambda: node.status()["consumers"] == 1
                                 and node.status()["producers"] == 1, 5, "both known")
            await producer.send(p.encode(p.Batch(pid, 0, 3, p.encode_payloads([1, 2, 3]))))
            await next_frame(old, p.T_BATCH)
            # Two of its three messages acknowledged, then the connection breaks.
            await old.send(p.encode(p.Ack(pid, cid, 2, ((0, 2),))))
            await async_wait_for(lambda: node.status()["in_flight"]["at_consumers"] == 1, 5,
                                 "the acknowledgement")
            other = dealer(b"C" + other_id, node.endpoint)
            sockets.append(other)
            await other.send(hello(other_id, 1000))
            await async_wait_for(lambda: node.status()["consumers"] == 2, 5, "the other one")
            old.close()
            new = dealer(b"C" + cid, node.endpoint)
            sockets.append(new)
            await new.send(hello(cid, 100))
            where, again = await first_batch({"itself": new, "the other consumer": other})
            assert where == "itself", "sent to another consumer: it may have been handled"
            assert (again.first_seq, again.skip) == (0, 2)  # the acknowledged part is skipped
            await producer.send(p.encode(p.Claim(1, pid, "tcp://127.0.0.1:9")))
            assert isinstance(await next_frame(other, p.T_BATCH, p.T_CLAIM), p.Claim)
        finally:
            for sock in sockets:
                sock.close()
