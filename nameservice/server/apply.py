"""The applier: committed entries into the state machine, and everyone told of the outcome.

For each committed entry not applied yet, in index order: if this node proposed it (the
``WriteBatcher`` claims it) the decoded batch is applied and its writers answered with their
results; otherwise the entry's bytes are applied (decoded by the machine). Leases granted
while this node leads get their deadline on the ``LeaseClock``; the events go to the
``WatchHub``. Then the reads waiting for the state machine are released (``ReadService``).

``restore`` replaces the state with a snapshot's: every watch is cancelled and every proposed
write fails, since the entries in between were never applied here.

The applier owns no state of its own: it is the one place where an applied entry meets the
parts that wait for it.
"""
from __future__ import annotations

import time

from nameservice.kv import KvStateMachine, LeaseGrantResult
from nameservice.server.leases import LeaseClock
from nameservice.server.reads import ReadService
from nameservice.server.watches import WatchHub
from nameservice.server.writes import WriteBatcher

__all__ = ["Applier"]


class Applier:
    """Applies committed entries for one node (see module docstring)."""

    def __init__(self, machine: KvStateMachine, *, writes: WriteBatcher, reads: ReadService,
                 leases: LeaseClock, watches: WatchHub) -> None:
        self._machine = machine
        self._writes = writes
        self._reads = reads
        self._leases = leases
        self._watches = watches

    def apply(self, entries, read_states=()) -> None:
        """Apply committed ``entries`` (those applied already are skipped), file the confirmed
        ``read_states``, serve the reads released."""
        self._apply_entries(entries)
        if read_states:
            self._reads.on_read_states(read_states)
        self._reads.release()

    def restore(self, data: bytes) -> None:
        """Replace the state with a snapshot's (``kv.DecodeError`` if it is damaged)."""
        self._machine.restore(data)
        self._watches.on_restore()
        self._writes.fail_all()

    def _apply_entries(self, entries) -> None:
        machine, writes, leases = self._machine, self._writes, self._leases
        on_events = self._watches.on_events
        for entry in entries:
            index = entry.index
            if index <= machine.applied_index:
                continue
            mine = writes.claim(index, entry.data)
            if mine is not None:
                batch, waiters = mine
                applied = machine.apply(index, batch)
                if leases.active:
                    self._note_grants(applied.results)
                writes.answer(waiters, applied.results)
            else:
                applied = machine.apply_entry(index, entry.data)
                if leases.active:
                    self._note_grants(applied.results)
            on_events(applied.events)

    def _note_grants(self, results) -> None:
        now = time.monotonic()
        for result in results:
            if type(result) is LeaseGrantResult:
                self._leases.granted(result.id, result.ttl_ms, now)
