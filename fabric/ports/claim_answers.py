"""A consumer port's answers to claim rounds: which CLAIMs wait, and when each is answered.

A producer that lost an intermediary asks, through every surviving intermediary, what its
consumers hold of what came through the lost one (CLAIM). A consumer answers a CLAIM only once
it has itself seen that intermediary go — so every batch that came through it has been read —
or once a heartbeat timeout has passed (it may still be up for this consumer). The answer, on
the connection the question came through, is the claims (ACK with HOLD: the batches it holds
and how much of each it handled) followed by CLAIMED. A question whose connection is gone is
dropped: that intermediary no longer waits for it.

docs/protocol.md (frames CLAIM and CLAIMED) and docs/datapath.md tell the whole round.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fabric import protocol as p
from fabric.endpoints import tcp_endpoint
from fabric.ports.links import Link

MAX_PENDING_CLAIMS = 10_000
"""CLAIMs waiting for the consumer's own verdict on their intermediary; one more is answered at
once with what is known now."""
HOLD_ENTRIES = 4096
"""Claims per ACK frame."""

HeldThrough = Callable[[bytes, str], list[tuple[int, int]]]
"""``(producer id, intermediary endpoint) -> [(first_seq, handled), ...]``: what the consumer
holds of that producer's batches received through that intermediary."""


@dataclass(slots=True)
class _PendingClaim:
    """A CLAIM received through ``via``, waiting for the consumer's own verdict on ``lost``."""

    claim: p.Claim
    via: Link
    via_gen: int
    lost: Link | None
    lost_gen: int
    deadline: float


class ClaimAnswers:
    """The CLAIMs a consumer has not answered yet.

    ``find`` looks up the consumer's link to an endpoint; ``held_through`` says what the
    consumer holds that came through an endpoint; ``timeout`` is how long a CLAIM waits for the
    consumer to see the lost intermediary go itself.
    """

    def __init__(self, consumer_id: bytes, timeout: float, find: Callable[[str], Link | None],
                 held_through: HeldThrough) -> None:
        self._consumer_id = consumer_id
        self._timeout = timeout
        self._find = find
        self._held_through = held_through
        self._waiting: list[_PendingClaim] = []

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, claim: p.Claim, via: Link, now: float) -> bool:
        """Take a CLAIM that came through ``via``; False if it names an intermediary this
        consumer does not use (it is answered all the same: nothing is held through it)."""
        lost = self._find(claim.lost)
        deadline = now + self._timeout if len(self._waiting) < MAX_PENDING_CLAIMS else 0.0
        self._waiting.append(_PendingClaim(claim, via, via.gen, lost, lost.gen if lost else 0,
                                           deadline))
        return lost is not None

    def answer_now(self, via: Link) -> None:
        """Answer the CLAIMs that came through ``via`` at the next :meth:`answer`, settled or
        not (``via`` is being let go of, and its round must still end)."""
        for pending in self._waiting:
            if pending.via is via:
                pending.deadline = 0.0

    def answer(self, now: float) -> int:
        """Answer each CLAIM whose intermediary the consumer has seen go itself (so every batch
        that came through it has been read), or whose wait is over; the number answered."""
        waiting, answered = [], 0
        for pending in self._waiting:
            via, lost = pending.via, pending.lost
            if via.gen != pending.via_gen or not via.up:
                continue  # the question's connection is gone: that intermediary stops waiting
            # Settled: gone, or back on a new connection (the question came through it).
            settled = (lost is None or lost is via or lost.gen != pending.lost_gen
                       or not lost.up)
            if (settled or now >= pending.deadline) and self._send_answer(pending):
                answered += 1
            else:
                waiting.append(pending)
        self._waiting = waiting
        return answered

    def _send_answer(self, pending: _PendingClaim) -> bool:
        """Claims (ACK with HOLD) for the producer's batches that came through the lost
        intermediary, then CLAIMED, on the question's connection; False if it could not send."""
        claim, via = pending.claim, pending.via
        entries = self._held_through(claim.producer_id, tcp_endpoint(claim.lost))
        for start in range(0, len(entries), HOLD_ENTRIES):
            frame = p.encode(p.Ack(claim.producer_id, self._consumer_id, 0,
                                   tuple(entries[start:start + HOLD_ENTRIES]), hold=True))
            if not via.send(frame):
                return False
        return via.send(p.encode(p.Claimed(claim.round, claim.producer_id)))
