"""Reads: consistent reads grouped into one ReadIndex request per loop step and served once the
state machine has applied up to the read index; stale reads answered at once from the applied
state (with this node's quorum-less writes laid over).

A mixin of :class:`nameservice.server.node.Node`; the state it uses is created there.
"""
from __future__ import annotations

import time

from nameservice.kv.codec import kv_to_wire
from nameservice import wire

MAX_PENDING_READS = 200_000
"""Consistent reads waiting for their read index; beyond, answered BUSY."""


class ReadService:
    """Consistent (ReadIndex) and stale reads."""

    def _start_read(self) -> None:
        reads, self._reads = self._reads, []
        self._read_seq += 1
        ctx = self._read_seq.to_bytes(8, "big")
        if self.core.read_index(ctx):
            self._read_groups[ctx] = (time.monotonic() + self._timeout_s, reads)
            return
        self._fail_reads(reads, wire.ST_BUSY, "read index dropped; retry")

    def _fail_reads(self, reads: list, status: int, payload) -> None:
        self._pending_reads -= len(reads)
        for identity, rid, _, _, _ in reads:
            self._reply(identity, rid, status, payload)

    def _serve_reads(self, reads: list) -> None:
        self._pending_reads -= len(reads)
        payload = self._read_payload
        for identity, rid, op, key, limit in reads:
            self._reply(identity, rid, wire.ST_OK, payload(op, key, limit))

    def _stale_read_payload(self, op: int, key: bytes, limit: int) -> list:
        """A stale read: the applied state with this node's quorum-less writes laid over."""
        if not len(self.stale.overlay):
            return self._read_payload(op, key, limit)
        return self.stale.read_payload(self.machine, op == wire.OP_GET, key, limit)

    def _read_payload(self, op: int, key: bytes, limit: int) -> list:
        machine = self.machine
        if op == wire.OP_GET:
            kv = machine.get(key)
            return [None if kv is None else kv_to_wire(kv), machine.revision]
        return [[kv_to_wire(kv) for kv in machine.range(key, limit)], machine.revision]

    def _release_reads(self) -> None:
        """Serve the read groups whose read index the state machine has applied."""
        waiting = self._reads_waiting
        applied = self.machine.applied_index
        while waiting and waiting[0][0] <= applied:
            self._serve_reads(waiting.popleft()[1])
