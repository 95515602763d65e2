"""One replica's seat in its Raft group: the name service's Raft core, storage, Ready pipeline,
snapshot streams and peer transport, driving a ``ReplicaMachine`` instead of the key-value one.

The loop is the name-service node's, without clients: frames from the peers (PEER: Raft
messages, SNAP: snapshot streams) are stepped into the core; after each batch of input the
``ReadyPipeline`` saves (fsync, group commit), sends and applies; the ``TickClock`` drives the
core's time. Committed entries go to the machine, then to ``on_applied(entries)`` (the leader
acknowledges the messages an entry carried); a snapshot installed goes to the machine, then
to ``on_restored()``. ``on_role(is_leader)`` is told of every change of this replica's role.

A replica that fell behind past the leader's compaction, or starts with an empty disk, gets
the leader's snapshot streamed (``SnapshotStreams``), as a name-service node would.

Failure rules: frames that do not decode are counted (``bad_peer_frames``) and dropped; a
storage failure stops the member (``run`` raises it).
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from fabric.stateful.machine import ApplyFailed
from nameservice import wire
from nameservice.errors import DecodeError
from nameservice.raft.core import RaftCore
from nameservice.raft.types import NONE, Entry, ReadState, Role
from nameservice.server.clock import TickClock
from nameservice.server.config import NodeSettings
from nameservice.server.leadership import LeaderTracker, hand_over
from nameservice.server.pipeline import ReadyPipeline
from nameservice.server.seam import PEER_MARK, Transport, TransportFactory
from nameservice.server.serving import receive_loop, shut_down
from nameservice.server.snapshots import SnapshotStreams
from nameservice.server.transport import zmq_transport
from nameservice.storage import DiskStorage, RaftStorage

log = logging.getLogger(__name__)

__all__ = ["GroupMachine", "GroupMember"]

MAX_DRAIN = 4096
_LIMITS = {wire.PEER: wire.MAX_PEER_FRAME, wire.SNAP: wire.MAX_SNAP_FRAME}


class GroupMachine(Protocol):
    """What a group's log is applied to: deterministic, the same on every replica. An entry
    that cannot be applied safely raises ``ApplyFailed`` (the replica stops)."""

    @property
    def applied_index(self) -> int:
        """The index of the last entry applied (or restored)."""

    def apply_entry(self, index: int, data: bytes) -> object:
        """Apply the committed entry at ``index``."""

    def snapshot(self) -> bytes:
        """The whole state, as ``restore`` takes it."""

    def restore(self, data: bytes) -> None:
        """Replace the state with a snapshot's."""


class _Applier:
    """Committed entries into the machine, then to the member's listener."""

    def __init__(self, machine: GroupMachine, on_applied: Callable[[Sequence[Entry]], None],
                 on_restored: Callable[[], None],
                 on_fatal: Callable[[BaseException], None]) -> None:
        self._machine = machine
        self._on_applied = on_applied
        self._on_restored = on_restored
        self._on_fatal = on_fatal
        self.failed = False

    def apply(self, entries: Sequence[Entry], read_states: Sequence[ReadState] = ()) -> None:
        machine = self._machine
        if self.failed:
            return
        fresh = [entry for entry in entries if entry.index > machine.applied_index]
        for entry in fresh:
            try:
                machine.apply_entry(entry.index, entry.data)
            except ApplyFailed as exc:  # this replica can no longer be trusted to agree
                self.failed = True
                self._on_fatal(exc)
                return
        if fresh:
            self._on_applied(fresh)

    def restore(self, data: bytes) -> None:
        self._machine.restore(data)
        self._on_restored()


