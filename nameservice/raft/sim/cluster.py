"""A cluster of RaftCore nodes driven by a discrete-event loop on a virtual clock.

Each node ticks every ``tick_us`` microseconds from its own phase (clocks are not aligned), but
the loop only wakes a node when its next tick would do something (``ticks_until_due``), so
quiet periods cost nothing. A node's Ready is handled as a real driver would: send its early
messages, write to its simulated disk (taking ``disk_delay_us``; the node keeps taking input
meanwhile, one write at a time), then send the other messages, then apply. A crash loses what
was not yet written; a crash during a write may leave a torn prefix of the entries on disk.

Each node applies committed entries to a state machine of its own (``machine(node_id)`` makes
one; a hash chain by default), snapshots it when its log has grown by ``snapshot_every``
entries, and installs the snapshots its leader sends. A crash loses the machine with the rest
of the node's memory: a restart makes a new one and restores the snapshot on disk.

The cluster starts with voters 1..size; ``spares`` more nodes run from the start as joiners
(an empty configuration), waiting for a configuration change to add them.
"""
from __future__ import annotations

import hashlib
import heapq
import random
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Protocol

from nameservice.raft.core import RaftCore
from nameservice.raft.membership import is_conf_change
from nameservice.raft.messages import Message
from nameservice.raft.sim.checker import SafetyChecker
from nameservice.raft.sim.network import Network, NetworkModel
from nameservice.raft.types import (
    Config,
    Entry,
    HardState,
    ReadState,
    Ready,
    Role,
    Snapshot,
)

DELIVER, WAKE, DISK_DONE, CALL = range(4)


@dataclass(slots=True)
class Disk:
    """What survives a crash."""

    hard_state: HardState = HardState()
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)

    def write(self, rd: Ready, torn_at: int | None = None) -> None:
        if rd.snapshot is not None:
            self.snapshot = rd.snapshot
            self.entries = []
        entries = rd.entries if torn_at is None else rd.entries[:torn_at]
        if entries:
            first = entries[0].index
            base = self.entries[0].index if self.entries else first
            del self.entries[max(0, first - base):]
            self.entries.extend(entries)
        if torn_at is None and rd.hard_state is not None:
            self.hard_state = rd.hard_state


class StateMachine(Protocol):
    """What a node applies committed entries to; the snapshots hold its ``snapshot()``."""

    @property
    def applied_index(self) -> int:
        """The index of the last entry applied."""
        ...

    def apply_entry(self, index: int, data: bytes) -> object:
        """Apply the committed entry ``index`` (the next one after ``applied_index``)."""
        ...

    def snapshot(self) -> bytes:
        """The whole state, as bytes ``restore`` takes back."""
        ...

    def restore(self, data: bytes) -> None:
        """Replace the state with a snapshot's."""
        ...


class HashChain:
    """The default state machine: a hash chain over the applied commands (equal chains, equal
    states); configuration changes only move the index."""

    def __init__(self) -> None:
        self.applied_index = 0
        self.chain = b""

    def apply_entry(self, index: int, data: bytes) -> None:
        """Chain ``data`` in (unless it is a configuration change)."""
        self.applied_index = index
        if data and not is_conf_change(data):
            self.chain = hashlib.blake2b(self.chain + data, digest_size=16).digest()

    def snapshot(self) -> bytes:
        """The index and the chain."""
        return self.applied_index.to_bytes(8, "big") + self.chain

    def restore(self, data: bytes) -> None:
        """Take back what ``snapshot`` returned."""
        self.applied_index = int.from_bytes(data[:8], "big")
        self.chain = data[8:]


class SimNode:
    """One simulated server: a RaftCore (None while crashed), its disk and its state machine."""

    def __init__(self, node_id: int, phase_us: int, machine: StateMachine):
        self.id = node_id
        self.phase = phase_us
        self.core: RaftCore | None = None
        self.disk = Disk()
        self.ticks = 0
        self.wake_version = 0
        self.busy = False
        self.disk_delay_us = 0
        self.incarnation = 0
        self.checked_commit = 0  # the highest commit index of this node checked as leader
        self.machine = machine

    @property
    def up(self) -> bool:
        return self.core is not None

    @property
    def sm_index(self) -> int:
        """The index of the last entry the node's state machine applied."""
        return self.machine.applied_index

    def live_core(self) -> RaftCore:
        """The core of a node that is up."""
        core = self.core
        assert core is not None, f"node {self.id} is down"
        return core


