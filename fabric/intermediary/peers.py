"""What an intermediary keeps per connected peer, its counters, a summary of its peers for its
status, and what a drain that ran out of time left behind (pure: computed from the peers and
the queue)."""
from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from fabric import protocol as p
from fabric.drain import Leftover, group_leftovers
from fabric.intermediary.batchqueue import BatchQueue

log = logging.getLogger(__name__)

PRODUCER_PREFIX = b"P"
"""The first byte of a producer's routing id (then its peer id)."""
CONSUMER_PREFIX = b"C"
"""The first byte of a consumer's routing id."""


@dataclass(slots=True)
class Peer:
    """What the intermediary knows of one connected producer or consumer (by ROUTER id)."""

    role: int
    rid: bytes
    last_heard: float
    credit: int = 0
    alive: bool = True
    inflight: dict[tuple[bytes, int], list] = field(default_factory=dict)
    drain_pending: bool = False  # producer: told we drain, has not answered yet
    leaving: bool = False  # consumer: sent DRAIN, gets no new batches
    drains_owed: int = 0  # consumer: DRAIN answers due once its in-flight batches are acked


@dataclass(slots=True)
class IntermediaryStats:
    """Counters an operator (and the tests) can read."""

    batches_in: int = 0
    batches_out: int = 0
    acks_forwarded: int = 0
    redelivered_batches: int = 0
    nacked_batches: int = 0
    dropped_stale_batches: int = 0
    bad_frames: int = 0
    unknown_acks: int = 0
    unroutable: int = 0
    peers_expired: int = 0
    consumers_expired: int = 0  # of peers_expired
    peers_left: int = 0  # said GOODBYE: forgotten at once, not expired
    who_sent: int = 0
    claim_rounds: int = 0
    unknown_claims: int = 0  # CLAIMED for a round that is not open, or from a consumer not asked
    rebinds: int = 0
    control_requests: int = 0
    forbidden_frames: int = 0  # from a key without the right to produce or consume here


def peers_summary(peers: Iterable[Peer], queue: BatchQueue) -> dict:
    """The peers and in-flight part of an intermediary's status (JSON-able)."""
    peers = list(peers)
    consumers = [peer for peer in peers if peer.role == p.ROLE_CONSUMER]
    return {
        "producers": sum(peer.alive for peer in peers if peer.role == p.ROLE_PRODUCER),
        "consumers": len(consumers),
        "consumers_leaving": sum(c.leaving for c in consumers),
        "in_flight": {"queued_messages": queue.messages(), "queued_bytes": queue.bytes,
                      "parked_messages": queue.parked_messages(),
                      "at_consumers": sum(e[1] - e[2] for c in consumers
                                          for e in c.inflight.values())},
    }


def drain_leftovers(endpoint: str, queue: BatchQueue, peers: Iterable[Peer]
                    ) -> tuple[Leftover, ...]:
    """What the intermediary at ``endpoint`` still holds: batches queued for a consumer and
    batches at consumers not yet acknowledged, grouped by producer, place and fate."""
    peers = list(peers)
    resend = "the producer resends them through the other intermediaries"
    claim = ("the consumer claims them through another intermediary and acknowledges them "
             "when handled; unclaimed ones the producer resends")
    here = f"in intermediary {endpoint}"
    batches = [(pid.hex(), f"queued for a consumer {here}", resend, count)
               for _, pid, _, _, count in queue]
    batches += [(pid.hex(), f"unacknowledged at consumer {peer.rid[1:].hex()[:12]} {here}",
                 claim, count - acked)
                for peer in peers
                for (pid, _), (_, count, acked) in peer.inflight.items()]
    silent = [peer.rid[1:].hex()[:12] for peer in peers
              if peer.role == p.ROLE_PRODUCER and peer.alive and peer.drain_pending]
    if silent:
        log.warning("producers that did not answer DRAIN: %s", ", ".join(silent))
    return group_leftovers(batches)
