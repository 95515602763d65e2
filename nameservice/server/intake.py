"""Client request intake: frames from the ROUTER are decoded, peer messages stepped into the
Raft core, client requests routed — writes collected into one batch and proposed as one log entry,
keepalives answered from the leader's lease clock, stale writes handed to the stale log, requests
parked while no leader is known.

A mixin of :class:`nameservice.server.node.Node`; the state it uses is created there.
"""
from __future__ import annotations

import logging
import time

import msgpack

from nameservice.errors import DecodeError
from nameservice.kv import Batch, CloseSession, LeaseExpire, OpenSession, Request, StaleBacklogFull
from nameservice.kv import DecodeError as KvDecodeError
from nameservice.kv import FORMAT_VERSION as KV_VERSION
from nameservice.kv.codec import proposal_from_wire
from nameservice.raft.errors import NotLeader, ProposalDropped
from nameservice.raft.types import NONE, Role
from nameservice import wire
from nameservice.server.reads import MAX_PENDING_READS

log = logging.getLogger(__name__)

MAX_ITEMS_PER_ENTRY = 4096
"""Client writes per log entry (a bigger batch becomes several entries)."""
MAX_ENTRY_BYTES = 1 << 20
"""Approximate bytes of client writes per log entry."""
MAX_PENDING_WRITES = 200_000
"""Writes proposed and not yet applied; beyond, new writes are answered BUSY."""
MAX_PARKED = 20_000
"""Requests held while no leader is known; beyond, answered UNAVAILABLE."""

_KV_PREFIX = bytes([KV_VERSION])
_pack = msgpack.Packer(use_bin_type=True, autoreset=True).pack
_CLIENT_COMMANDS = (Request, OpenSession, CloseSession)