class GroupMember:
    """One replica of a Raft group (see module docstring). ``await run(stop)`` serves until
    ``stop`` is set.

    ``voters``: the configuration to start from when the storage holds none (the group's
    founder: itself alone; a replica joining: none, it waits for the leader's log); default:
    every member of ``settings.cluster``.
    """

    def __init__(self, settings: NodeSettings, machine: GroupMachine, *,
                 on_applied: Callable[[Sequence[Entry]], None] = lambda entries: None,
                 on_restored: Callable[[], None] = lambda: None,
                 on_role: Callable[[bool], None] = lambda is_leader: None,
                 voters: tuple[int, ...] | None = None,
                 transport_factory: TransportFactory = zmq_transport,
                 storage: RaftStorage | None = None) -> None:
        self.settings = settings
        self.machine = machine
        self.storage = storage if storage is not None else DiskStorage(
            settings.data_dir, snapshot_threshold=settings.snapshot_threshold,
            snapshot_bytes=settings.snapshot_bytes)
        hard_state, snapshot, entries = self.storage.initial_state()
        if snapshot.meta.index:
            machine.restore(snapshot.data)
        config = settings.raft_config()
        if voters is not None:  # the group's first configuration (its founder alone, or none)
            config = dataclasses.replace(config, voters=voters, learners=())
        self.core = RaftCore(config, random.Random(), hard_state,
                             snapshot if snapshot.meta.index else None, entries)
        self._on_role = on_role
        self._transport_factory = transport_factory
        self.transport: Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._shut_down = False
        self._drain_scheduled = False
        self._peers: dict[int, str] = {}
        self.counters = {"bad_peer_frames": 0}
        self.clock = TickClock(settings.tick() / 1000.0, self._on_tick)
        self.leadership = LeaderTracker(self.core, on_gained=lambda: on_role(True),
                                        on_lost=lambda: on_role(False),
                                        on_changed=lambda leader, mine: None)
        self.snapshots = SnapshotStreams(
            settings.id, self._send_frame, self.core.step,
            committed_index=lambda: self.core.commit_index, current_term=lambda: self.core.term,
            spool_dir=settings.data_dir, run_in_thread=self._in_thread)
        self.pipeline = ReadyPipeline(
            self.core, self.storage, machine,
            _Applier(machine, on_applied, on_restored, self._die),
            sync_mode=settings.sync_mode, send=self._send_messages, flush=self._flush_output,
            after_core_step=self.leadership.check, resume=self.after_input,
            pause_clock=self.clock.pause, on_fatal=self._die)

    # ------------------------------------------------------------------ what the replica asks

    @property
    def is_leader(self) -> bool:
        """Whether this replica leads its group now."""
        return self.core.role is Role.LEADER

    def propose(self, data: bytes) -> tuple[int, int] | None:
        """Append ``data`` to the log (leader only): ``(term, index)``, or None if it cannot be
        proposed now (not leader, a leadership transfer, too much uncommitted)."""
        core = self.core
        if core.role is not Role.LEADER:
            return None
        try:
            index = core.propose(data)
        except Exception:  # NotLeader, ProposalDropped: the caller keeps it and tries later
            return None
        return core.term, index

    def set_peers(self, peers: dict[int, str]) -> None:
        """The other replicas' addresses (id -> ``HOST:PORT``), as discovery last saw them."""
        self._peers = {i: a for i, a in peers.items() if i != self.settings.id}
        if self.transport is not None and not self._shut_down:
            self.transport.set_peers(self._peers)

    def status(self) -> dict:
        """Role, term, leader, log and apply positions, counters."""
        core = self.core
        return {"id": self.settings.id, "role": core.role.name.lower(), "term": core.term,
                "leader": core.leader if core.leader != NONE else None,
                "commit_index": core.commit_index, "last_index": core.last_index,
                "applied_index": self.machine.applied_index,
                "counters": {**self.counters, **self.pipeline.counters,
                             **self.snapshots.counters}}

    # ------------------------------------------------------------------ lifecycle

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set (or a storage failure, which is raised); a leader hands
        its leadership over before it stops."""
        self._loop = loop = asyncio.get_running_loop()
        self._stop = stop
        self.pipeline.start(loop)
        self.transport = self._transport_factory(self.settings.id, self.settings.cluster)
        self.transport.set_peers(self._peers)
        self.clock.start(loop, time.monotonic())
        receiver = asyncio.create_task(receive_loop(self.transport, self._drain))
        try:
            await stop.wait()
            if self.pipeline.failed is None:
                await hand_over(self.core, self.after_input, tick_s=self.clock.tick_s,
                                timeout_s=self.settings.election_timeout_ms[1] * 2 / 1000.0,
                                what="replica")
        finally:
            self._shut_down = True
            await shut_down(pipeline=self.pipeline, clock=self.clock, snapshots=self.snapshots,
                            transport=self.transport, storage=self.storage, tasks=(receiver,))
        if self.pipeline.failed is not None:
            raise self.pipeline.failed

    def _die(self, exc: BaseException) -> None:
        log.error("replica %d stopping: %s", self.settings.id, exc)
        assert self._stop is not None
        self._stop.set()

    # ------------------------------------------------------------------ input

    def _drain(self, first: list | None = None) -> bool:
        self._drain_scheduled = False
        if self._shut_down:
            return False
        assert self.transport is not None
        batch = self.transport.drain(MAX_DRAIN)
        if first is not None:
            batch.insert(0, first)
        if batch:
            self._handle(batch)
            self.after_input()
        return len(batch) >= MAX_DRAIN

    def _handle(self, batch: list) -> None:
        step = self.core.step
        for parts in batch:
            try:
                if len(parts) != 2:
                    raise DecodeError(f"{len(parts) - 1} frames in one message, expected 1")
                data = parts[1]
                kind, body = wire.split_frame(data, _LIMITS.get(wire.frame_kind(data), 0))
                if kind == wire.PEER:
                    for message in wire.decode_peer_batch(body):
                        step(message)
                elif kind == wire.SNAP:
                    self.snapshots.handle(wire.decode_snap_batch(body))
                else:
                    raise DecodeError(f"a replica does not accept frames of kind {kind}")
            except DecodeError as exc:
                self.counters["bad_peer_frames"] += 1
                if self.counters["bad_peer_frames"] <= 10:
                    log.warning("dropped a bad frame from %r: %s",
                                parts[0].removeprefix(PEER_MARK)[:16], exc)

    def after_input(self) -> None:
        """Step the pipeline after input or a proposal; re-time the clock."""
        if self._shut_down:
            return
        self.pipeline.step()
        self.clock.bring_forward(time.monotonic(), self.core.ticks_until_due())

    def _on_tick(self) -> None:
        transport = self.transport
        assert transport is not None
        if transport.has_input():
            for _ in range(4):
                if not self._drain():
                    break
        now = time.monotonic()
        due = self.clock.advance(now)
        if due:
            self.core.tick(due)
        self.snapshots.tick()
        self.after_input()
        self.clock.schedule(now, self.core.ticks_until_due())

    # ------------------------------------------------------------------ output

    def _send_messages(self, messages: list) -> None:
        assert self.transport is not None
        self.transport.queue_messages(self.snapshots.intercept(messages))

    def _send_frame(self, peer: int, data: bytes) -> None:
        if self.transport is not None and not self._shut_down:
            self.transport.send_peer(peer, data)

    def _in_thread(self, fn, *args) -> asyncio.Future:
        assert self._loop is not None
        return self._loop.run_in_executor(None, fn, *args)

    def _flush_output(self) -> None:
        assert self.transport is not None and self._loop is not None
        if self.transport.flush() and not self._drain_scheduled:
            self._drain_scheduled = True
            self._loop.call_soon(self._drain)

