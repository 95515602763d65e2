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

MAX_TERM = 1 << 62
"""The highest term a node takes from a message or reaches itself. A message carrying a larger
term is malformed (counted, dropped). Why 2**62: ``term + 1`` (the term a node campaigns in)
always fits the non-negative 64-bit integers of the wire, and no honest cluster gets near it
(an election every millisecond would take 146 million years). A node at this term does not
campaign; see docs/raft.md ("Terms and votes that cannot win")."""


class Entry(NamedTuple):
    """One log entry. ``data`` is opaque to the core, with two exceptions: an empty ``data`` is
    a leader's no-op, and ``data`` starting with the byte 0x00 belongs to the core (a
    configuration change, see ``nameservice.raft.membership``); clients never propose either.
    """

    term: int
    index: int  # type: ignore[assignment]  # the field shadows tuple.index on purpose
    data: bytes


class HardState(NamedTuple):
    """State that must be on disk before any message that depends on it is sent."""

    term: int = 0
    vote: NodeId = NONE
    commit: int = 0


class SnapshotMeta(NamedTuple):
    """Where a snapshot sits in the log and the configuration in force at that point.

    ``voters`` and ``learners`` are the configuration as of the entry at ``index`` (not the
    newest one in the log): ``RaftCore.snapshot_meta(index)`` builds it.
    """

    index: int = 0  # type: ignore[assignment]  # the field shadows tuple.index on purpose
    term: int = 0
    voters: tuple[NodeId, ...] = ()
    learners: tuple[NodeId, ...] = ()


class Snapshot(NamedTuple):
    """A state-machine image covering every entry up to ``meta.index``."""

    meta: SnapshotMeta = SnapshotMeta()
    data: bytes = b""


class ReadState(NamedTuple):
    """A released ReadIndex request: serve ``ctx`` once the applied index reaches ``index``."""

    index: int  # type: ignore[assignment]  # the field shadows tuple.index on purpose
    ctx: bytes


class ConfState(NamedTuple):
    """A cluster configuration: who votes and who only follows the log. Both sorted."""

    voters: tuple[NodeId, ...] = ()
    learners: tuple[NodeId, ...] = ()


class ChangeKind(enum.IntEnum):
    """What a configuration change does to one node."""

    ADD_LEARNER = 1  # a new member that receives the log but does not vote
    PROMOTE = 2  # a caught-up learner becomes a voter
    REMOVE = 3  # a voter or learner leaves the cluster


class ConfChange(NamedTuple):
    """One single-server configuration change, proposed with ``RaftCore.propose_conf_change``."""

    kind: ChangeKind
    node: NodeId


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

    ``conf_state`` (when not None) is the configuration now in force: it changed since the last
    Ready, by a configuration entry appended, received, installed with a snapshot or rolled
    back with a replaced log suffix. Connect to its members; a removed member should be
    disconnected once its removal is in ``committed`` (before that it may still be rolled
    back). Committed configuration entries are in ``committed`` like any other: the state
    machine skips them (``membership.is_conf_change(entry.data)``).
    """

    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    snapshot: Snapshot | None = None
    committed: list[Entry] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    early_messages: list[Message] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)
    role_changed: bool = False
    conf_state: ConfState | None = None

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
            or self.conf_state is not None
        )


@dataclass(frozen=True, slots=True)
class PeerStatus:
    """What a leader knows of one other member (see ``RaftCore.status``).

    ``lag`` is how many entries the member's log is behind the leader's last index; a learner
    may be promoted once ``lag <= Config.max_promotion_lag``.
    """

    match: int
    next: int
    state: str  # "probe", "replicate" or "snapshot"
    lag: int
    voter: bool
    recent_active: bool


@dataclass(frozen=True, slots=True)
class Status:
    """A read-only view of one node, for operators and for a driver deciding on promotions."""

    id: NodeId
    role: Role
    term: int
    leader: NodeId
    commit: int
    applied: int
    last_index: int
    voters: tuple[NodeId, ...]
    learners: tuple[NodeId, ...]
    # Index of the newest configuration entry while it is uncommitted, else 0.
    pending_conf_index: int
    # Leader only: every other member (voters and learners); empty on other roles.
    progress: dict[NodeId, PeerStatus] = field(default_factory=dict)


@dataclass(slots=True)
class Config:
    """Tunables of one node. Times are in ticks; the driver decides how long a tick is.

    The election timeout of a follower is drawn uniformly from
    [election_timeout_min, election_timeout_max] each time its timer resets.

    ``voters`` and ``learners`` are the cluster's *initial* configuration, used only while the
    node's storage holds none (a snapshot's meta or a configuration entry overrides them). A
    node joining an existing cluster starts with both empty: it neither votes nor campaigns
    until the leader's log (or snapshot) tells it the configuration.
    """

    id: NodeId
    voters: tuple[NodeId, ...]
    learners: tuple[NodeId, ...] = ()
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
    # A learner may be promoted only while its log is at most this many entries behind the
    # leader's (a voter that cannot keep up would cost the cluster its availability).
    max_promotion_lag: int = 64

    def validate(self) -> None:
        if self.id <= 0:
            raise ValueError(f"node id must be positive, got {self.id}")
        members = self.voters + self.learners
        if members and self.id not in members:
            raise ValueError(
                f"node {self.id} is not among the voters {self.voters} or learners "
                f"{self.learners}"
            )
        if len(set(members)) != len(members) or any(v <= 0 for v in members):
            raise ValueError(
                f"voters and learners must be distinct positive ids, got {self.voters} and "
                f"{self.learners}"
            )
        if self.learners and not self.voters:
            raise ValueError("a configuration with learners needs at least one voter")
        if self.max_promotion_lag < 0:
            raise ValueError("max_promotion_lag must be >= 0")
        if not 0 < self.heartbeat_interval < self.election_timeout_min:
            raise ValueError("heartbeat interval must be positive and below the election timeout")
        if self.election_timeout_max < self.election_timeout_min:
            raise ValueError("election_timeout_max must be >= election_timeout_min")
