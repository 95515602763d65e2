"""An intermediary's metrics (``fabric_intermediary_*``), read when scraped.

``INTERMEDIARY_METRICS`` is the table (docs/operations.md, "Metrics"); ``intermediary_samples``
reads the :class:`~fabric.intermediary.peers.IntermediaryStats` counters and the gauges of what
it holds: messages queued, at consumers and parked, the queue's bytes against its bound,
consumers' credit, peers by role, claim rounds open. Every sample is labelled with the channel.

The intermediary's loop runs in another thread than the scrape: containers are copied before
they are walked (a change during the copy makes the collector read again).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from fabric import protocol as p
from fabric.intermediary.core import Intermediary
from fabric.intermediary.peers import IntermediaryStats
from nameservice.metrics import Metric, Sample, TableCollector

__all__ = ["INTERMEDIARY_METRICS", "IntermediaryCollector", "intermediary_samples"]

_C, _G = "counter", "gauge"
_CH = ("channel",)

# IntermediaryStats field -> (metric, help); peers_expired is split by role below.
_COUNTERS = {
    "batches_in": ("fabric_intermediary_batches_in_total", "Batches received from producers."),
    "batches_out": ("fabric_intermediary_batches_out_total", "Batches sent to consumers "
                                                             "(redeliveries included)."),
    "acks_forwarded": ("fabric_intermediary_acks_forwarded_total", "ACK frames routed back to "
                                                                   "producers."),
    "redelivered_batches": ("fabric_intermediary_redelivered_batches_total",
                            "Batches requeued, flagged, after their consumer was lost."),
    "nacked_batches": ("fabric_intermediary_nacked_batches_total",
                       "Batches refused with NACK (queue full, or producer unknown here)."),
    "dropped_stale_batches": ("fabric_intermediary_dropped_stale_batches_total",
                              "Queued batches dropped because their producer reconnected."),
    "bad_frames": ("fabric_intermediary_bad_frames_total", "Frames dropped because they did "
                                                           "not decode or broke the protocol."),
    "unknown_acks": ("fabric_intermediary_unknown_acks_total", "Acknowledgements of batches "
                                                               "not in flight here."),
    "unroutable": ("fabric_intermediary_unroutable_total", "Frames that could not be sent (peer "
                                                           "gone or its pipe full)."),
    "who_sent": ("fabric_intermediary_who_sent_total", "WHO frames sent to peers not known "
                                                       "here."),
    "claim_rounds": ("fabric_intermediary_claim_rounds_total", "Claim rounds (CLAIM from a "
                                                               "producer) served."),
    "unknown_claims": ("fabric_intermediary_unknown_claims_total", "CLAIMED answers for no open "
                                                                   "round."),
    "peers_left": ("fabric_intermediary_peers_left_total", "Peers that left cleanly (GOODBYE) "
                                                           "and were forgotten at once."),
    "rebinds": ("fabric_intermediary_rebinds_total", "Socket rebinds after a freeze."),
    "forbidden_frames": ("fabric_intermediary_forbidden_frames_total", "Frames dropped because "
                         "the sender's key may not produce or consume on the channel."),
    "control_requests": ("fabric_intermediary_control_requests_total", "Control-socket "
                                                                       "requests served."),
}
_UNLISTED = {"peers_expired", "consumers_expired"}
assert set(_COUNTERS) | _UNLISTED == {f.name for f in dataclasses.fields(IntermediaryStats)}, (
    "every IntermediaryStats counter is exported")

INTERMEDIARY_METRICS: tuple[Metric, ...] = (
    *(Metric(name, _C, text, _CH) for name, text in _COUNTERS.values()),
    Metric("fabric_intermediary_peers_expired_total", _C, "Peers declared dead after a silence.",
           ("channel", "role")),
    Metric("fabric_intermediary_messages", _G, "Messages held: queued for a consumer, sent to "
                                               "consumers and unacknowledged, parked.",
           ("channel", "state")),
    Metric("fabric_intermediary_queue_bytes", _G, "Bytes of the batches queued and parked.",
           _CH),
    Metric("fabric_intermediary_queue_max_bytes", _G, "The queue's bound (max_queue_bytes); a "
                                                      "batch that does not fit is refused.", _CH),
    Metric("fabric_intermediary_consumer_credit_messages", _G, "Messages the consumers are "
                                                               "ready to take (their credit).",
           _CH),
    Metric("fabric_intermediary_peers", _G, "Live peers by role; consumers include those "
                                            "leaving.", ("channel", "role")),
    Metric("fabric_intermediary_consumers_leaving", _G, "Consumers draining (sent DRAIN).", _CH),
    Metric("fabric_intermediary_claim_rounds_open", _G, "Claim rounds waiting for consumers' "
                                                        "answers.", _CH),
    Metric("fabric_intermediary_draining", _G, "1 while the intermediary drains.", _CH),
)


def intermediary_samples(node: Intermediary) -> Iterator[Sample]:
    """The current values of ``INTERMEDIARY_METRICS`` for ``node``."""
    ch = (node.channel,)
    stats = node.stats
    for field, (name, _) in _COUNTERS.items():
        yield name, ch, getattr(stats, field)
    consumers_expired = stats.consumers_expired
    yield ("fabric_intermediary_peers_expired_total", (node.channel, "consumer"),
           consumers_expired)
    yield ("fabric_intermediary_peers_expired_total", (node.channel, "producer"),
           stats.peers_expired - consumers_expired)
    peers = list(node._peers.values())  # noqa: SLF001 - read-only, copied at once
    consumers = [peer for peer in peers if peer.role == p.ROLE_CONSUMER]
    producers = sum(peer.alive for peer in peers if peer.role == p.ROLE_PRODUCER)
    at_consumers = sum(entry[1] - entry[2] for c in consumers
                       for entry in list(c.inflight.values()))
    queue = node._queue  # noqa: SLF001
    yield "fabric_intermediary_messages", (node.channel, "queued"), queue.messages()
    yield "fabric_intermediary_messages", (node.channel, "at_consumers"), at_consumers
    yield "fabric_intermediary_messages", (node.channel, "parked"), queue.parked_messages()
    yield "fabric_intermediary_queue_bytes", ch, queue.bytes
    yield "fabric_intermediary_queue_max_bytes", ch, node.max_queue_bytes
    yield ("fabric_intermediary_consumer_credit_messages", ch,
           sum(max(0, c.credit) for c in consumers if not c.leaving))
    yield "fabric_intermediary_peers", (node.channel, "producer"), producers
    yield "fabric_intermediary_peers", (node.channel, "consumer"), len(consumers)
    yield "fabric_intermediary_consumers_leaving", ch, sum(c.leaving for c in consumers)
    yield "fabric_intermediary_claim_rounds_open", ch, len(node._rounds)  # noqa: SLF001
    yield "fabric_intermediary_draining", ch, 1 if node.draining else 0


class IntermediaryCollector(TableCollector):
    """The Prometheus collector of one intermediary."""

    def __init__(self, node: Intermediary) -> None:
        super().__init__(INTERMEDIARY_METRICS, lambda: intermediary_samples(node))
