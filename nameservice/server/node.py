"""The node driver: Raft core + durable storage + key-value machine + sockets, on one event loop.

Theory of operation
-------------------
One asyncio loop runs everything; one worker thread runs ``storage.sync()`` (fsync). Each loop
iteration:

1. drains every frame waiting on the ROUTER (up to ``MAX_DRAIN``): Raft messages are stepped
   into the core; client requests are collected — writes into one pending batch, consistent
   reads into one pending read group, stale reads and status answered at once;
2. ``_after_input``: the batch of writes becomes ONE log entry (a kv ``Batch``) and the read
   group ONE ReadIndex request; early messages (a leader's AppendRequests, heartbeats, votes)
   are sent at once; if no sync is running, the next Ready is saved and its sync started in the
   worker thread, and the loop goes back to receiving;
3. when the sync completes (``_sync_done``), the Ready's messages are sent, its committed
   entries applied (replies go to the waiting clients), its read states served, the core
   advanced — and the next Ready, which meanwhile collected everything that arrived during the
   fsync, starts its own sync (group commit).

A tick timer feeds the core's logical clock. Replies are gathered per client and sent as one
frame per client per step. Nothing here awaits per request: the per-request work is a few
dictionary and list operations plus decoding and applying.

Failure rules: bad frames are counted and dropped (``counters``), with a rate-limited log line;
a write that reaches a follower is answered NOT_LEADER with the leader's address; while no
leader is known, requests are parked (bounded) and re-dispatched when one appears; a leader
that loses its role answers every pending write and read NOT_LEADER — the client retries on
the new leader within its session, so nothing is applied twice.

Layout: this module composes the node and runs its loop, clock and output; request intake is in
``intake.py``, reads in ``reads.py``, the Ready pipeline in ``pipeline.py``, the status report in
``status.py``.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

from nameservice.kv import Batch, KvConfig, KvStateMachine
from nameservice.raft.core import RaftCore
from nameservice.raft.errors import NotLeader, ProposalDropped
from nameservice.raft.types import NONE, Role
from nameservice import wire
from nameservice.server.config import NodeSettings
from nameservice.server.intake import RequestIntake
from nameservice.server.leases import LeaseClock
from nameservice.server.pipeline import _TIMER_SLACK_S, ReadyPipeline
from nameservice.server.reads import ReadService
from nameservice.server.stale import StaleReplayer, StaleWrites
from nameservice.server.status import status_report
from nameservice.server.transport import NodeTransport
from nameservice.server.watches import WatchHub
from nameservice.storage import DiskStorage

log = logging.getLogger(__name__)

MAX_DRAIN = 4096
"""Frames received per loop iteration before the batch is processed."""
MAX_TIMER_S = 0.05
"""Longest sleep of the tick timer (request deadlines are checked at least this often)."""


class Node(RequestIntake, ReadService, ReadyPipeline):
    """One name-service node. ``await run(stop)`` serves until ``stop`` is set."""

    def __init__(self, settings: NodeSettings, transport_factory=NodeTransport) -> None:
        self.settings = settings
        self.storage = DiskStorage(settings.data_dir, snapshot_threshold=settings.snapshot_threshold)
        hard_state, snapshot, entries = self.storage.initial_state()
        self.machine = KvStateMachine(KvConfig(min_lease_ttl_ms=settings.min_lease_ttl_ms,
                                               history_events=settings.history_events))
        if snapshot.meta.index:
            self.machine.restore(snapshot.data)
        # Watches leave a node that has known no leader for a few election timeouts.
        self.watches = WatchHub(self.machine, 4 * settings.election_timeout_ms[1] / 1000.0)
        self.core = RaftCore(settings.raft_config(), random.Random(), hard_state,
                             snapshot if snapshot.meta.index else None, entries)
        self.leases = LeaseClock()  # deadlines, while this node leads
        self._term_start = 0  # index of this leader's first entry
        self.stale = StaleWrites(settings.data_dir)
        self._replayer = StaleReplayer(self.stale, list(settings.cluster.values()),
                                       lambda: self.core.leader != NONE)
        self._transport_factory = transport_factory
        self.transport: NodeTransport | None = None
        self.counters = {
            "bad_peer_frames": 0, "bad_client_frames": 0, "bad_requests": 0, "busy": 0,
            "writes": 0, "reads": 0, "entries_proposed": 0, "readies": 0, "syncs": 0,
            "snapshots": 0, "snapshots_installed": 0,
        }
        self._tick_s = settings.tick() / 1000.0
        self._max_timer_ticks = max(1, round(MAX_TIMER_S / self._tick_s))
        self._timer = None
        self._timer_at = 0.0
        self._timeout_s = settings.election_timeout_ms[1] * 2 / 1000.0
        # Writes collected this iteration: wire arrays, decoded items, (identity, rid) waiters.
        self._wires: list = []
        self._items: list = []
        self._waiters: list = []
        self._batch_bytes = 0
        # Proposed entries not yet applied: index -> (data, Batch, waiters).
        self._proposed: dict[int, tuple[bytes, Batch, list]] = {}
        self._pending_writes = 0
        # Consistent reads: collected this iteration; in flight by ctx; waiting for apply.
        self._reads: list = []
        self._read_groups: dict[bytes, tuple[float, list]] = {}
        self._reads_waiting: deque[tuple[int, list]] = deque()
        self._pending_reads = 0
        self._read_seq = 0
        self._parked: deque[tuple[float, bytes, list]] = deque()
        self._drain_scheduled = False
        self._sync_mode = settings.sync_mode
        self._syncing = False
        self._compacting = False
        self._last_leader = NONE
        self._was_leader = False
        self._fatal: BaseException | None = None
        self._shut_down = False  # set once serving ends (after the hand-over of a stop)
        self._bad_logged = 0

    # ------------------------------------------------------------------ lifecycle

    async def run(self, stop: asyncio.Event, ctx=None, on_listening=None) -> None:
        """Serve until ``stop`` is set (or a storage failure, which is raised)."""
        import zmq.asyncio

        ctx = ctx or zmq.asyncio.Context()
        self._loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="ns-fsync")
        self.transport = self._transport_factory(ctx, self.settings.id, self.settings.cluster)
        self.watches.attach(self.transport)
        self._stop = stop
        if on_listening is not None:
            on_listening(self.settings.address)
        self._start = time.monotonic()
        self._ticks = 0
        self._timer = self._loop.call_later(self._tick_s, self._on_tick)
        self._timer_at = self._start + self._tick_s
        receiver = asyncio.create_task(self._receive_loop())
        replayer = asyncio.create_task(self._replayer.run())
        try:
            await stop.wait()
            if self._fatal is None:
                await self._hand_over()  # serves on meanwhile: stop is set, not _shut_down
        finally:
            self._shut_down = True
            receiver.cancel()
            replayer.cancel()
            self._timer.cancel()
            for task in (receiver, replayer):
                try:
                    await task
                except asyncio.CancelledError:
                    pass
            self._executor.shutdown(wait=True)
            self.transport.close()
            if self._fatal is None:
                self.storage.close()
        if self._fatal is not None:
            raise self._fatal

    async def _hand_over(self) -> None:
        """A leader that is stopping hands its leadership to the most caught-up voter first,
        so that writes move to the new leader at once instead of after an election timeout.
        Waits (at most two election timeouts) until another node leads; then the node stops
        either way."""
        core = self.core
        me = self.settings.id
        if core.role is not Role.LEADER or not core.peers:
            return
        deadline = time.monotonic() + self._timeout_s
        tried: set[int] = set()
        while time.monotonic() < deadline:
            if core.role is not Role.LEADER:
                if core.leader not in (NONE, me):
                    log.info("leadership handed to node %d", core.leader)
                    return
            elif core.transferee == NONE:  # not started yet, or the last attempt was abandoned
                candidates = [p for p in core.peers if p not in tried] or list(core.peers)
                target = max(candidates, key=lambda peer: core.progress[peer].match)
                tried.add(target)
                log.info("stopping: handing leadership to node %d", target)
                core.transfer_leadership(target)
                self._after_input()
            await asyncio.sleep(self._tick_s)
        log.warning("stopping without handing leadership over (no node took it in %.1f s)",
                    self._timeout_s)

    async def _receive_loop(self) -> None:
        transport = self.transport
        while True:
            first = await transport.receive()
            while self._drain(first):
                first = None
                await asyncio.sleep(0)  # more is waiting: let the callbacks run, then go on

    def _drain(self, first: list | None = None) -> bool:
        """Handle what is waiting on the ROUTER; True if more may be waiting."""
        self._drain_scheduled = False
        batch = self.transport.drain(MAX_DRAIN)
        if first is not None:
            batch.insert(0, first)
        if batch:
            self._handle_frames(batch)
            self._after_input()
        return len(batch) >= MAX_DRAIN

    def _die(self, exc: BaseException) -> None:
        log.error("node %d stopping: %s", self.settings.id, exc)
        self._fatal = exc
        self._stop.set()

    # ------------------------------------------------------------------ input

    def _check_leader(self) -> None:
        core = self.core
        leader = core.leader
        is_leader = core.role is Role.LEADER
        if is_leader and not self._was_leader:
            # Every lease starts afresh with its whole TTL: no keepalive is lost to the change.
            self._term_start = core.last_index
            self.leases.start(self.machine.leases(), time.monotonic())
        if self._was_leader and not is_leader:
            self.leases.stop()
            self._fail_all_proposed()
            for _, reads in self._read_groups.values():
                self._fail_reads(reads, wire.ST_NOT_LEADER, self._leader_address())
            self._read_groups.clear()
        self._was_leader = is_leader
        if leader != self._last_leader:
            log.info("term %d: leader is now %s (was %s)", core.term, leader or "unknown",
                     self._last_leader or "unknown")
            self._last_leader = leader
            if not is_leader and self._read_groups:
                # Reads forwarded to the old leader will not be answered: let clients retry.
                for _, reads in self._read_groups.values():
                    self._fail_reads(reads, wire.ST_NOT_LEADER, self._leader_address())
                self._read_groups.clear()
            if leader != NONE:
                self._replayer.leader_seen.set()
            if leader != NONE and self._parked:
                parked, self._parked = self._parked, deque()
                for _, identity, w in parked:
                    self._handle_request(identity, w, 64)
                if self._wires:
                    self._propose()
                if self._reads:
                    self._start_read()

    # ------------------------------------------------------------------ time

    def _on_tick(self) -> None:
        # Input first, then time: after a stall (a slow fsync on the loop thread, a busy
        # host) the leader's heartbeats may be waiting in the socket; ticking first would
        # start a needless election. Draining here is also the safety net for a missed edge
        # of ZeroMQ's descriptor (see NodeTransport.has_input).
        if self.transport.has_input():
            for _ in range(4):  # bounded: time must advance even under a flood
                if not self._drain():
                    break
        now = time.monotonic()
        due = int((now - self._start) / self._tick_s) - self._ticks
        if due > 0:
            self._ticks += due
            self.core.tick(due)
        self._expire(now)
        self.watches.tick(now, self.core.leader != NONE)
        if self.leases.active:
            self._expire_leases(now)
        self._after_input()
        self._schedule_tick(now)

    def _schedule_tick(self, now: float) -> None:
        """Wake at the next tick that does something (the core says when), at least every
        ``MAX_TIMER_S`` for the request deadlines; ``_after_input`` brings it forward."""
        ticks = min(self.core.ticks_until_due(), self._max_timer_ticks)
        at = self._start + (self._ticks + ticks) * self._tick_s
        self._timer_at = at
        self._timer = self._loop.call_at(
            self._loop.time() + max(0.0, at - now) + _TIMER_SLACK_S, self._on_tick)

    def _expire_leases(self, now: float) -> None:
        """Propose ``LeaseExpire`` for every lease whose deadline passed (server/leases.py)."""
        for entry in self.leases.expiry_entries(now, self.machine.has_lease):
            try:
                self.core.propose(entry)
            except (NotLeader, ProposalDropped):
                return  # offered again after the clock's retry interval

    def _expire(self, now: float) -> None:
        parked = self._parked
        while parked and parked[0][0] <= now:
            _, identity, w = parked.popleft()
            self._reply(identity, w[0], wire.ST_UNAVAILABLE, "no leader elected in time")
        if self._read_groups:
            for ctx, (deadline, reads) in list(self._read_groups.items()):
                if deadline <= now:
                    del self._read_groups[ctx]
                    self._fail_reads(reads, wire.ST_UNAVAILABLE, "read index timed out")

    # ------------------------------------------------------------------ output

    def _send_messages(self, messages: list) -> None:
        self.transport.queue_messages(messages)

    def _reply(self, identity: bytes, rid: int, status: int, payload) -> None:
        self.transport.queue_reply(identity, rid, status, payload)

    def _flush_output(self) -> None:
        """Send what this step queued; drain at once if input arrived meanwhile."""
        self.watches.flush()
        if self.transport.flush() and not self._drain_scheduled:
            self._drain_scheduled = True  # see NodeTransport.has_input
            self._loop.call_soon(self._drain)

    def _leader_address(self) -> str | None:
        leader = self.core.leader
        return self.settings.cluster.get(leader) if leader != NONE else None

    def status(self) -> dict:
        """What ``fabric ns status`` shows for this node."""
        return status_report(self)
