"""Cluster membership: configuration entries, their encoding, and where they are in the log.

Theory of operation
-------------------
The configuration changes one server at a time (Raft dissertation, chapter 4): add a learner,
promote a learner to voter, or remove a member. Any majority of a configuration and any
majority of the next one then share a server, so the two can never decide apart.

A change is a log entry of its own, and it takes effect on a server as soon as the entry is in
its log — appended by the leader, received by a follower, or brought by a snapshot — whether
committed or not. A replaced log suffix takes its configuration entries with it: the
configuration falls back to the newest one left. So the configuration of a node is always a
function of its log, which is what lets a restarted node rebuild it from storage alone.

The leader accepts a change only when

* it has committed an entry of its own term (without this rule a leader elected with an
  uncommitted change in another leader's log could commit a different change, and two
  configurations could each form a majority: Ongaro, raft-dev, 2015), and
* no other change is pending: the newest configuration entry is committed.

Entry encoding
--------------
A configuration entry's data starts with the byte 0x00 — a byte no client command starts with
(the key-value commands start with their format version, 1; an empty entry is a no-op) — then
``b"C"``, a version byte (1), and big-endian integers::

    00 43 01 | kind u8 | node u64 | n u16 | n voters u64 | m u16 | m learners u64

It carries the change *and* the whole configuration that results, so the newest
configuration entry alone says what is in force (no replay from the start of the log).
"""
from __future__ import annotations

import struct
from operator import itemgetter
from typing import Callable, Iterable, Sequence

from nameservice.raft.types import ChangeKind, ConfChange, ConfState, Entry, NodeId

CONF_CHANGE_PREFIX = b"\x00C\x01"
"""The first bytes of every configuration entry's data."""
RESERVED_PREFIX = b"\x00"
"""Entry data starting with this byte belongs to the core; clients cannot propose it."""

_DATA = itemgetter(2)  # Entry.data
_HEAD = struct.Struct(">BQH")
_ID = struct.Struct(">Q")
_COUNT = struct.Struct(">H")


def any_reserved(datas: Sequence[bytes]) -> bool:
    """Whether any of ``datas`` starts with the reserved byte (a scan in C, not in Python)."""
    if not datas:
        return False
    low = min(datas)  # a reserved datum sorts before all others, but after b""
    if low[:1] == RESERVED_PREFIX:
        return True
    return not low and any(d[:1] == RESERVED_PREFIX for d in datas)


def is_conf_change(data: bytes) -> bool:
    """Whether an entry's data is a configuration entry (the state machine skips those)."""
    return data[:3] == CONF_CHANGE_PREFIX


def encode_conf_change(change: ConfChange, state: ConfState) -> bytes:
    """The entry data for ``change``, which leads to configuration ``state``."""
    parts = [CONF_CHANGE_PREFIX, _HEAD.pack(int(change.kind), change.node, len(state.voters))]
    parts.extend(_ID.pack(v) for v in state.voters)
    parts.append(_COUNT.pack(len(state.learners)))
    parts.extend(_ID.pack(v) for v in state.learners)
    return b"".join(parts)


def decode_conf_change(data: bytes) -> tuple[ConfChange, ConfState]:
    """The change and the resulting configuration of a configuration entry.

    Raises ValueError when ``data`` is not a well-formed configuration entry.
    """
    if not is_conf_change(data):
        raise ValueError("not a configuration entry")
    try:
        offset = len(CONF_CHANGE_PREFIX)
        kind, node, n = _HEAD.unpack_from(data, offset)
        offset += _HEAD.size
        voters = tuple(_ID.unpack_from(data, offset + 8 * i)[0] for i in range(n))
        offset += 8 * n
        (m,) = _COUNT.unpack_from(data, offset)
        offset += _COUNT.size
        learners = tuple(_ID.unpack_from(data, offset + 8 * i)[0] for i in range(m))
        offset += 8 * m
    except struct.error as exc:
        raise ValueError(f"truncated configuration entry: {exc}") from exc
    if offset != len(data):
        raise ValueError("trailing bytes after a configuration entry")
    state = ConfState(voters, learners)
    members = voters + learners
    if (
        state != _canonical(voters, learners)
        or not voters
        or 0 in members
        or len(set(members)) != len(members)
    ):
        raise ValueError(f"malformed configuration {state}")
    return ConfChange(ChangeKind(kind), node), state


def conf_of(data: bytes) -> ConfState | None:
    """The configuration an entry's data puts in force, or None for any other entry.

    Data with the configuration prefix that does not decode is *not* a configuration entry:
    every node reads the same bytes the same way, so they all agree to ignore it.
    """
    if data[:3] != CONF_CHANGE_PREFIX:
        return None
    try:
        return decode_conf_change(data)[1]
    except ValueError:
        return None


def _canonical(voters: Iterable[NodeId], learners: Iterable[NodeId]) -> ConfState:
    return ConfState(tuple(sorted(voters)), tuple(sorted(learners)))