class RequestIntake:
    """Decoding and routing of incoming frames; batching and proposing of client writes."""

    def _bad_frame(self, counter: str, identity: bytes, exc: Exception) -> None:
        self.counters[counter] += 1
        self._bad_logged += 1
        if self._bad_logged <= 10 or self._bad_logged % 1000 == 0:
            log.warning("dropped a bad frame from %r (%s; %d so far): %s", identity[:16],
                        counter, self._bad_logged, exc)

    def _handle_frames(self, batch: list) -> None:
        step = self.core.step
        for parts in batch:
            if len(parts) != 2:
                self._bad_frame("bad_client_frames", parts[0], DecodeError(
                    f"{len(parts) - 1} frames in one message, expected 1"))
                continue
            identity, data = parts
            is_peer = wire.frame_kind(data) == wire.PEER
            try:
                kind, body = wire.split_frame(
                    data, wire.MAX_PEER_FRAME if is_peer else wire.MAX_CLIENT_FRAME)
                if kind == wire.PEER:
                    messages = wire.decode_peer_batch(body)
                elif kind != wire.REQUEST:
                    raise DecodeError(f"a node does not accept frames of kind {kind}")
            except DecodeError as exc:
                self._bad_frame("bad_peer_frames" if is_peer else "bad_client_frames",
                                identity, exc)
                continue
            if kind == wire.PEER:
                for msg in messages:
                    step(msg)
            else:
                per_item = len(data) // max(1, len(body))
                for w in body:
                    self._handle_request(identity, w, per_item)

    def _handle_request(self, identity: bytes, w: list, size: int) -> None:
        try:
            rid, op = wire.check_request(w)
        except DecodeError as exc:
            self._bad_frame("bad_requests", identity, exc)
            return
        if op == wire.OP_WRITE:
            self._handle_write(identity, rid, w, size)
        elif op == wire.OP_STATUS:
            self._reply(identity, rid, wire.ST_OK, self.status())
        elif op == wire.OP_KEEPALIVE:
            self._keepalive(identity, rid, w)
        elif op == wire.OP_STALE_WRITE:
            self._stale_write(identity, rid, w)
        elif op >= wire.OP_WATCH:
            self._reply(identity, rid, *self.watches.handle(identity, w))
        else:
            try:
                key, limit, consistent = wire.read_args(w)
            except DecodeError as exc:
                self.counters["bad_requests"] += 1
                self._reply(identity, rid, wire.ST_BAD_REQUEST, str(exc))
                return
            self.counters["reads"] += 1
            if not consistent:
                self._reply(identity, rid, wire.ST_OK, self._stale_read_payload(op, key, limit))
            elif self.core.role is not Role.LEADER and self.core.leader == NONE:
                self._park(identity, w)
            elif self._pending_reads >= MAX_PENDING_READS:
                self._busy(identity, rid)
            else:
                self._reads.append((identity, rid, op, key, limit))
                self._pending_reads += 1

    def _leading_or_redirect(self, identity: bytes, rid: int, w: list) -> bool:
        """True on the leader; elsewhere park the request (no leader known) or redirect it."""
        core = self.core
        if core.role is Role.LEADER:
            return True
        if core.leader == NONE:
            self._park(identity, w)
        else:
            self._reply(identity, rid, wire.ST_NOT_LEADER, self._leader_address())
        return False

    def _handle_write(self, identity: bytes, rid: int, w: list, size: int) -> None:
        if not self._leading_or_redirect(identity, rid, w):
            return
        try:
            if len(w) != 3:
                raise DecodeError("WRITE is [rid, 1, command]")
            item = proposal_from_wire(w[2])
            if not isinstance(item, _CLIENT_COMMANDS) or (
                    type(item) is Request and type(item.command) is LeaseExpire):
                raise DecodeError(f"a client may not send {type(item).__name__} commands")
        except (DecodeError, KvDecodeError, TypeError, ValueError) as exc:
            self.counters["bad_requests"] += 1
            self._reply(identity, rid, wire.ST_BAD_REQUEST, str(exc))
            return
        if self._pending_writes >= MAX_PENDING_WRITES:
            self._busy(identity, rid)
            return
        self.counters["writes"] += 1
        self._pending_writes += 1
        self._wires.append(w[2])
        self._items.append(item)
        self._waiters.append((identity, rid))
        self._batch_bytes += size
        if len(self._wires) >= MAX_ITEMS_PER_ENTRY or self._batch_bytes >= MAX_ENTRY_BYTES:
            self._propose()

    def _keepalive(self, identity: bytes, rid: int, w: list) -> None:
        """Renew a lease from the leader's memory (no log entry); see server/leases.py."""
        if not self._leading_or_redirect(identity, rid, w):
            return
        try:
            lease_id = wire.keepalive_args(w)
        except DecodeError as exc:
            self.counters["bad_requests"] += 1
            self._reply(identity, rid, wire.ST_BAD_REQUEST, str(exc))
            return
        ttl_ms = self.machine.lease_ttl_ms(lease_id)
        if ttl_ms is None and self.machine.applied_index < self._term_start:
            self._busy(identity, rid)  # a new leader still applying its predecessors' log
            return
        reply = self.leases.keepalive(lease_id, ttl_ms, time.monotonic()) if ttl_ms else 0
        self._reply(identity, rid, wire.ST_OK, reply)

    def _stale_write(self, identity: bytes, rid: int, w: list) -> None:
        """Accept a quorum-less write; answered once it is on disk (server/stale.py)."""
        try:
            key, value = wire.stale_write_args(w)
            self.stale.accept(identity, rid, key, value, self.machine.get(key))
        except StaleBacklogFull as exc:
            self.stale.refused += 1
            self._reply(identity, rid, wire.ST_BAD_REQUEST, str(exc))
        except (DecodeError, TypeError, ValueError) as exc:
            self.counters["bad_requests"] += 1
            self._reply(identity, rid, wire.ST_BAD_REQUEST, str(exc))

    def _park(self, identity: bytes, w: list) -> None:
        if len(self._parked) >= MAX_PARKED:
            self._reply(identity, w[0], wire.ST_UNAVAILABLE, "no leader known; too many waiting")
            return
        self._parked.append((time.monotonic() + self._timeout_s, identity, w))

    def _busy(self, identity: bytes, rid: int) -> None:
        self.counters["busy"] += 1
        self._reply(identity, rid, wire.ST_BUSY, "too many requests pending; retry")

    def _propose(self) -> None:
        wires, items, waiters = self._wires, self._items, self._waiters
        self._wires, self._items, self._waiters, self._batch_bytes = [], [], [], 0
        data = _KV_PREFIX + _pack([17, wires])
        batch = Batch(tuple(items))
        try:
            index = self.core.propose(data)
        except NotLeader:
            self._fail_waiters(waiters, wire.ST_NOT_LEADER, self._leader_address())
            return
        except ProposalDropped as exc:
            self._fail_waiters(waiters, wire.ST_BUSY, str(exc))
            return
        self.counters["entries_proposed"] += 1
        self._proposed[index] = (data, batch, waiters)

    def _fail_waiters(self, waiters: list, status: int, payload) -> None:
        self._pending_writes -= len(waiters)
        for identity, rid in waiters:
            self._reply(identity, rid, status, payload)

    def _fail_all_proposed(self) -> None:
        proposed, self._proposed = self._proposed, {}
        for _, _, waiters in proposed.values():
            self._fail_waiters(waiters, wire.ST_NOT_LEADER, self._leader_address())

