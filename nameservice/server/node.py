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
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import msgpack

from nameservice.errors import DecodeError
from nameservice.kv import (Batch, CloseSession, KvConfig, KvStateMachine, LeaseExpire,
                            LeaseGrantResult, OpenSession, Request, StaleBacklogFull)
from nameservice.kv import DecodeError as KvDecodeError
from nameservice.kv import FORMAT_VERSION as KV_VERSION
from nameservice.kv.codec import kv_to_wire, proposal_from_wire, result_to_wire
from nameservice.raft.core import RaftCore
from nameservice.raft.errors import NotLeader, ProposalDropped
from nameservice.raft.types import NONE, Ready, Role, Snapshot, SnapshotMeta
from nameservice.server import wire
from nameservice.server.config import NodeSettings
from nameservice.server.leases import LeaseClock
from nameservice.server.stale import StaleReplayer, StaleWrites
from nameservice.server.transport import NodeTransport
from nameservice.server.watches import WatchHub
from nameservice.storage import DiskStorage

log = logging.getLogger(__name__)

MAX_DRAIN = 4096
"""Frames received per loop iteration before the batch is processed."""
MAX_ITEMS_PER_ENTRY = 4096
"""Client writes per log entry (a bigger batch becomes several entries)."""
MAX_ENTRY_BYTES = 1 << 20
"""Approximate bytes of client writes per log entry."""
MAX_PENDING_WRITES = 200_000
"""Writes proposed and not yet applied; beyond, new writes are answered BUSY."""
MAX_PENDING_READS = 200_000
"""Consistent reads waiting for their read index; beyond, answered BUSY."""
MAX_PARKED = 20_000
"""Requests held while no leader is known; beyond, answered UNAVAILABLE."""
MAX_TIMER_S = 0.05
"""Longest sleep of the tick timer (request deadlines are checked at least this often)."""

_KV_PREFIX = bytes([KV_VERSION])
_TIMER_SLACK_S = 0.0002  # wake just after a tick boundary, never just before it
_pack = msgpack.Packer(use_bin_type=True, autoreset=True).pack
_CLIENT_COMMANDS = (Request, OpenSession, CloseSession)