class SimCluster:
    """Runs nodes, the network and scheduled calls on one virtual clock (µs)."""

    def __init__(
        self,
        size: int,
        seed: int,
        config: Callable[[int, tuple[int, ...]], Config],
        network: NetworkModel | None = None,
        tick_us: int = 10_000,
        snapshot_every: int = 0,
        check: bool = True,
        spares: int = 0,
        machine: Callable[[int], StateMachine] | None = None,
    ):
        self.rng = random.Random(seed)
        self.seed = seed
        self.initial_voters = tuple(range(1, size + 1))
        self.ids = tuple(range(1, size + spares + 1))
        self.make_config = config
        self.make_machine: Callable[[int], StateMachine] = machine or (lambda _: HashChain())
        self.tick_us = tick_us
        self.snapshot_every = snapshot_every
        self.net = Network(network or NetworkModel(), random.Random(self.rng.random()))
        self.checker = SafetyChecker(self.initial_voters) if check else None
        self.now = 0
        # (time, sequence, kind, node, payload): the payload's type depends on the kind.
        self._queue: list[tuple[int, int, int, int, Any]] = []
        self._seq = 0
        self.nodes = {
            i: SimNode(i, self.rng.randrange(tick_us), self.make_machine(i)) for i in self.ids
        }
        self.messages_sent = 0
        self.snapshots_installed = 0  # snapshots a node received from its leader
        self.on_message: Callable[[object], None] | None = None
        # Return False to lose a message on purpose (a test's targeted fault).
        self.message_filter: Callable[[object], bool] | None = None
        self.on_apply: Callable[[SimNode, Entry], None] | None = None
        self.on_read: Callable[[SimNode, ReadState], None] | None = None
        self.torn_writes = True
        for node in self.nodes.values():
            self.start(node.id)

    # ------------------------------------------------------------------ scheduling

    def _push(self, at: int, kind: int, node: int, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (at, self._seq, kind, node, payload))

    def call_at(self, at_us: int, fn: Callable[[], None]) -> None:
        """Run ``fn`` at virtual time ``at_us``."""
        self._push(at_us, CALL, 0, fn)

    def run_until(self, t_us: int, stop: Callable[[], bool] | None = None) -> bool:
        """Process events up to time ``t_us``; with ``stop``, return True as soon as it holds."""
        queue = self._queue
        while queue and queue[0][0] <= t_us:
            at, _, kind, node_id, payload = heapq.heappop(queue)
            self.now = at
            if kind == CALL:
                payload()
            else:
                node = self.nodes[node_id]
                if kind == DISK_DONE:
                    self._disk_done(node, payload)
                elif node.core is not None:
                    self._handle(node, kind, payload)
            if stop is not None and stop():
                return True
        self.now = max(self.now, t_us)
        return stop() if stop is not None else False

    # ------------------------------------------------------------------ node lifecycle

    def start(self, node_id: int) -> None:
        """Start (or restart after a crash) a node from what is on its disk."""
        node = self.nodes[node_id]
        assert node.core is None
        disk = node.disk
        node.incarnation += 1
        rng = random.Random(self.rng.random())
        # The initial voters know the initial configuration; spares join knowing nothing. Either
        # way, what the disk holds (snapshot meta, configuration entries) takes precedence.
        voters = self.initial_voters if node_id in self.initial_voters else ()
        node.core = core = RaftCore(
            self.make_config(node_id, voters),
            rng,
            disk.hard_state,
            disk.snapshot,
            list(disk.entries),
        )
        node.checked_commit = core.commit_index
        if disk.snapshot is not None:
            node.machine.restore(disk.snapshot.data)
        node.ticks = (self.now - node.phase) // self.tick_us if self.now >= node.phase else -1
        node.busy = False
        self._after_input(node)

    def crash(self, node_id: int) -> None:
        """Stop a node at once: memory is lost, only its disk remains."""
        node = self.nodes[node_id]
        node.core = None
        node.machine = self.make_machine(node_id)
        node.busy = False
        node.wake_version += 1

    # ------------------------------------------------------------------ node processing

    def _sync_ticks(self, node: SimNode) -> None:
        due = (self.now - node.phase) // self.tick_us - node.ticks
        if due > 0:
            node.ticks += due
            node.live_core().tick(due)

    def _handle(self, node: SimNode, kind: int, payload: Any) -> None:
        if kind == WAKE:
            if payload != node.wake_version:
                return
            self._sync_ticks(node)
        else:
            self._sync_ticks(node)
            node.live_core().step(payload)
        self._after_input(node)

    def _after_input(self, node: SimNode) -> None:
        """Hand out what the node's input produced; start its next write if the disk is free."""
        core = node.live_core()
        self._send_all(core.early_messages())
        while not node.busy and core.has_ready():
            rd = core.ready()
            if not rd:
                raise AssertionError(f"node {node.id}: has_ready() was true, ready() empty")
            self._send_all(rd.early_messages)
            if node.disk_delay_us and (rd.entries or rd.hard_state is not None or rd.snapshot):
                node.busy = True
                done_at = self.now + node.disk_delay_us
                self._push(done_at, DISK_DONE, node.id, (node.incarnation, rd))
                break
            node.disk.write(rd)
            self._finish(node, rd)
        node.wake_version += 1
        wake_tick = node.ticks + core.ticks_until_due()
        self._push(node.phase + wake_tick * self.tick_us, WAKE, node.id, node.wake_version)
        commit = core.commit_index
        if commit > node.checked_commit:
            node.checked_commit = commit
            # An entry of the leader's own term at its commit index was committed by this
            # leader counting replicas (a commit index learned as a follower is older).
            leading = core.role is Role.LEADER and core.log.term(commit) == core.term
            if leading and self.checker is not None:
                self.checker.on_leader_commit(node.id, core.term, core.log, self._holds)

    def _holds(self, node_id: int, index: int, term: int) -> bool:
        """Whether node ``node_id``'s disk holds the entry (``index``, ``term``)."""
        disk = self.nodes[node_id].disk
        if disk.snapshot is not None and index <= disk.snapshot.meta.index:
            return True
        entries = disk.entries
        if not entries:
            return False
        offset = index - entries[0].index
        return 0 <= offset < len(entries) and entries[offset].term == term

    def _disk_done(self, node: SimNode, payload: tuple[int, Ready]) -> None:
        incarnation, rd = payload
        if incarnation != node.incarnation or node.core is None:
            return
        node.disk.write(rd)
        node.busy = False
        self._sync_ticks(node)
        self._finish(node, rd)
        self._after_input(node)

    def crash_during_write(self, node_id: int) -> None:
        """Crash a node; if it is mid-write, a random prefix of the entries reaches the disk."""
        node = self.nodes[node_id]
        if node.busy and self.torn_writes:
            for _at, _, kind, nid, payload in self._queue:
                if kind == DISK_DONE and nid == node_id and payload[0] == node.incarnation:
                    rd = payload[1]
                    node.disk.write(rd, torn_at=self.rng.randint(0, len(rd.entries)))
                    break
        self.crash(node_id)

    def _finish(self, node: SimNode, rd: Ready) -> None:
        core = node.live_core()
        checker = self.checker
        if checker is not None and rd.hard_state is not None:
            checker.on_hard_state(node.id, rd.hard_state)
        if checker is not None and rd.entries:
            checker.on_persist(node.id, rd.entries, core.log)
        self._send_all(rd.messages)
        machine = node.machine
        if rd.snapshot is not None:
            machine.restore(rd.snapshot.data)
            self.snapshots_installed += 1
        for entry in rd.committed:
            if entry.index <= machine.applied_index:
                continue
            machine.apply_entry(entry.index, entry.data)
            if checker is not None:
                checker.on_apply(node.id, entry)
            if self.on_apply is not None:
                self.on_apply(node, entry)
        if rd.read_states and self.on_read is not None:
            for rs in rd.read_states:
                self.on_read(node, rs)
        if checker is not None and core.role is Role.LEADER:
            if rd.role_changed:
                checker.on_became_leader(node.id, core.term, core.log)
            else:
                checker.on_leader(node.id, core.term, core.log)
        core.advance(rd)
        since_snapshot = node.sm_index - core.log.snapshot.meta.index
        if self.snapshot_every and since_snapshot >= self.snapshot_every:
            self._take_snapshot(node)

    def _send_all(self, messages: list[Message]) -> None:
        for m in messages:
            self.messages_sent += 1
            if self.on_message is not None:
                self.on_message(m)
            if self.message_filter is not None and not self.message_filter(m):
                continue
            for delay in self.net.deliveries(m.frm, m.to):
                self._push(self.now + delay, DELIVER, m.to, m)

    def _take_snapshot(self, node: SimNode) -> None:
        core = node.live_core()
        index = node.sm_index
        snapshot = Snapshot(core.snapshot_meta(index), node.machine.snapshot())
        core.compact(snapshot)
        disk = node.disk
        disk.snapshot = snapshot
        disk.entries = [e for e in disk.entries if e.index > index]

    # ------------------------------------------------------------------ inputs from tests

    def leaders(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.core is not None and n.core.role is Role.LEADER]

    def leader(self) -> SimNode | None:
        """The leader of the highest term, if any node believes it leads."""
        best = None
        for node in self.leaders():
            if best is None or node.live_core().term > best.live_core().term:
                best = node
        return best

    def with_core(self, node_id: int, fn: Callable[[RaftCore], object]) -> object:
        """Give a node a local input (propose, read, transfer) and handle its Ready."""
        node = self.nodes[node_id]
        if node.core is None:
            return None
        self._sync_ticks(node)
        result = fn(node.core)
        self._after_input(node)
        return result


def default_config(**overrides: Any) -> Callable[[int, tuple[int, ...]], Config]:
    """A config factory for SimCluster with the given Config fields overridden."""

    def make(node_id: int, voters: tuple[int, ...]) -> Config:
        return replace(Config(id=node_id, voters=voters), **overrides)

    return make
