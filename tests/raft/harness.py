"""A tiny synchronous network of RaftCores for scripted tests (like etcd's `stabilize`).

Messages are delivered in the order sent, instantly, unless a link is cut. Persistence is
immediate: every Ready is advanced right away, with its entries appended to a per-node list
so a test can restart a node from what it "wrote".

``Net(5, voters=(1, 2, 3))`` starts nodes 4 and 5 as joiners (an empty configuration): they
take part only once a configuration change adds them.
"""
from __future__ import annotations

import random
from dataclasses import replace

from nameservice.raft.core import RaftCore
from nameservice.raft.membership import decode_conf_change, is_conf_change
from nameservice.raft.types import Config, Entry, HardState, Role, Snapshot


class Net:
    def __init__(self, size: int = 3, voters: tuple[int, ...] | None = None, **config):
        self.ids = tuple(range(1, size + 1))
        self.voters = self.ids if voters is None else voters
        self.config = config
        self.cores: dict[int, RaftCore] = {}
        self.disks: dict[int, tuple[HardState, Snapshot | None, list[Entry]]] = {}
        self.applied: dict[int, list[Entry]] = {i: [] for i in self.ids}
        # Every committed entry each node applied, no-ops and configuration entries included.
        self.committed: dict[int, list[Entry]] = {i: [] for i in self.ids}
        self.conf_states: dict[int, list] = {i: [] for i in self.ids}
        self.read_states: dict[int, list] = {i: [] for i in self.ids}
        self.cut: set[tuple[int, int]] = set()
        # Return False to lose a message (a test's targeted fault).
        self.filter = None
        self.sent: list = []
        for i in self.ids:
            self.start(i)

    def make_config(self, node_id: int) -> Config:
        voters = self.voters if node_id in self.voters else ()
        return replace(Config(id=node_id, voters=voters), **self.config)

    def start(self, node_id: int) -> RaftCore:
        hs, snap, entries = self.disks.get(node_id, (HardState(), None, []))
        core = RaftCore(self.make_config(node_id), random.Random(node_id), hs, snap, list(entries))
        self.cores[node_id] = core
        return core

    def crash(self, node_id: int) -> None:
        del self.cores[node_id]

    def isolate(self, node_id: int) -> None:
        for other in self.ids:
            if other != node_id:
                self.cut.update({(node_id, other), (other, node_id)})

    def heal(self) -> None:
        self.cut.clear()

    def _persist(self, node_id: int, core: RaftCore, rd) -> None:
        hs, snap, entries = self.disks.get(node_id, (HardState(), None, []))
        if rd.snapshot is not None:
            snap, entries = rd.snapshot, []
        if rd.entries:
            first = rd.entries[0].index
            entries = [e for e in entries if e.index < first] + list(rd.entries)
        if rd.hard_state is not None:
            hs = rd.hard_state
        self.disks[node_id] = (hs, snap, entries)

    def stabilize(self, limit: int = 10_000, after_step=None) -> int:
        """Deliver messages until nothing is left to do; returns how many were delivered.

        ``after_step(message)`` runs after each delivered message is stepped.
        """
        delivered = 0
        for _ in range(limit):
            pending = []
            for node_id, core in list(self.cores.items()):
                pending.extend(core.early_messages())
                while core.has_ready():
                    rd = core.ready()
                    self._persist(node_id, core, rd)
                    pending.extend(rd.early_messages)
                    pending.extend(rd.messages)
                    self.applied[node_id].extend(
                        e for e in rd.committed if e.data and not is_conf_change(e.data)
                    )
                    self.committed[node_id].extend(rd.committed)
                    if rd.conf_state is not None:
                        self.conf_states[node_id].append(rd.conf_state)
                    self.read_states[node_id].extend(rd.read_states)
                    core.advance(rd)
            if not pending:
                return delivered
            for m in pending:
                self.sent.append(m)
                if (m.frm, m.to) in self.cut or m.to not in self.cores:
                    continue
                if self.filter is not None and not self.filter(m):
                    continue
                self.cores[m.to].step(m)
                delivered += 1
                if after_step is not None:
                    after_step(m)
        raise AssertionError("network did not stabilize")

    def tick(self, n: int = 1, only: tuple[int, ...] | None = None) -> None:
        """Advance every (or only the given) node by n ticks, one at a time, stabilizing."""
        for _ in range(n):
            for node_id in only or tuple(self.cores):
                if node_id in self.cores:
                    self.cores[node_id].tick()
            self.stabilize()

    def elect(self, node_id: int) -> RaftCore:
        self.cores[node_id].campaign()
        self.stabilize()
        core = self.cores[node_id]
        assert core.role is Role.LEADER, core.role
        return core

    def leader(self) -> RaftCore | None:
        leaders = [c for c in self.cores.values() if c.role is Role.LEADER]
        return max(leaders, key=lambda c: c.term) if leaders else None

    def data_applied(self, node_id: int) -> list[bytes]:
        return [e.data for e in self.applied[node_id]]

    def conflicts(self) -> list[str]:
        """Indexes at which two nodes applied different entries (State Machine Safety)."""
        seen: dict[int, tuple[int, Entry]] = {}
        found = []
        for node_id, entries in self.committed.items():
            for entry in entries:
                other = seen.setdefault(entry.index, (node_id, entry))
                if other[1] != entry:
                    found.append(
                        f"index {entry.index}: node {other[0]} applied {describe(other[1])}, "
                        f"node {node_id} applied {describe(entry)}"
                    )
        return found


def describe(entry: Entry) -> str:
    """An entry in words: its term and a no-op, a configuration change or its data."""
    if not entry.data:
        what = "no-op"
    elif is_conf_change(entry.data):
        change, state = decode_conf_change(entry.data)
        what = f"{change.kind.name} {change.node} -> voters {state.voters}"
    else:
        what = repr(entry.data)
    return f"term {entry.term} {what}"
