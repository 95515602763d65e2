"""Safety invariants of Raft, checked incrementally while a simulation runs.

Election Safety     at most one leader per term.
Log Matching        two logs holding an entry with the same index and term hold the same
                    entry there and agree on everything before it (checked inductively: same
                    data and same term of the previous entry).
Leader Completeness a node that becomes leader of term t holds every entry committed in an
                    earlier term, and every proposal acknowledged to a client before.
State Machine Safety no two nodes apply different entries at the same index.
Read linearizability a released ReadIndex point covers every write acknowledged before the
                    read was requested.
"""
from __future__ import annotations

from nameservice.raft.log import RaftLog
from nameservice.raft.types import Entry


class SafetyViolation(AssertionError):
    """A Raft safety property was broken; the message says which and where."""


class SafetyChecker:
    """Accumulates what every node persisted, applied and acknowledged, and checks it."""

    def __init__(self) -> None:
        self.leader_of_term: dict[int, int] = {}
        self.entry_at: dict[tuple[int, int], tuple[bytes, int]] = {}
        self.committed: dict[int, tuple[int, bytes]] = {}
        self.max_committed = 0
        self.acked: dict[int, tuple[int, bytes]] = {}
        self.max_acked = 0

    def on_leader(self, node: int, term: int, log: RaftLog) -> None:
        """Call when ``node`` is leader of ``term``."""
        holder = self.leader_of_term.setdefault(term, node)
        if holder != node:
            raise SafetyViolation(
                f"election safety: nodes {holder} and {node} both lead term {term}"
            )

    def on_became_leader(self, node: int, term: int, log: RaftLog) -> None:
        """Call once when ``node`` has just won the election of ``term``."""
        self.on_leader(node, term, log)
        for what, table, top in (
            ("committed entry", self.committed, self.max_committed),
            ("acknowledged proposal", self.acked, self.max_acked),
        ):
            index = top
            # Entries of the leader's own term (or later) need not be there yet.
            while index > 0 and (index not in table or table[index][0] >= term):
                index -= 1
            if index == 0:
                continue
            want_term = table[index][0]
            if index <= log.snapshot.meta.index:
                continue  # compacted into a snapshot: only committed entries are compacted
            if log.term(index) != want_term:
                raise SafetyViolation(
                    f"leader completeness: node {node} leads term {term} without the {what} "
                    f"at index {index} (term {want_term}); its log has term {log.term(index)}"
                )

    def on_persist(self, node: int, entries: list[Entry], log: RaftLog) -> None:
        """Call after ``node`` durably appended ``entries`` (now part of ``log``)."""
        entry_at = self.entry_at
        for entry in entries:
            prev_term = log.term(entry.index - 1)
            if prev_term is None:
                continue
            key = (entry.index, entry.term)
            value = (entry.data, prev_term)
            seen = entry_at.get(key)
            if seen is None:
                entry_at[key] = value
            elif seen != value:
                raise SafetyViolation(
                    f"log matching: node {node} holds index {entry.index} term {entry.term} "
                    f"with data/prev-term {value}, another node with {seen}"
                )

    def on_apply(self, node: int, entry: Entry) -> None:
        """Call when ``node`` applies ``entry`` to its state machine."""
        value = (entry.term, entry.data)
        seen = self.committed.get(entry.index)
        if seen is None:
            self.committed[entry.index] = value
            if entry.index > self.max_committed:
                self.max_committed = entry.index
        elif seen != value:
            raise SafetyViolation(
                f"state machine safety: node {node} applied {value} at index {entry.index}, "
                f"another node applied {seen}"
            )

    def on_acknowledged(self, index: int, term: int, data: bytes) -> None:
        """A client was told its proposal committed at ``index``."""
        self.acked[index] = (term, data)
        if index > self.max_acked:
            self.max_acked = index

    def on_read(self, node: int, read_index: int, needed: int) -> None:
        """A read released at ``read_index`` must cover the ``needed`` acknowledged index."""
        if read_index < needed:
            raise SafetyViolation(
                f"linearizable read: node {node} released read index {read_index}, but index "
                f"{needed} was acknowledged before the read was asked"
            )
