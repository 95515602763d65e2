"""Metrics of the ports of a process (``fabric_producer_*``, ``fabric_consumer_*``), read when
scraped.

``PORT_METRICS`` is the table (docs/operations.md, "Metrics"). A :class:`PortCollector` serves
the ports it is given (``add``, as a component opens them); a port it serves is measured from
then on: an
:class:`~fabric.ports.output.OutputPort` gets its ``histograms`` (batch sizes, acknowledgement
latency, claim rounds), kept per batch. Counters are the ports' ``stats``; gauges what they hold
(unacknowledged messages and bytes, messages received and not yet handled, credit owed).
Samples are labelled with the channel and the port's id (its producer or consumer id, as in
``status`` and drain reports).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator

from fabric.ports.input import InputPort, InputStats
from fabric.ports.output import OutputHistograms, OutputPort, OutputStats
from nameservice.metrics import Metric, Sample, TableCollector

__all__ = ["PORT_METRICS", "PortCollector", "port_samples"]

_C, _G, _H = "counter", "gauge", "histogram"
_L = ("channel", "port")

_PRODUCER_COUNTERS = {
    "messages_sent": "Messages sent (put in a batch).",
    "batches_sent": "Batches sent for the first time.",
    "batches_resent": "Batches sent again (an intermediary lost, or refused them).",
    "messages_acked": "Messages acknowledged by consumers.",
    "stale_acks": "Acknowledgements and answers for nothing held.",
    "bad_frames": "Frames dropped because they did not decode.",
    "intermediaries_lost": "Intermediaries declared lost (connection closed or silent).",
    "claim_rounds": "Claim rounds started after losing an intermediary.",
    "claim_rounds_timed_out": "Claim rounds over at their deadline, without every answer.",
}
_CONSUMER_COUNTERS = {
    "messages_delivered": "Messages handed to the handler.",
    "batches_received": "Batches received (copies not counted).",
    "duplicate_batches": "Copies of batches received before, dropped.",
    "stale_batches": "Copies of batches wholly acknowledged already (of duplicate_batches).",
    "redelivered_messages": "Messages delivered flagged redelivered.",
    "handler_errors": "Handler calls that raised.",
    "bad_frames": "Frames dropped because they did not decode.",
    "window_evictions": "Batches or producers forgotten past the duplicate-detection bounds.",
    "intermediaries_lost": "Intermediaries declared lost (connection closed or silent).",
    "claims_answered": "CLAIM questions answered.",
    "claims_unknown": "CLAIM questions about an intermediary this port does not use.",
}
assert set(_PRODUCER_COUNTERS) == {f.name for f in dataclasses.fields(OutputStats)}
assert set(_CONSUMER_COUNTERS) == {f.name for f in dataclasses.fields(InputStats)}

PORT_METRICS: tuple[Metric, ...] = (
    *(Metric(f"fabric_producer_{field}_total", _C, text, _L)
      for field, text in _PRODUCER_COUNTERS.items()),
    Metric("fabric_producer_unacked_messages", _G, "Messages sent or batched, not yet "
                                                   "acknowledged.", _L),
    Metric("fabric_producer_unacked_bytes", _G, "Payload bytes of the same (bounded by "
                                                "window_bytes).", _L),
    Metric("fabric_producer_window_messages", _G, "The window: unacknowledged messages at "
                                                  "most before send waits.", _L),
    Metric("fabric_producer_claim_rounds_open", _G, "Claim rounds waiting for answers.", _L),
    Metric("fabric_producer_intermediaries", _G, "Intermediaries in use.", _L),
    Metric("fabric_producer_intermediaries_connected", _G, "Intermediaries whose connection is "
                                                           "up.", _L),
    Metric("fabric_producer_batch_messages", _H, "Messages per batch sent.", _L),
    Metric("fabric_producer_ack_latency_seconds", _H, "From a batch leaving send to its last "
                                                      "message acknowledged (round trip, one "
                                                      "clock).", _L),
    Metric("fabric_producer_claim_round_duration_seconds", _H, "From the loss of an "
                                                               "intermediary to the end of its "
                                                               "claim round.", _L),
    *(Metric(f"fabric_consumer_{field}_total", _C, text, _L)
      for field, text in _CONSUMER_COUNTERS.items()),
    Metric("fabric_consumer_pending_messages", _G, "Messages received, not yet handed to the "
                                                   "handler.", _L),
    Metric("fabric_consumer_pending_batches", _G, "Batches received, not yet handed to the "
                                                  "handler.", _L),
    Metric("fabric_consumer_credit_owed_messages", _G, "Credit to give back to the "
                                                       "intermediaries (handled, not yet "
                                                       "acknowledged).", _L),
    Metric("fabric_consumer_prefetch_messages", _G, "Credit granted to each intermediary.", _L),
    Metric("fabric_consumer_intermediaries", _G, "Intermediaries in use.", _L),
    Metric("fabric_consumer_intermediaries_connected", _G, "Intermediaries whose connection is "
                                                           "up.", _L),
)

Port = OutputPort | InputPort


def port_samples(ports: Iterable[Port]) -> Iterator[Sample]:
    """The current values of ``PORT_METRICS`` for ``ports``."""
    for port in list(ports):
        if isinstance(port, OutputPort):
            yield from _producer(port)
        else:
            yield from _consumer(port)


def _producer(port: OutputPort) -> Iterator[Sample]:
    labels = (port.channel, port.producer_id.hex())
    stats = port.stats
    for field in _PRODUCER_COUNTERS:
        yield f"fabric_producer_{field}_total", labels, getattr(stats, field)
    yield "fabric_producer_unacked_messages", labels, port.unacked
    yield "fabric_producer_unacked_bytes", labels, port._held_bytes  # noqa: SLF001
    yield "fabric_producer_window_messages", labels, port.window
    yield "fabric_producer_claim_rounds_open", labels, len(port._rounds)  # noqa: SLF001
    yield "fabric_producer_intermediaries", labels, len(port.endpoints)
    yield "fabric_producer_intermediaries_connected", labels, len(port.connected)
    histograms = port.histograms
    if histograms is not None:
        yield "fabric_producer_batch_messages", labels, histograms.batch_messages
        yield "fabric_producer_ack_latency_seconds", labels, histograms.ack_latency
        yield "fabric_producer_claim_round_duration_seconds", labels, histograms.claim_round


def _consumer(port: InputPort) -> Iterator[Sample]:
    labels = (port.channel, port.consumer_id.hex())
    stats = port.stats
    for field in _CONSUMER_COUNTERS:
        yield f"fabric_consumer_{field}_total", labels, getattr(stats, field)
    queue = list(port._queue)  # noqa: SLF001 - read-only, copied at once
    yield ("fabric_consumer_pending_messages", labels,
           sum(state.count - state.handled for state, _ in queue))
    yield "fabric_consumer_pending_batches", labels, len(queue)
    links = port._links  # noqa: SLF001
    yield ("fabric_consumer_credit_owed_messages", labels,
           sum(max(0, link.owed) for link in links.all() + links.retiring()))
    yield "fabric_consumer_prefetch_messages", labels, port.prefetch
    yield "fabric_consumer_intermediaries", labels, len(port.endpoints)
    yield "fabric_consumer_intermediaries_connected", labels, len(port.connected)


class PortCollector(TableCollector):
    """The Prometheus collector of a process's ports: ``ports``, and those given to
    :meth:`add` later. An output port keeps its histograms from then on."""

    def __init__(self, ports: Iterable[Port] = ()) -> None:
        self._ports: list[Port] = []
        super().__init__(PORT_METRICS, lambda: port_samples(self._ports))
        for port in ports:
            self.add(port)

    def add(self, port: Port) -> Port:
        """Serve ``port`` from now on (an output port keeps its histograms); returns it."""
        if isinstance(port, OutputPort) and port.histograms is None:
            port.histograms = OutputHistograms()
        if all(port is not other for other in self._ports):
            self._ports.append(port)
        return port
