"""The messages Raft peers exchange, as plain frozen dataclasses.

Every message names its sender (``frm``), its receiver (``to``) and the sender's term. The
transport encodes them; the core consumes them through ``RaftCore.step``. ``MESSAGE_TYPES``
lists every type, in a fixed order the wire codec relies on.
"""
from __future__ import annotations

from dataclasses import dataclass

from nameservice.raft.types import Entry, Snapshot


@dataclass(frozen=True, slots=True)
class VoteRequest:
    """RequestVote, or a PreVote probe when ``pre_vote`` (the sender's term is not bumped yet).

    ``transfer`` is set when a leader asked the candidate to take over: voters then ignore
    their leader lease (CheckQuorum) for this request.
    """

    frm: int
    to: int
    term: int
    last_index: int
    last_term: int
    pre_vote: bool = False
    transfer: bool = False


@dataclass(frozen=True, slots=True)
class VoteResponse:
    frm: int
    to: int
    term: int
    granted: bool
    pre_vote: bool = False


@dataclass(frozen=True, slots=True)
class AppendRequest:
    """AppendEntries: ``entries`` follow the entry at (``prev_index``, ``prev_term``)."""

    frm: int
    to: int
    term: int
    prev_index: int
    prev_term: int
    entries: tuple[Entry, ...]
    commit: int


@dataclass(frozen=True, slots=True)
class AppendResponse:
    """Reply to AppendRequest or SnapshotRequest.

    On success ``index`` is the last index the follower now matches. On rejection ``index`` is
    the rejected ``prev_index`` and (``hint_index``, ``hint_term``) point at the last entry of
    the follower's log that may still match, so the leader skips a whole term per round trip.
    """

    frm: int
    to: int
    term: int
    index: int
    reject: bool = False
    hint_index: int = 0
    hint_term: int = 0


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Keeps followers from campaigning; ``ctx`` carries a pending ReadIndex round, if any."""

    frm: int
    to: int
    term: int
    commit: int
    ctx: bytes = b""


@dataclass(frozen=True, slots=True)
class HeartbeatResponse:
    frm: int
    to: int
    term: int
    ctx: bytes = b""


@dataclass(frozen=True, slots=True)
class SnapshotRequest:
    """InstallSnapshot: the whole snapshot in one message (the name service's state is small)."""

    frm: int
    to: int
    term: int
    snapshot: Snapshot


@dataclass(frozen=True, slots=True)
class TimeoutNow:
    """Sent by a leader handing over: the receiver campaigns at once, skipping PreVote."""

    frm: int
    to: int
    term: int


@dataclass(frozen=True, slots=True)
class ReadIndexRequest:
    """A follower forwards a ReadIndex request to its leader."""

    frm: int
    to: int
    term: int
    ctx: bytes


@dataclass(frozen=True, slots=True)
class ReadIndexResponse:
    """The leader's answer: the read for ``ctx`` may be served once ``index`` is applied."""

    frm: int
    to: int
    term: int
    index: int
    ctx: bytes


Message = (
    VoteRequest
    | VoteResponse
    | AppendRequest
    | AppendResponse
    | Heartbeat
    | HeartbeatResponse
    | SnapshotRequest
    | TimeoutNow
    | ReadIndexRequest
    | ReadIndexResponse
)

MESSAGE_TYPES: tuple[type, ...] = (
    VoteRequest,
    VoteResponse,
    AppendRequest,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
    SnapshotRequest,
    TimeoutNow,
    ReadIndexRequest,
    ReadIndexResponse,
)