class Node:
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

    def _handle_write(self, identity: bytes, rid: int, w: list, size: int) -> None:
        core = self.core
        if core.role is not Role.LEADER:
            if core.leader == NONE:
                self._park(identity, w)
            else:
                self._reply(identity, rid, wire.ST_NOT_LEADER, self._leader_address())
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
        core = self.core
        if core.role is not Role.LEADER:
            if core.leader == NONE:
                self._park(identity, w)
            else:
                self._reply(identity, rid, wire.ST_NOT_LEADER, self._leader_address())
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

    # ------------------------------------------------------------------ proposing and reading

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

    # ------------------------------------------------------------------ the Ready cycle

    def _after_input(self) -> None:
        """Turn collected input into proposals and reads; send; start the next write."""
        core = self.core
        if self.stale.has_waiting:
            self.stale.flush(self._reply)
        if self._wires:
            self._propose()
        if self._reads:
            self._start_read()
        while True:
            ready = core.has_ready()  # on a leader this also queues the AppendRequests due
            self._send_messages(core.early_messages())
            self._check_leader()
            if self._syncing and self._was_leader and not self._compacting:
                self._apply_committed_early()
            if self._syncing or not ready or self._fatal is not None:
                break
            rd = core.ready()
            self.counters["readies"] += 1
            self._send_messages(rd.early_messages)
            if rd.snapshot is None:
                # Committed entries are on a quorum's disks already: apply (and answer) them
                # now, while this node's own write of the Ready is still under way.
                self._apply(rd)
            if rd.snapshot is not None or rd.entries or rd.hard_state is not None:
                try:
                    needs_sync = self._needs_sync(rd)
                    self.storage.save(rd)
                except Exception as exc:  # a storage failure: the node must restart
                    self._die(exc)
                    return
                if not needs_sync:
                    self._finish(rd)
                    continue
                self.counters["syncs"] += 1
                self._flush_output()  # early messages and replies leave before the fsync
                if self._sync_mode == "inline" or (
                        self._sync_mode == "auto" and core.role is not Role.LEADER):
                    started = time.monotonic()
                    try:
                        self.storage.sync()
                    except Exception as exc:
                        self._die(exc)
                        return
                    # The logical clock stands still while the loop is blocked in its own
                    # fsync: a stalled disk must not make this node time out the leader whose
                    # heartbeats are waiting in its socket. (A slower clock is always safe.)
                    self._start += time.monotonic() - started
                    self._finish(rd)
                    continue
                self._syncing = True
                future = self._loop.run_in_executor(self._executor, self.storage.sync)
                future.add_done_callback(lambda f, rd=rd: self._sync_done(f, rd))
                break
            self._finish(rd)
        self._flush_output()
        if self._timer is not None:
            due = self._start + (self._ticks + self.core.ticks_until_due()) * self._tick_s
            if due < self._timer_at - 1e-6:
                self._timer.cancel()
                self._timer_at = due
                self._timer = self._loop.call_at(
                    self._loop.time() + max(0.0, due - time.monotonic()) + _TIMER_SLACK_S,
                    self._on_tick)

    def _needs_sync(self, rd: Ready) -> bool:
        """Whether the Ready's messages must wait for an fsync.

        Only entries, snapshots, term and vote gate messages (acknowledgements, votes). A
        Ready that only moves the commit index needs none: the commit index is not needed for
        safety (a restarted node learns it again from the leader), so it is buffered and rides
        with the next sync instead of costing an fsync of its own.
        """
        if rd.entries or rd.snapshot is not None:
            return True
        hs, saved = rd.hard_state, self.storage.hard_state
        return hs is not None and (hs.term != saved.term or hs.vote != saved.vote)

    def _sync_done(self, future: asyncio.Future, rd: Ready) -> None:
        self._syncing = False
        if self._fatal is not None or self._shut_down:
            return
        exc = future.exception()
        if exc is not None:
            self._die(exc)
            return
        self._finish(rd)
        self._after_input()

    def _finish(self, rd: Ready) -> None:
        """The Ready's writes are durable: send its messages, install its snapshot, advance."""
        self._send_messages(rd.messages)
        if rd.snapshot is not None:
            try:
                self.machine.restore(rd.snapshot.data)
            except KvDecodeError as exc:  # the leader's own snapshot: nothing safe to do
                self._die(exc)
                return
            self.counters["snapshots_installed"] += 1
            self.watches.on_restore()
            self._fail_all_proposed()
            self._apply(rd)
        self.core.advance(rd)
        if self.storage.should_snapshot(self.machine.applied_index):
            self._take_snapshot()

    def _apply(self, rd: Ready) -> None:
        """Apply the Ready's committed entries, answer their writers, serve released reads."""
        self._apply_entries(rd.committed)
        machine = self.machine
        for rs in rd.read_states:
            group = self._read_groups.pop(rs.ctx, None)
            if group is not None:
                self._reads_waiting.append((rs.index, group[1]))
        waiting = self._reads_waiting
        while waiting and waiting[0][0] <= machine.applied_index:
            self._serve_reads(waiting.popleft()[1])

    def _apply_committed_early(self) -> None:
        """On the leader, apply entries committed since the last Ready without waiting for the
        next one (which may only come after the fsync under way).

        Safe because a leader never rewrites its log, and commits only entries it has
        persisted: ``storage.entries`` holds exactly the committed ones. The next Ready lists
        them again; they are skipped as already applied.
        """
        applied = self.machine.applied_index
        commit = self.core.commit_index
        if commit > applied:
            self._apply_entries(self.storage.entries(applied + 1, commit + 1))
            waiting = self._reads_waiting
            while waiting and waiting[0][0] <= self.machine.applied_index:
                self._serve_reads(waiting.popleft()[1])

    def _apply_entries(self, entries: list) -> None:
        machine = self.machine
        proposed = self._proposed
        for entry in entries:
            index = entry.index
            if index <= machine.applied_index:
                continue
            mine = proposed.pop(index, None) if proposed else None
            # Our proposal is still the entry at its index (the same bytes: an entry another
            # leader wrote there with the same bytes holds the same requests, same answers).
            if mine is not None and (mine[0] is entry.data or mine[0] == entry.data):
                applied = machine.apply(index, mine[1])
                if self.leases.active:
                    self._note_grants(applied.results)
                waiters = mine[2]
                self._pending_writes -= len(waiters)
                reply = self._reply
                for (identity, rid), result in zip(waiters, applied.results):
                    reply(identity, rid, wire.ST_OK, result_to_wire(result))
            else:
                applied = machine.apply_entry(index, entry.data)
                if self.leases.active:
                    self._note_grants(applied.results)
                if mine is not None:  # our entry was replaced by another leader's
                    self._fail_waiters(mine[2], wire.ST_NOT_LEADER, self._leader_address())
            self.watches.on_events(applied.events)

    def _note_grants(self, results) -> None:
        now = time.monotonic()
        for result in results:
            if type(result) is LeaseGrantResult:
                self.leases.granted(result.id, result.ttl_ms, now)

    def _take_snapshot(self) -> None:
        """Snapshot the state machine here; write it and compact the log in the worker thread.

        The write takes several fsyncs; on the loop thread a slow disk would stall heartbeats
        and cost the leadership. Until it is done no Ready is started (``_syncing``) and no
        entry is read from the storage, which is being compacted.
        """
        index = self.machine.applied_index
        meta = SnapshotMeta(index, self.core.log.term(index), self.core.voters)
        snapshot = Snapshot(meta, self.machine.snapshot())
        self._syncing = self._compacting = True
        future = self._loop.run_in_executor(self._executor, self.storage.compact, snapshot)
        future.add_done_callback(lambda f: self._compacted(f, snapshot))

    def _compacted(self, future: asyncio.Future, snapshot: Snapshot) -> None:
        self._syncing = self._compacting = False
        if self._fatal is not None or self._shut_down:
            return
        exc = future.exception()
        if exc is not None:
            self._die(exc)
            return
        self.core.compact(snapshot)
        self.counters["snapshots"] += 1
        self._after_input()

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

    def _fail_all_proposed(self) -> None:
        proposed, self._proposed = self._proposed, {}
        for _, _, waiters in proposed.values():
            self._fail_waiters(waiters, wire.ST_NOT_LEADER, self._leader_address())

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
        core = self.core
        counters = dict(self.counters)
        if self.transport is not None:
            counters["peer_send_drops"] = self.transport.peer_drops
            counters["reply_drops"] = self.transport.reply_drops
        counters.update(core.counters)
        counters.update(self.watches.counters)
        return {
            "id": self.settings.id, "address": self.settings.address, "role": core.role.value,
            "term": core.term, "leader": core.leader, "leader_address": self._leader_address(),
            "commit_index": core.commit_index, "applied_index": self.machine.applied_index,
            "last_index": core.last_index, "revision": self.machine.revision,
            "keys": self.machine.stats()["keys"], "leases": self.machine.stats()["leases"],
            "watches": len(self.watches), "counters": counters, "stale": self.stale.status(),
        }
