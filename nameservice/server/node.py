"""The node: Raft core + storage + key-value machine + transport, composed of parts that own
their state, on one event loop.

Theory of operation
-------------------
One asyncio loop runs everything; one worker thread runs ``storage.sync()`` (fsync). Each loop
iteration:

1. drains every frame waiting on the transport (up to ``MAX_DRAIN``); the ``RequestIntake``
   steps Raft messages into the core and routes client requests — writes into the
   ``WriteBatcher``'s pending batch, consistent reads into the ``ReadService``'s pending
   group, stale reads and status answered at once;
2. ``_after_input``: the quorum-less writes accepted are made durable (``StaleWrites``), the
   batch of writes becomes ONE log entry (a kv ``Batch``) and the read group ONE ReadIndex
   request; then the ``ReadyPipeline`` steps: early messages (a leader's AppendRequests,
   heartbeats, votes) are sent at once; if no sync is running, the next Ready is saved and
   its sync started in the worker thread, and the loop goes back to receiving;
3. when the sync completes, the Ready's messages are sent, its committed entries applied by
   the ``Applier`` (replies go to the waiting clients), its read states served, the core
   advanced — and the next Ready, which meanwhile collected everything that arrived during
   the fsync, starts its own sync (group commit).

The ``TickClock`` feeds the core's logical clock; its timer also expires parked requests, read
groups and leases and drives the watch hub. The ``LeaderTracker`` tells the parts of leader
changes. Replies are gathered per client and sent as one frame per client per step. Nothing
here awaits per request: the per-request work is a few dictionary and list operations plus
decoding and applying.

Failure rules: bad frames are counted and dropped (``counters``), with a rate-limited log line;
a write that reaches a follower is answered NOT_LEADER with the leader's address; while no
leader is known, requests are parked (bounded) and re-dispatched when one appears; a leader
that loses its role answers every pending write and read NOT_LEADER — the client retries on
the new leader within its session, so nothing is applied twice. A storage failure stops the
node (``run`` raises it).

Parts (each owns its state; this class builds them, wires their callbacks and runs the loop):

    clock.py       TickClock      logical ticks, the one tick timer
    intake.py      RequestIntake  frames decoded and routed; requests parked without a leader
    writes.py      WriteBatcher   pending writes -> one Batch entry; proposals and their waiters
    reads.py       ReadService    ReadIndex groups, reads waiting for apply, stale reads
    apply.py       Applier        committed entries into the machine; writers answered
    pipeline.py    ReadyPipeline  persist -> send -> apply -> advance; fsync worker; snapshots
    serving.py     receive_loop, shut_down  the loop's receiving and its parts' stop order
                                  (shared with a stateful component's replicas)
    leadership.py  LeaderTracker  leader changes, told to the parts
    snapshots.py   SnapshotStreams  snapshots streamed to followers far behind, and received
                                  (``snapreceive.py``): the core's SnapshotRequests go there
    leases.py      LeaseClock     the leader's lease deadlines
    members.py     MemberBook, MembershipService  members' addresses; MEMBERS, MEMBER_CHANGE
    watches.py     WatchHub       watches and their pushes
    stale.py       StaleWrites, StaleReplayer  quorum-less writes
    seam.py        Transport      what the node needs of its transport; ``transport.py`` is
                                  ZeroMQ, ``memtransport.py`` its in-memory twin
    status.py      status_report  what ``fabric ns status`` shows

Storage and transport are injected: ``Node(settings, transport_factory, storage=..., stale=...)``
(defaults: ZeroMQ sockets, ``DiskStorage`` and ``StaleWrites`` in ``settings.data_dir``).
"""
from __future__ import annotations

import asyncio
import logging
import random
import time

from nameservice import wire
from nameservice.address import client_address
from nameservice.kv import KvConfig, KvStateMachine
from nameservice.raft.core import RaftCore
from nameservice.raft.messages import SnapshotRequest
from nameservice.raft.types import NONE, Role
from nameservice.server.apply import Applier
from nameservice.server.clock import TickClock
from nameservice.server.config import NodeSettings
from nameservice.server.guard import Guard
from nameservice.server.intake import RequestIntake
from nameservice.server.leadership import LeaderTracker, hand_over
from nameservice.server.leases import LeaseClock
from nameservice.server.members import MemberBook, MembershipService
from nameservice.server.pipeline import ReadyPipeline
from nameservice.server.reads import ReadService
from nameservice.server.seam import Transport, TransportFactory
from nameservice.server.serving import receive_loop, shut_down
from nameservice.server.snapshots import SnapshotStreams
from nameservice.server.stale import StaleReplayer, StaleWrites
from nameservice.server.status import status_report
from nameservice.server.transport import zmq_transport
from nameservice.server.watches import WatchHub
from nameservice.server.writes import WriteBatcher
from nameservice.storage import DiskStorage, RaftStorage

