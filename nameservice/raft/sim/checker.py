"""Safety invariants of Raft, checked incrementally while a simulation runs.

Election Safety     at most one leader per term; no node votes twice in a term; a leader was
                    voted in by a majority of the voters of its configuration.
Commit quorum       when a leader's commit index moves, the entry there is on the disks of a
                    majority of the voters of the leader's configuration.
Log Matching        two logs holding an entry with the same index and term hold the same
                    entry there and agree on everything before it (checked inductively: same
                    data and same term of the previous entry).
Leader Completeness a node that becomes leader of term t holds every entry committed in an
                    earlier term, and every proposal acknowledged to a client before.
State Machine Safety no two nodes apply different entries at the same index.
Read linearizability a released ReadIndex point covers every write acknowledged before the
                    read was requested.

The configuration a check uses is worked out here, not asked of the core: the newest
configuration entry in the leader's log, else the newest *committed* one at or below the
log's snapshot (every committed entry passes through ``on_apply``), else the initial voters.
Every property holds across configuration changes: terms are global, so Election Safety is
checked per term whatever the configurations of the nodes involved.
"""
from __future__ import annotations

import bisect
from typing import Callable

from nameservice.raft.log import RaftLog
from nameservice.raft.membership import RESERVED_PREFIX, conf_of
from nameservice.raft.types import ConfState, Entry, HardState


class SafetyViolation(AssertionError):
    """A Raft safety property was broken; the message says which and where."""


class SafetyChecker:
    """Accumulates what every node persisted, applied and acknowledged, and checks it."""

    def __init__(self, initial_voters: tuple[int, ...] = ()) -> None:
        self.initial = ConfState(tuple(sorted(initial_voters)), ())
        # (term, node) -> the vote that node made durable in that term.
        self.votes: dict[tuple[int, int], int] = {}
        # Committed configuration entries, by index: [index], [configuration].
        self.conf_indexes: list[int] = []
        self.conf_states: list[ConfState] = []
        # (leader, term) -> (last index scanned, configuration in force there).
        self._leader_conf: dict[tuple[int, int], tuple[int, ConfState]] = {}
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

    # ------------------------------------------------------------------ configurations

    def committed_conf_at(self, index: int) -> ConfState:
        """The configuration in force at ``index``, from committed entries alone."""
        at = bisect.bisect_right(self.conf_indexes, index)
        return self.conf_states[at - 1] if at else self.initial

    def leader_conf(self, node: int, term: int, log: RaftLog) -> ConfState:
        """The configuration in force on leader ``node`` of ``term``, read from its log."""
        key = (node, term)
        last = log.last_index()
        first = log.first_index
        entries = log.entries
        cached = self._leader_conf.get(key)
        if cached is not None and first - 1 <= cached[0] <= last:
            scanned, state = cached
            for i in range(scanned + 1, last + 1):
                data = entries[i - first].data
                if data[:1] == RESERVED_PREFIX:
                    found = conf_of(data)
                    if found is not None:
                        state = found
        else:
            for entry in reversed(entries):
                if entry.data[:1] == RESERVED_PREFIX:
                    found = conf_of(entry.data)
                    if found is not None:
                        state = found
                        break
            else:
                state = self.committed_conf_at(log.snapshot.meta.index)
        self._leader_conf[key] = (last, state)
        return state

    def on_hard_state(self, node: int, hs: HardState) -> None:
        """Call when ``node`` made ``hs`` durable."""
        if hs.vote:
            seen = self.votes.setdefault((hs.term, node), hs.vote)
            if seen != hs.vote:
                raise SafetyViolation(
                    f"election safety: node {node} voted for {seen} and {hs.vote} in term "
                    f"{hs.term}"
                )

    def on_leader_commit(
        self, node: int, term: int, log: RaftLog, holds: Callable[[int, int, int], bool]
    ) -> None:
        """Call when leader ``node`` of ``term`` moved its commit index; ``holds(voter, index,
        term)`` says whether a node's disk holds an entry."""
        state = self.leader_conf(node, term, log)
        index = log.committed
        entry_term = log.term(index)
        assert entry_term is not None, "a leader's commit index is within its log"
        holders = [v for v in state.voters if holds(v, index, entry_term)]
        if len(holders) < len(state.voters) // 2 + 1:
            raise SafetyViolation(
                f"commit quorum: leader {node} of term {term} committed index {index}, held only "
                f"by {holders} of the voters {state.voters}"
            )

    # ------------------------------------------------------------------ leaders

    def election_conf(self, term: int, log: RaftLog) -> ConfState:
        """The configuration a candidate of ``term`` counted votes in: its log then held no
        entry of ``term`` (a leader may have appended some since, changes among them)."""
        for entry in reversed(log.entries):
            if entry.term < term and entry.data[:1] == RESERVED_PREFIX:
                found = conf_of(entry.data)
                if found is not None:
                    return found
        return self.committed_conf_at(log.snapshot.meta.index)

    def on_became_leader(self, node: int, term: int, log: RaftLog) -> None:
        """Call once when ``node`` has just won the election of ``term``."""
        self.on_leader(node, term, log)
        state = self.election_conf(term, log)
        granted = [v for v in state.voters if self.votes.get((term, v)) == node]
        if len(granted) < len(state.voters) // 2 + 1:
            raise SafetyViolation(
                f"election quorum: node {node} leads term {term} with durable votes from "
                f"{granted} only, of the voters {state.voters}"
            )
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
            if entry.data[:1] == RESERVED_PREFIX:
                state = conf_of(entry.data)
                if state is not None:
                    at = bisect.bisect_left(self.conf_indexes, entry.index)
                    self.conf_indexes.insert(at, entry.index)
                    self.conf_states.insert(at, state)
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
