"""Cheap structural checks on peer messages, so the core never trips over bad input.

The wire codec already guarantees field types; these checks cover what a well-typed but
wrong message could still get wrong: addressing, negative numbers, and entries that do not
follow ``prev_index`` or carry a term newer than the message, and terms beyond ``MAX_TERM``.
"""
from __future__ import annotations

from typing import Any, Callable, cast

from nameservice.raft import messages as msg
from nameservice.raft.types import MAX_TERM, Entry, Snapshot


def _nonneg_ints(*values: object) -> bool:
    for v in values:
        if type(v) is not int or v < 0:
            return False
    return True


def _entries_ok(m: msg.AppendRequest) -> bool:
    entries = m.entries
    if type(entries) is not tuple:
        return False
    if not entries:
        return True
    first, last = entries[0], entries[-1]
    if type(first) is not Entry or type(last) is not Entry:
        return False
    return (
        first.index == m.prev_index + 1
        and last.index == m.prev_index + len(entries)
        and first.term >= m.prev_term
        and last.term <= m.term
        and last.term >= first.term
    )


def is_valid(m: object, self_id: int) -> bool:
    """Whether ``m`` is a known message, addressed to us by another node, with sane fields.

    The sender need not be in our configuration: members change, and a node must hear a
    leader its log does not know of yet (a learner added, a voter promoted after our log).
    """
    t = type(m)
    if t not in _CHECKS:
        return False
    m = cast(msg.Message, m)  # its exact type is one of the messages
    frm = m.frm
    if m.to != self_id or type(frm) is not int or frm <= 0 or frm == self_id:
        return False
    if type(m.term) is not int or not 0 <= m.term <= MAX_TERM:
        return False
    return _CHECKS[t](m)


def _snapshot_ok(m: msg.SnapshotRequest) -> bool:
    s = m.snapshot
    return (
        type(s) is Snapshot
        and _nonneg_ints(s.meta.index, s.meta.term)
        and s.meta.term <= m.term
        and isinstance(s.meta.voters, tuple)
        and isinstance(s.meta.learners, tuple)
        and isinstance(s.data, bytes)
    )


# Each check is given a message of exactly the type it is filed under.
_CHECKS: dict[type, Callable[[Any], bool]] = {
    # A candidate's log holds no entry of a term after the one it campaigns in.
    msg.VoteRequest: lambda m: (
        _nonneg_ints(m.last_index, m.last_term) and m.term > 0 and m.last_term <= m.term
    ),
    msg.VoteResponse: lambda m: type(m.granted) is bool,
    msg.AppendRequest: lambda m: (
        _nonneg_ints(m.prev_index, m.prev_term, m.commit) and m.prev_term <= m.term
        and _entries_ok(m)
    ),
    msg.AppendResponse: lambda m: (
        _nonneg_ints(m.index, m.hint_index, m.hint_term) and m.hint_term <= MAX_TERM
    ),
    msg.Heartbeat: lambda m: _nonneg_ints(m.commit) and type(m.ctx) is bytes,
    msg.HeartbeatResponse: lambda m: type(m.ctx) is bytes,
    msg.SnapshotRequest: _snapshot_ok,
    msg.TimeoutNow: lambda m: True,
    msg.ReadIndexRequest: lambda m: type(m.ctx) is bytes and len(m.ctx) > 0,
    msg.ReadIndexResponse: lambda m: _nonneg_ints(m.index) and type(m.ctx) is bytes,
}
