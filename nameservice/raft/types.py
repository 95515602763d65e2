"""Value types shared by the Raft core and the code that drives it.

Everything here is plain data: no behaviour beyond trivial helpers, so the storage layer,
the transport codec and the simulator can all use these types without pulling in the core.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from nameservice.raft.messages import Message

NodeId = int
"""Identifies a member of the cluster. Ids are positive; 0 means "nobody" (no vote, no leader)."""

NONE: NodeId = 0


class Entry(NamedTuple):
    """One log entry. ``data`` is opaque to the core; an empty ``data`` is a leader's no-op."""

    term: int
    index: int  # type: ignore[assignment]  # the field shadows tuple.index on purpose
    data: bytes


class HardState(NamedTuple):
    """State that must be on disk before any message that depends on it is sent."""

    term: int = 0
    vote: NodeId = NONE
    commit: int = 0


class SnapshotMeta(NamedTuple):
    """Where a snapshot sits in the log and which voters the cluster had at that point."""

    index: int = 0  # type: ignore[assignment]  # the field shadows tuple.index on purpose
    term: int = 0
    voters: tuple[NodeId, ...] = ()


class Snapshot(NamedTuple):
    """A state-machine image covering every entry up to ``meta.index``."""

    meta: SnapshotMeta = SnapshotMeta()
    data: bytes = b""


class ReadState(NamedTuple):
    """A released ReadIndex request: serve ``ctx`` once the applied index reaches ``index``."""

    index: int  # type: ignore[assignment]  # the field shadows tuple.index on purpose
    ctx: bytes


class Role(str, enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(slots=True)
class Ready:
    """What the driver must do, in this order, before calling ``RaftCore.advance``.

    0. ``early_messages`` may be sent at once, while step 1 is still under way: they are a
       leader's or candidate's requests, which stay safe even if this node crashes before its
       own writes land (the core counts its own vote and its own log copy only once
       ``advance`` confirms they are durable — Raft dissertation §10.2.1).
    1. Persist ``snapshot`` (if any), then ``entries`` (appending, replacing any suffix from
       the first entry's index on), then ``hard_state`` (if not None), durably.
    2. Send ``messages`` — only after step 1 is durable (votes and acknowledgements).
    3. Install ``snapshot`` into the state machine, then apply ``committed`` in order
       (entries with empty data are a leader's no-ops: skip them).
    4. Serve ``read_states`` once the applied index reaches each one's index.
    """

    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    snapshot: Snapshot | None = None
    committed: list[Entry] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    early_messages: list[Message] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)
    role_changed: bool = False

    def __bool__(self) -> bool:
        return bool(
            self.hard_state is not None
            or self.entries
            or self.snapshot is not None
            or self.committed
            or self.messages
            or self.early_messages
            or self.read_states
            or self.role_changed
        )


@dataclass(slots=True)
class Config:
    """Tunables of one node. Times are in ticks; the driver decides how long a tick is.

    The election timeout of a follower is drawn uniformly from
    [election_timeout_min, election_timeout_max] each time its timer resets.
    """

    id: NodeId
    voters: tuple[NodeId, ...]
    election_timeout_min: int = 10
    election_timeout_max: int = 20
    heartbeat_interval: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    # After a failed (split or rejected) election a candidate waits this many extra timeouts,
    # drawn at random, before trying again: the back-off against repeated split votes.
    # 0 turns it off (the algorithm of the Raft paper).
    split_vote_backoff: bool = True
    # A node that grants a PreVote restarts its own election timer (once per term), so the
    # node that timed out first usually runs alone. False: the behaviour of the Raft paper.
    defer_to_pre_candidate: bool = True
    max_entries_per_message: int = 4096
    max_bytes_per_message: int = 1 << 20
    max_inflight_messages: int = 256
    max_pending_reads: int = 4096
    max_uncommitted_entries: int = 1 << 20

    def validate(self) -> None:
        if self.id <= 0:
            raise ValueError(f"node id must be positive, got {self.id}")
        if self.id not in self.voters:
            raise ValueError(f"node {self.id} is not among the voters {self.voters}")
        if len(set(self.voters)) != len(self.voters) or any(v <= 0 for v in self.voters):
            raise ValueError(f"voters must be distinct positive ids, got {self.voters}")
        if not 0 < self.heartbeat_interval < self.election_timeout_min:
            raise ValueError("heartbeat interval must be positive and below the election timeout")
        if self.election_timeout_max < self.election_timeout_min:
            raise ValueError("election_timeout_max must be >= election_timeout_min")
