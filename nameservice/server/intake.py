"""Request intake: the frames a node receives, decoded and routed.

``handle_frames`` takes the messages drained from the transport. Peer frames are decoded and
their Raft messages stepped into the core; snapshot-stream frames (SNAP) are decoded and handed
to ``on_stream`` (the node's ``SnapshotStreams``). Each client request is routed by its op:

* WRITE (on the leader): decoded with the key-value codec and handed to the ``WriteBatcher``;
* GET / RANGE: consistent ones to the ``ReadService`` (one ReadIndex per step), stale ones
  answered at once;
* KEEPALIVE (on the leader): answered from the leader's ``LeaseClock``, without a log entry;
* STALE_WRITE: recorded by ``StaleWrites`` (answered once on disk);
* WATCH / WATCH_CANCEL: served by the ``WatchHub``; STATUS: the status report.

A request that needs the leader reaching a follower is answered NOT_LEADER with the leader's
address; while no leader is known it is **parked** (at most ``max_parked``, until
``timeout_s``) and dispatched again when one appears (``release_parked``). Busy limits: the
batcher's and the read service's ``full``, answered BUSY.

Failure rules: bad frames and bad requests are counted (``counters``); every request that
carries a request id is answered, BAD_REQUEST if it is malformed (an unknown op, bad
arguments, a frame of more than ``wire.MAX_BATCH`` requests); what has no id is dropped. The
log line is rate-limited. The replies to one frame share a ``ReplyBudget`` (``reads.py``). A
connection may open ``MAX_SESSIONS_PER_CLIENT`` sessions per window (``quotas.py``); beyond,
BAD_REQUEST.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from typing import Callable

from nameservice import wire
from nameservice.errors import DecodeError
from nameservice.kv import (
    CloseSession,
    KvStateMachine,
    LeaseExpire,
    OpenSession,
    Request,
    StaleBacklogFull,
)
from nameservice.kv import DecodeError as KvDecodeError
from nameservice.kv.codec import proposal_from_wire
from nameservice.raft.core import RaftCore
from nameservice.raft.types import NONE, Role
from nameservice.server.guard import Guard
from nameservice.server.leases import LeaseClock
from nameservice.server.members import MembershipService
from nameservice.server.quotas import SessionQuota
from nameservice.server.reads import ReadService, ReplyBudget
from nameservice.server.seam import PEER_MARK, Reply
from nameservice.server.stale import StaleWrites
from nameservice.server.watches import WatchHub
from nameservice.server.writes import WriteBatcher

log = logging.getLogger(__name__)

__all__ = ["MAX_PARKED", "RequestIntake"]

MAX_PARKED = 20_000
"""Requests held while no leader is known; beyond, answered UNAVAILABLE."""

_CLIENT_COMMANDS = (Request, OpenSession, CloseSession)
_LIMITS = {wire.PEER: wire.MAX_PEER_FRAME, wire.SNAP: wire.MAX_SNAP_FRAME}


class RequestIntake:
    """Decoding and routing of incoming frames, and the requests parked while no leader is
    known (see module docstring).

    ``leader_address()`` is what a NOT_LEADER reply carries; ``status()`` the STATUS reply;
    ``term_start()`` the index of this leader's first entry (``LeaderTracker.term_start``);
    ``on_stream(messages)`` takes the snapshot-stream messages of a SNAP frame (None: such
    frames are refused as bad peer frames).
    """

    def __init__(self, core: RaftCore, machine: KvStateMachine, *, writes: WriteBatcher,
                 reads: ReadService, leases: LeaseClock, watches: WatchHub,
                 stale: StaleWrites, members: MembershipService, reply: Reply,
                 leader_address: Callable[[], str | None],
                 status: Callable[[], dict], term_start: Callable[[], int],
                 timeout_s: float, max_parked: int = MAX_PARKED,
                 on_stream: Callable[[list], None] | None = None) -> None:
        self._core = core
        self._machine = machine
        self._writes = writes
        self._reads = reads
        self._leases = leases
        self._watches = watches
        self._stale = stale
        self._members = members
        self._reply = reply
        self._leader_address = leader_address
        self._status = status
        self._term_start = term_start
        self._on_stream = on_stream
        self.timeout_s = timeout_s
        self.max_parked = max_parked
        # (deadline, identity, request, its frame's reply budget)
        self._parked: deque[tuple[float, bytes, list, ReplyBudget | None]] = deque()
        self._bad_logged = 0
        self.sessions = SessionQuota()
        self.counters = {"bad_peer_frames": 0, "bad_client_frames": 0, "bad_requests": 0,
                         "busy": 0, "writes": 0, "reads": 0}
        self.guard: Guard | None = None
        """The access checks of a secured node (None: insecure mode, no checks)."""

    @property
    def parked(self) -> int:
        """Requests waiting for a leader."""
        return len(self._parked)

    # ------------------------------------------------------------------ frames

    def handle_frames(self, batch: list) -> None:
        """Handle drained messages (each ``[identity, frame]``)."""
        step = self._core.step
        for parts in batch:
            if len(parts) != 2:
                self._bad_frame("bad_client_frames", parts[0], DecodeError(
                    f"{len(parts) - 1} frames in one message, expected 1"))
                continue
            identity, data = parts
            kind = wire.frame_kind(data)
            is_peer = kind == wire.PEER or kind == wire.SNAP
            try:
                kind, body = wire.split_frame(data, _LIMITS.get(kind, wire.MAX_CLIENT_FRAME))
                if kind == wire.PEER:
                    messages = wire.decode_peer_batch(body)
                elif kind == wire.SNAP and self._on_stream is not None:
                    messages = wire.decode_snap_batch(body)
                elif kind != wire.REQUEST:
                    raise DecodeError(f"a node does not accept frames of kind {kind}")
            except DecodeError as exc:
                self._bad_frame("bad_peer_frames" if is_peer else "bad_client_frames",
                                identity, exc)
                if type(exc) is wire.OversizedBatch and wire.frame_kind(data) == wire.REQUEST:
                    self._refuse_all(identity, exc.body, str(exc))
                continue
            if is_peer and self.guard is not None and not self.guard.peer(identity):
                continue
            if kind == wire.REQUEST and identity.startswith(PEER_MARK):
                self._bad_frame("bad_peer_frames", identity, DecodeError(
                    "a request on the peer port"))
                continue
            if kind == wire.PEER:
                for msg in messages:
                    step(msg)
            elif kind == wire.SNAP:
                assert self._on_stream is not None  # checked above
                self._on_stream(messages)
            else:
                per_item = len(data) // max(1, len(body))
                budget = ReplyBudget()  # shared by the replies to this frame
                for w in body:
                    self.handle_request(identity, w, per_item, budget)

    def _bad_frame(self, counter: str, identity: bytes, exc: Exception) -> None:
        self.counters[counter] += 1
        self._bad_logged += 1
        if self._bad_logged <= 10 or self._bad_logged % 1000 == 0:
            log.warning("dropped a bad frame from %r (%s; %d so far): %s", identity[:16],
                        counter, self._bad_logged, exc)

    def _refuse_all(self, identity: bytes, body: list, reason: str) -> None:
        """Answer BAD_REQUEST every request of a frame refused as a whole that has an id."""
        for w in body:
            rid = wire.request_id(w)
            if rid is not None:
                self._bad_request(identity, rid, reason)

    # ------------------------------------------------------------------ requests

    def handle_request(self, identity: bytes, w: list, size: int,
                       budget: ReplyBudget | None = None) -> None:
        """Route one client request ``w`` (about ``size`` bytes on the wire); ``budget``: the
        reply bytes its frame has left (a fresh one if not given)."""
        try:
            rid, op = wire.check_request(w)
        except DecodeError as exc:
            known = wire.request_id(w)
            if known is None:  # nothing to answer to
                self._bad_frame("bad_requests", identity, exc)
            else:
                self._bad_request(identity, known, exc)
            return
        if budget is None:
            budget = ReplyBudget()
        if self.guard is not None and op != wire.OP_WRITE:
            refused = self.guard.request(identity, op, w)
            if refused is not None:
                self._reply(identity, rid, wire.ST_FORBIDDEN, refused)
                return
        if op == wire.OP_WRITE:
            self._write(identity, rid, w, size)
        elif op == wire.OP_STATUS:
            self._reply(identity, rid, wire.ST_OK, self._status())
        elif op == wire.OP_KEEPALIVE:
            self._keepalive(identity, rid, w)
        elif op == wire.OP_STALE_WRITE:
            self._stale_write(identity, rid, w)
        elif op == wire.OP_MEMBERS:
            self._reply(identity, rid, wire.ST_OK, self._members.members())
        elif op == wire.OP_MEMBER_CHANGE:
            if self._leading_or_redirect(identity, rid, w):
                self._members.change(identity, rid, w)
        elif op >= wire.OP_WATCH:
            self._reply(identity, rid, *self._watches.handle(identity, w))
        else:
            self._read(identity, rid, op, w, budget)

    def _read(self, identity: bytes, rid: int, op: int, w: list, budget: ReplyBudget) -> None:
        try:
            key, limit, consistent = wire.read_args(w)
        except DecodeError as exc:
            self._bad_request(identity, rid, exc)
            return
        self.counters["reads"] += 1
        core = self._core
        if not consistent:
            self._reply(identity, rid, *self._reads.stale_answer(op, key, limit, budget))
        elif core.role is not Role.LEADER and core.leader == NONE:
            self._park(identity, w, budget)
        elif self._reads.full:
            self._busy(identity, rid)
        else:
            self._reads.add(identity, rid, op, key, limit, budget)

    def _write(self, identity: bytes, rid: int, w: list, size: int) -> None:
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
            self._bad_request(identity, rid, exc)
            return
        if self.guard is not None:
            refused = self.guard.write(identity, item)
            if refused is not None:
                self._reply(identity, rid, wire.ST_FORBIDDEN, refused)
                return
        if self._writes.full:
            self._busy(identity, rid)
            return
        if type(item) is OpenSession and not self.sessions.allow(identity, time.monotonic()):
            self._reply(identity, rid, wire.ST_BAD_REQUEST,
                        f"too many sessions for this client ({self.sessions.limit} opened in "
                        f"{self.sessions.window_s:g} s); retry later")
            return
        self.counters["writes"] += 1
        self._writes.add(identity, rid, w[2], item, size)

    def _keepalive(self, identity: bytes, rid: int, w: list) -> None:
        """Renew a lease from the leader's memory (no log entry); see server/leases.py."""
        if not self._leading_or_redirect(identity, rid, w):
            return
        try:
            lease_id = wire.keepalive_args(w)
        except DecodeError as exc:
            self._bad_request(identity, rid, exc)
            return
        machine = self._machine
        ttl_ms = machine.lease_ttl_ms(lease_id)
        if ttl_ms is None and machine.applied_index < self._term_start():
            self._busy(identity, rid)  # a new leader still applying its predecessors' log
            return
        reply = self._leases.keepalive(lease_id, ttl_ms, time.monotonic()) if ttl_ms else 0
        self._reply(identity, rid, wire.ST_OK, reply)

    def _stale_write(self, identity: bytes, rid: int, w: list) -> None:
        """Accept a quorum-less write; answered once it is on disk (server/stale.py)."""
        try:
            key, value = wire.stale_write_args(w)
            self._stale.accept(identity, rid, key, value, self._machine.get(key))
        except StaleBacklogFull as exc:  # counted by StaleWrites
            self._reply(identity, rid, wire.ST_BAD_REQUEST, str(exc))
        except (DecodeError, TypeError, ValueError) as exc:
            self._bad_request(identity, rid, exc)

    def _leading_or_redirect(self, identity: bytes, rid: int, w: list) -> bool:
        """True on the leader; elsewhere park the request (no leader known) or redirect it."""
        core = self._core
        if core.role is Role.LEADER:
            return True
        if core.leader == NONE:
            self._park(identity, w)
        else:
            self._reply(identity, rid, wire.ST_NOT_LEADER, self._leader_address())
        return False

    def _bad_request(self, identity: bytes, rid: int, exc: Exception | str) -> None:
        self.counters["bad_requests"] += 1
        self._reply(identity, rid, wire.ST_BAD_REQUEST, str(exc))

    def _busy(self, identity: bytes, rid: int) -> None:
        self.counters["busy"] += 1
        self._reply(identity, rid, wire.ST_BUSY, "too many requests pending; retry")

    # ------------------------------------------------------------------ parked requests

    def _park(self, identity: bytes, w: list, budget: ReplyBudget | None = None) -> None:
        if len(self._parked) >= self.max_parked:
            self._reply(identity, w[0], wire.ST_UNAVAILABLE, "no leader known; too many waiting")
            return
        self._parked.append((time.monotonic() + self.timeout_s, identity, w, budget))

    def release_parked(self) -> None:
        """A leader is known: dispatch the parked requests again, and propose the writes and
        start the reads they make at once."""
        if not self._parked:
            return
        parked, self._parked = self._parked, deque()
        for _, identity, w, budget in parked:
            self.handle_request(identity, w, 64, budget)
        self._writes.propose()
        self._reads.start()

    def expire(self, now: float) -> None:
        """Answer UNAVAILABLE the parked requests whose time ran out."""
        self.sessions.prune(now)
        parked = self._parked
        while parked and parked[0][0] <= now:
            _, identity, w, _ = parked.popleft()
            self._reply(identity, w[0], wire.ST_UNAVAILABLE, "no leader elected in time")