def apply_change(state: ConfState, change: ConfChange) -> ConfState:
    """The configuration ``change`` leads to from ``state``; ValueError(reason) if invalid."""
    node = change.node
    voters, learners = set(state.voters), set(state.learners)
    if type(node) is not int or node <= 0:
        raise ValueError(f"node ids are positive integers, got {node!r}")
    if change.kind is ChangeKind.ADD_LEARNER:
        if node in voters or node in learners:
            raise ValueError(f"node {node} is already a member")
        learners.add(node)
    elif change.kind is ChangeKind.PROMOTE:
        if node not in learners:
            raise ValueError(f"node {node} is not a learner")
        learners.discard(node)
        voters.add(node)
    elif change.kind is ChangeKind.REMOVE:
        if node in voters:
            if len(voters) == 1:
                raise ValueError(f"node {node} is the last voter")
            voters.discard(node)
        elif node in learners:
            learners.discard(node)
        else:
            raise ValueError(f"node {node} is not a member")
    else:
        raise ValueError(f"unknown change {change.kind!r}")
    return _canonical(voters, learners)


class ConfTracker:
    """The configuration entries of a node's log, newest last, over the snapshot's configuration.

    ``current`` is the configuration in force: that of the newest configuration entry, or the
    snapshot's when the log holds none.
    """

    __slots__ = ("base", "base_index", "changes")

    def __init__(self, base: ConfState, base_index: int = 0):
        self.base = base
        self.base_index = base_index
        # (index, term, configuration) of every configuration entry after base_index.
        self.changes: list[tuple[int, int, ConfState]] = []

    @property
    def current(self) -> ConfState:
        return self.changes[-1][2] if self.changes else self.base

    @property
    def last_index(self) -> int:
        """Index of the newest configuration entry still in the log (0: none after the snapshot)."""
        return self.changes[-1][0] if self.changes else 0

    def at(self, index: int) -> ConfState:
        """The configuration in force once the log ended at ``index`` (>= the snapshot's)."""
        for change_index, _, state in reversed(self.changes):
            if change_index <= index:
                return state
        return self.base

    def removed(self, node: NodeId, index: int) -> bool:
        """Whether the configuration in force at ``index`` is one that took ``node`` out: it
        is not a member of it, and was of the configuration before it. (A node that learns the
        log from a snapshot older than its own addition is not a member of the snapshot's
        configuration either, but was never removed.)"""
        states = [self.base] + [state for at, _, state in self.changes if at <= index]
        if len(states) < 2:
            return False
        now, before = states[-1], states[-2]
        return node not in now.voters + now.learners and node in before.voters + before.learners

    def observe(self, entries: Sequence[Entry]) -> bool:
        """Note the configuration entries among ``entries``, now in the log. True if any was new.

        Entries at or below the newest noted one are already known (same index and term mean
        same entry) and skipped.
        """
        if not entries:
            return False
        low = min(map(_DATA, entries))  # a configuration entry's data sorts first, after b""
        if low and low[:1] != RESERVED_PREFIX:
            return False
        after = self.changes[-1][0] if self.changes else self.base_index
        found = False
        for entry in entries:
            data = entry.data
            if data[:1] == RESERVED_PREFIX and entry.index > after:
                state = conf_of(data)
                if state is not None:
                    self.changes.append((entry.index, entry.term, state))
                    after = entry.index
                    found = True
        return found

    def forget_replaced(self, term_at: Callable[[int], int | None]) -> bool:
        """Drop configuration entries the log no longer holds (a replaced suffix). True if any."""
        changes = self.changes
        dropped = False
        while changes and term_at(changes[-1][0]) != changes[-1][1]:
            changes.pop()
            dropped = True
        return dropped

    def restore(self, base: ConfState, base_index: int) -> None:
        """The log was replaced by a snapshot at ``base_index`` carrying configuration ``base``."""
        self.base = base
        self.base_index = base_index
        self.changes = []

    def compact(self, index: int) -> None:
        """The log before ``index`` (inclusive) was compacted into a snapshot."""
        if index <= self.base_index:
            return
        self.base = self.at(index)
        self.base_index = index
        self.changes = [c for c in self.changes if c[0] > index]


def check_change(
    tracker: ConfTracker,
    change: ConfChange,
    *,
    committed: int,
    own_term_committed: bool,
    last_index: int,
    learner_match: int,
    max_lag: int,
) -> ConfState:
    """The configuration a leader's proposed ``change`` leads to; ValueError(reason) if the
    leader must refuse it now (the rules in the module docstring).

    ``learner_match`` is how far the node's log matches the leader's (for a promotion): a
    learner is caught up when at most ``max_lag`` entries behind ``last_index`` and holding the
    newest configuration entry (so it knows whom to vote for).
    """
    if not own_term_committed:
        # Without this rule, a change left uncommitted by a deposed leader and a different
        # change by this one could each gather a majority.
        raise ValueError("the leader has not committed an entry of its term yet")
    pending = tracker.last_index
    if pending > committed:
        raise ValueError(f"the configuration change at index {pending} is not committed yet")
    state = apply_change(tracker.current, change)
    if change.kind is ChangeKind.PROMOTE:
        lag = last_index - learner_match
        if lag > max_lag or learner_match < pending:
            raise ValueError(
                f"learner {change.node} is not caught up: {lag} entries behind the leader (at "
                f"most {max_lag}, and holding the configuration entry at index {pending})"
            )
    return state
