"""An input port's acknowledgements on their way out: gathered per intermediary and producer,
sent as one ACK frame each (with the credit owed to that intermediary), and held while no
intermediary can take them.

``add`` records that the first ``handled`` messages of a batch are handled (a later record of
the same batch replaces the earlier one); ``flush`` sends everything gathered. An entry whose
intermediary is gone (or was never known: ``None``) goes through any live one, and
``carried_by(link, producer_id, entries)`` is told, so the port can send it again should that
one be lost too. With no intermediary up, entries wait in ``holds`` (merged per producer) and
``send_holds`` sends them, flagged HOLD, once one is: a claim that keeps the producer from
resending what this consumer has. ``flush`` also gives back credit alone (an ACK without
entries) to an intermediary owed at least half the port's prefetch.

Bounds: entries are one per batch received and not yet flushed (the port flushes every
``ACK_FLUSH_ENTRIES``); holds, one per batch held by this consumer (bounded by its credit).
"""
from __future__ import annotations

from collections.abc import Callable

from fabric import protocol as p
from fabric.ports.links import Link, LinkSet

__all__ = ["AckOutbox", "HOLDS_PER_FRAME"]

HOLDS_PER_FRAME = 4096


class AckOutbox:
    """Acknowledgements waiting to be sent (see module docstring)."""

    def __init__(self, consumer_id: bytes, links: LinkSet, prefetch: int,
                 carried_by: Callable[[Link, bytes, dict[int, int]], None]) -> None:
        self._consumer_id = consumer_id
        self._links = links
        self._credit_alone = prefetch // 2
        self._carried_by = carried_by
        # (link or None, producer_id) -> {first_seq: handled}; None = any live intermediary
        self._acks: dict[tuple[Link | None, bytes], dict[int, int]] = {}
        self.entries = 0
        """Batches with an acknowledgement gathered and not sent."""
        self.holds: dict[bytes, dict[int, int]] = {}
        """Per producer, ``{first_seq: handled}`` waiting for a live intermediary."""

    def __bool__(self) -> bool:
        """Whether anything waits to be sent (gathered or held)."""
        return bool(self._acks or self.holds)

    def add(self, link: Link | None, pid: bytes, seq: int, handled: int) -> None:
        """The first ``handled`` messages of batch ``seq`` of ``pid`` are handled; to go
        through ``link`` (None, or a link that is down: any live one)."""
        if link is not None and not link.up:
            link = None
        entries = self._acks.get((link, pid))
        if entries is None:
            entries = self._acks[(link, pid)] = {}
        if seq not in entries:
            self.entries += 1
        entries[seq] = handled

    def hold(self, pid: bytes, seq: int, handled: int) -> None:
        """Claim batch ``seq`` of ``pid`` (``handled`` of it handled) through any live
        intermediary, flagged HOLD: its own intermediary is lost."""
        self.holds.setdefault(pid, {})[seq] = handled

    def flush(self) -> None:
        """Send every gathered acknowledgement and the credit owed to each intermediary."""
        acks, self._acks, self.entries = self._acks, {}, 0
        cid = self._consumer_id
        for (link, pid), entries in acks.items():
            if link is None or not link.up:
                live = self._links.up()
                if not live:
                    # No intermediary: keep them (merged) until one comes up.
                    self.holds.setdefault(pid, {}).update(entries)
                    continue
                link = live[0]
                self._carried_by(link, pid, entries)
            credit, link.owed = link.owed, 0
            frame = p.encode(p.Ack(pid, cid, credit, tuple(entries.items())))
            if not link.send(frame):
                link.owed += credit
                self.holds.setdefault(pid, {}).update(entries)
        for link in self._links.up():
            if link.owed >= self._credit_alone:
                # Credit alone (no producer to acknowledge): an ACK frame without entries.
                credit, link.owed = link.owed, 0
                if not link.send(p.encode(p.Ack(bytes(p.ID_SIZE), cid, credit, ()))):
                    link.owed += credit

    def send_holds(self) -> None:
        """Send what is held, flagged HOLD, through the live intermediaries (each frame
        through the first that takes it); what none takes stays held."""
        if not self.holds:
            return
        live = self._links.up()
        if not live:
            return
        holds, self.holds = self.holds, {}
        cid = self._consumer_id
        for pid, entries in holds.items():
            items = list(entries.items())
            for start in range(0, len(items), HOLDS_PER_FRAME):
                chunk = tuple(items[start:start + HOLDS_PER_FRAME])
                frame = p.encode(p.Ack(pid, cid, 0, chunk, hold=True))
                if not any(link.send(frame) for link in live):
                    self.holds.setdefault(pid, {}).update(chunk)