log = logging.getLogger(__name__)

__all__ = ["MAX_DRAIN", "Node"]

MAX_DRAIN = 4096
"""Frames received per loop iteration before the batch is processed."""
PEERS_REFRESH_S = 0.5
"""How often the peer connections are checked against the members' addresses (a change of
the configuration itself is followed at once)."""


class Node:
    """One name-service node. ``await run(stop)`` serves until ``stop`` is set.

    ``transport_factory(node_id, cluster)`` makes its transport when it starts (default:
    ZeroMQ sockets); ``storage``: its Raft storage (default: ``DiskStorage`` in
    ``settings.data_dir``); ``stale``: its quorum-less writes (default: kept in
    ``settings.data_dir``; ``StaleWrites(None)`` keeps them in memory).
    """

    def __init__(self, settings: NodeSettings, transport_factory: TransportFactory = zmq_transport,
                 *, storage: RaftStorage | None = None, stale: StaleWrites | None = None) -> None:
        self.settings = settings
        self.storage = storage if storage is not None else DiskStorage(
            settings.data_dir, snapshot_threshold=settings.snapshot_threshold,
            snapshot_bytes=settings.snapshot_bytes)
        hard_state, snapshot, entries = self.storage.initial_state()
        self.machine = KvStateMachine(KvConfig(min_lease_ttl_ms=settings.min_lease_ttl_ms,
                                               history_events=settings.history_events,
                                               history_bytes=settings.history_bytes))
        if snapshot.meta.index:
            self.machine.restore(snapshot.data)
        self.core = RaftCore(settings.raft_config(), random.Random(), hard_state,
                             snapshot if snapshot.meta.index else None, entries)
        timeout_s = settings.election_timeout_ms[1] * 2 / 1000.0
        self._timeout_s = timeout_s
        self._transport_factory = transport_factory
        self.transport: Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._shut_down = False  # set once serving ends (after the hand-over of a stop)
        self._drain_scheduled = False

        # Watches leave a node that has known no leader for a few election timeouts.
        self.watches = WatchHub(self.machine, 4 * settings.election_timeout_ms[1] / 1000.0)
        self.leases = LeaseClock()  # deadlines, while this node leads
        self.stale = stale if stale is not None else StaleWrites(settings.data_dir)
        self.replayer = StaleReplayer(self.stale, settings.client_addresses(),
                                       lambda: self.core.leader != NONE)
        self.clock = TickClock(settings.tick() / 1000.0, self._on_tick)
        self.leadership = LeaderTracker(self.core, on_gained=self._gained_leadership,
                                        on_lost=self._lost_leadership,
                                        on_changed=self._leader_changed)
        self.book = MemberBook(self.machine, settings.cluster)
        self.membership = MembershipService(self.core, self.book, self._reply,
                                            applied_index=lambda: self.machine.applied_index)
        self._peers_seen: tuple | None = None  # the configurations the connections follow
        self._peers_checked = 0.0
        # Members that left, kept connected a little longer (id -> (address, until)): the
        # messages telling them their removal committed are still on their way.
        self._departed: dict[int, tuple[str, float]] = {}
        self._connected: dict[int, str] = {}  # the members connected to (departed ones aside)
        self._departed_grace_s = max(1.0, 4 * settings.election_timeout_ms[1] / 1000.0)
        self.writes = WriteBatcher(self.core.propose, self._reply, self.leader_address)
        self.reads = ReadService(self.machine, self.stale, self.core.read_index, self._reply,
                                 timeout_s=timeout_s)
        self.snapshots = SnapshotStreams(
            settings.id, self._send_frame, self._deliver_snapshot,
            committed_index=lambda: self.core.commit_index, current_term=lambda: self.core.term,
            spool_dir=getattr(self.storage, "data_dir", None), run_in_thread=self._in_thread)
        self.intake = RequestIntake(
            self.core, self.machine, writes=self.writes, reads=self.reads, leases=self.leases,
            watches=self.watches, stale=self.stale, members=self.membership, reply=self._reply,
            leader_address=self.leader_address, status=self.status,
            term_start=lambda: self.leadership.term_start, timeout_s=timeout_s,
            on_stream=self.snapshots.handle)
        self.applier = Applier(self.machine, writes=self.writes, reads=self.reads,
                               leases=self.leases, watches=self.watches)
        self.pipeline = ReadyPipeline(
            self.core, self.storage, self.machine, self.applier, sync_mode=settings.sync_mode,
            send=self._send_messages, flush=self._flush_output,
            after_core_step=self.leadership.check, resume=self._after_input,
            pause_clock=self.clock.pause, on_fatal=self._die)

    @property
    def counters(self) -> dict[str, int]:
        """The node's counters (each part keeps its own), in the order they are reported."""
        return {**self.intake.counters, **self.reads.counters, **self.writes.counters,
                **self.pipeline.counters, **self.membership.counters, **self.snapshots.counters}

    # ------------------------------------------------------------------ lifecycle

    async def run(self, stop: asyncio.Event, on_listening=None) -> None:
        """Serve until ``stop`` is set (or a storage failure, which is raised)."""
        self._loop = loop = asyncio.get_running_loop()
        self._stop = stop
        self.pipeline.start(loop)
        self.transport = self._transport_factory(self.settings.id, self.settings.cluster)
        sender = getattr(self.transport, "sender", None)  # a secured ZeroMQ transport's
        if sender is not None and getattr(self.transport, "secure", False):
            self.intake.guard = Guard(sender, getattr(self.transport, "peer_port", False))
        self._follow_members(time.monotonic())
        self.watches.attach(self.transport)
        if on_listening is not None:
            on_listening(self.settings.client_address)
        self.clock.start(loop, time.monotonic())
        receiver = asyncio.create_task(receive_loop(self.transport, self._drain))
        replayer = asyncio.create_task(self.replayer.run())
        try:
            await stop.wait()
            if self.pipeline.failed is None:  # serves on meanwhile: stop is set, not _shut_down
                await hand_over(self.core, self._after_input, tick_s=self.clock.tick_s,
                                timeout_s=self._timeout_s)
        finally:
            self._shut_down = True
            await shut_down(pipeline=self.pipeline, clock=self.clock, snapshots=self.snapshots,
                            transport=self.transport, storage=self.storage,
                            tasks=(receiver, replayer))
        if self.pipeline.failed is not None:
            raise self.pipeline.failed

    def _die(self, exc: BaseException) -> None:
        log.error("node %d stopping: %s", self.settings.id, exc)
        assert self._stop is not None  # only a running node dies
        self._stop.set()

    # ------------------------------------------------------------------ input

    def _drain(self, first: list | None = None) -> bool:
        """Handle what is waiting on the transport; True if more may be waiting."""
        self._drain_scheduled = False
        if self._shut_down:
            return False
        transport = self.transport
        assert transport is not None
        batch = transport.drain(MAX_DRAIN)
        if first is not None:
            batch.insert(0, first)
        if batch:
            self.intake.handle_frames(batch)
            self._after_input()
        return len(batch) >= MAX_DRAIN

    def _after_input(self) -> None:
        """Turn collected input into proposals and reads; step the pipeline; re-time."""
        if self.stale.has_waiting:
            self.stale.flush(self._reply)
        self.writes.propose()
        self.reads.start()
        self.pipeline.step()
        self.clock.bring_forward(time.monotonic(), self.core.ticks_until_due())

    def _on_tick(self) -> None:
        # Input first, then time: after a stall (a slow fsync on the loop thread, a busy
        # host) the leader's heartbeats may be waiting in the socket; ticking first would
        # start a needless election. Draining here is also the safety net for a missed edge
        # of ZeroMQ's descriptor (see NodeTransport.has_input).
        transport = self.transport
        assert transport is not None  # ticks run only while the node runs
        if transport.has_input():
            for _ in range(4):  # bounded: time must advance even under a flood
                if not self._drain():
                    break
        now = time.monotonic()
        due = self.clock.advance(now)
        if due:
            self.core.tick(due)
        self.intake.expire(now)
        self.reads.expire(now)
        self.snapshots.tick()
        self.watches.tick(now, self.core.leader != NONE)
        if self.leases.active:
            self.leases.expire(now, self.machine.has_lease, self.core.propose)
        self._after_input()
        if now - self._peers_checked >= PEERS_REFRESH_S:
            self._follow_members(now, force=True)
        self.clock.schedule(now, self.core.ticks_until_due())

    # ------------------------------------------------------------------ leader changes

    def _gained_leadership(self) -> None:
        # Every lease starts afresh with its whole TTL: no keepalive is lost to the change.
        self.leases.start(self.machine.leases(), time.monotonic())

    def _lost_leadership(self) -> None:
        self.leases.stop()
        self.membership.fail_all(self.leader_address())
        self.snapshots.abandon()
        self.writes.fail_all()
        self.reads.fail_groups(wire.ST_NOT_LEADER, self.leader_address())

    def _leader_changed(self, leader: int, is_leader: bool) -> None:
        if not is_leader:
            # Reads forwarded to the old leader will not be answered: let clients retry.
            self.reads.fail_groups(wire.ST_NOT_LEADER, self.leader_address())
        if leader != NONE:
            self.replayer.leader_seen.set()
            self.intake.release_parked()

    # ------------------------------------------------------------------ output

    def _send_messages(self, messages: list) -> None:
        assert self.transport is not None
        self.transport.queue_messages(self.snapshots.intercept(messages))

    def _send_frame(self, peer: int, data: bytes) -> None:
        if self.transport is not None and not self._shut_down:
            self.transport.send_peer(peer, data)

    def _deliver_snapshot(self, request: SnapshotRequest) -> None:
        """A streamed snapshot arrived whole: into the core, as if it came in one message
        (called while a batch of input is handled; ``_after_input`` follows)."""
        self.core.step(request)

    def _in_thread(self, fn, *args) -> asyncio.Future:
        assert self._loop is not None  # snapshots are streamed only while the node runs
        return self._loop.run_in_executor(None, fn, *args)

    def _reply(self, identity: bytes, rid: int, status: int, payload) -> None:
        assert self.transport is not None
        self.transport.queue_reply(identity, rid, status, payload)

    def _flush_output(self) -> None:
        """Send what this step queued; drain at once if input arrived meanwhile."""
        self.membership.on_applied()
        self.watches.flush()
        assert self.transport is not None and self._loop is not None
        has_input = self.transport.flush()
        self._follow_members()  # after sending: a departing member gets its last messages
        if has_input and not self._drain_scheduled:
            self._drain_scheduled = True  # see NodeTransport.has_input
            self._loop.call_soon(self._drain)

    def leader_address(self) -> str | None:
        """The client address of the leader this node knows (None: none known)."""
        leader = self.core.leader
        member = self.book.address(leader) if leader != NONE else None
        return client_address(member) if member is not None else None

    # ------------------------------------------------------------------ membership

    def _follow_members(self, now: float = 0.0, force: bool = False) -> None:
        """Keep a connection to every member of the configuration in force and of the one
        committed (a removed member keeps receiving the log until its removal commits); stop
        once this node's own removal is committed."""
        core = self.core
        current, committed = core.conf.current, core.conf.at(core.commit_index)
        seen = (current, committed)
        if seen == self._peers_seen and not force:
            return
        self._peers_seen = seen
        if now:
            self._peers_checked = now
        me = self.settings.id
        wanted = set(current.voters + current.learners + committed.voters + committed.learners)
        wanted.discard(me)
        addresses = self.book.addresses()
        peers = {node: addresses[node] for node in wanted if node in addresses}
        missing = wanted - set(peers)
        if missing and not force:
            log.info("no address known yet for member(s) %s", sorted(missing))
        now = now or time.monotonic()
        for node, (_, until) in list(self._departed.items()):
            if node in wanted or until <= now:
                del self._departed[node]
        for node, address in self._connected.items():
            if node not in peers and node not in self._departed:
                self._departed[node] = (address, now + self._departed_grace_s)
        for node, (address, _) in self._departed.items():
            peers.setdefault(node, address)
        assert self.transport is not None
        self.transport.set_peers(peers)
        self._connected = {node: a for node, a in peers.items() if node not in self._departed}
        if (self._stop is not None and not self._stop.is_set() and core.role is not Role.LEADER
                and core.conf.removed(me, core.commit_index)):
            log.warning("node %d was removed from the cluster: stopping", me)
            self._stop.set()

    def status(self) -> dict:
        """What ``fabric ns status`` shows for this node."""
        return status_report(self)
