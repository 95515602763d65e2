"""A claimed batch's acknowledgement is not lost with the intermediary that carried it.

After an intermediary is lost, a consumer claims (ACK with HOLD, through a survivor) what it
received through it, and acknowledges each such batch later, when handled, with a plain ACK
through any live intermediary. If that intermediary is lost too before it forwards the ACK,
the consumer must acknowledge the batch again through another one: the producer's claim rounds
do not cover it (it is claimed, not in flight anywhere), so without that the producer would hold
it until the consumer dies.
"""
from __future__ import annotations

import asyncio
import contextlib

from fabric import protocol as p
from fabric.ports.input import InputPort
from fabric.ports.output import OutputPort
from tests.datapath.helpers import fake_intermediary, running_intermediary
from tests.waiting import async_wait_for


class Swallower:
    """A ROUTER that keeps every port connected to it alive (heartbeats) and forwards nothing:
    whatever is sent through it is lost. ``swallowed`` lists the ACKs it received."""

    def __init__(self) -> None:
        self.sock, self.endpoint = fake_intermediary()
        self.swallowed: list[p.Ack] = []
        self._peers: set[bytes] = set()
        self._task = asyncio.ensure_future(self._serve())

    async def _serve(self) -> None:
        while True:
            try:
                rid, frame = await asyncio.wait_for(self.sock.recv_multipart(), 0.05)
                self._peers.add(rid)
                if p.frame_type(frame) == p.T_ACK:
                    ack = p.decode(frame)
                    assert isinstance(ack, p.Ack)
                    self.swallowed.append(ack)
            except asyncio.TimeoutError:
                pass
            for rid in self._peers:
                await self.sock.send_multipart([rid, p.heartbeat_frame()])

    async def close(self) -> None:
        """Die: the ports see the connection close."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.sock.close(linger=0)


async def test_the_ack_of_a_claimed_batch_lost_with_its_intermediary_is_sent_again():
    held = []
    swallower = Swallower()
    try:
        async with running_intermediary("reack") as a, running_intermediary("reack") as b:
            # The consumer's links, in this order: a, then the swallower, then b.
            async with InputPort("reack", [a.endpoint, swallower.endpoint, b.endpoint],
                                 held.append, auto_ack=False) as consumer, \
                    OutputPort("reack", [a.endpoint]) as producer:
                await async_wait_for(lambda: len(consumer.connected) == 3, 10,
                                     "the consumer's links")
                for i in range(5):
                    await producer.send(i)
                await async_wait_for(lambda: len(held) == 5, 10, "delivery through a")
                producer.add_endpoint(b.endpoint)
                await async_wait_for(lambda: len(producer.connected) == 2, 10, "the producer on b")
                a.stop()  # a dies: the consumer claims the batch it received through it
                # The producer's claim round (through b) ends with the batch claimed by the
                # consumer: nothing is resent.
                await async_wait_for(lambda: producer.stats.claim_rounds == 1
                                 and not producer._rounds, 10, "the claim round")  # noqa: SLF001
                assert producer.stats.batches_resent == 0
                for msg in held:
                    msg.ack()  # handled: a plain ACK through the first live link, the swallower
                await async_wait_for(lambda: any(not ack.hold and ack.entries
                                             for ack in swallower.swallowed), 5,
                                 "the acknowledgement swallowed")
                assert producer.unacked == 5
                # The swallower is lost too: the consumer acknowledges again, through b.
                await swallower.close()
                await asyncio.wait_for(producer.flush(), 5)
                assert producer.stats.batches_resent == 0
    finally:
        await swallower.close()
    assert sorted(m.payload for m in held) == list(range(5))
