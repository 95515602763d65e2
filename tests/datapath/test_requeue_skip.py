"""An intermediary that requeues a batch never lowers its ``skip``.

A batch resent flagged REDELIVERED carries ``skip``: its first messages were already handled and
must not be delivered again. If the consumer the intermediary sent it to goes (dies, or comes
back on a new connection) before acknowledging any of it, the intermediary requeues it with
``skip`` = what that consumer acknowledged — which must not fall below the ``skip`` the batch
already had.
"""
from __future__ import annotations

import os

from fabric import protocol as p
from tests.datapath.helpers import dealer, next_frame, running_intermediary
from tests.waiting import async_wait_for


async def test_a_batch_requeued_before_any_acknowledgement_keeps_its_skip():
    pid, cid = os.urandom(16), os.urandom(16)
    async with running_intermediary("skip") as node:
        producer = dealer(b"P" + pid, node.endpoint)
        first = dealer(b"C" + cid, node.endpoint)
        second = None
        try:
            await producer.send(p.encode(p.Hello(p.ROLE_PRODUCER, pid, 0, "skip")))
            await first.send(p.encode(p.Hello(p.ROLE_CONSUMER, cid, 100, "skip")))
            await async_wait_for(lambda: node.status()["consumers"] == 1
                             and node.status()["producers"] == 1, 5, "both peers known")
            # Resent after its first consumer died having handled 2 of its 3 messages.
            resent = p.Batch(pid, 0, 3, p.encode_payloads([1, 2, 3]), skip=2, redelivered=True)
            await producer.send(p.encode(resent))
            assert (await next_frame(first, p.T_BATCH, timeout=5)).skip == 2
            # The consumer comes back on a new connection before acknowledging anything: what
            # was in flight on the old one is requeued, and sent to it again.
            first.close()
            second = dealer(b"C" + cid, node.endpoint)
            await second.send(p.encode(p.Hello(p.ROLE_CONSUMER, cid, 100, "skip")))
            again = await next_frame(second, p.T_BATCH, timeout=5)
            assert again.redelivered and again.first_seq == 0
            assert again.skip == 2  # the two handled messages are still not delivered
        finally:
            producer.close()
            first.close()
            if second is not None:
                second.close()
