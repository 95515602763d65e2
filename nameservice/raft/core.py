"""The Raft consensus core as a pure state machine (sans-IO).

Theory of operation
-------------------
``RaftCore`` holds one node's Raft state and changes it only in response to four inputs:

    step(message)              a message from a peer (never raises on bad input: counted, dropped)
    tick(n=1)                  n units of logical time passed
    propose(data) / propose_batch(datas)      leader only: append client commands
    propose_conf_change(change)               leader only: add a learner, promote, remove
    read_index(ctx)            ask for a linearizable read point
    transfer_leadership(to)    leader only: hand over to ``to``

It has no clock, no sockets, no disk and no threads; its only randomness comes from the
``random.Random`` it is given. After any inputs the driver calls ``ready()``, carries out the
returned ``Ready`` (persist, then send, then apply; see ``types.Ready``), and calls
``advance(ready)``. At most one Ready is outstanding, but inputs may keep coming while its
writes are under way (a driver fsyncs in the background and keeps serving); messages they
produce that are safe to send early are available at once from ``early_messages()``.
Writes must complete in the order the Readies were handed out.

Roles are follower, pre-candidate, candidate and leader (Raft §5, plus the PreVote phase of
Ongaro's dissertation §9.6). The extensions implemented: randomized election timeouts, PreVote,
CheckQuorum with leader leases (a leader that has not heard from a quorum within an election
timeout steps down; a follower that has heard from a leader within the minimum election timeout
ignores votes), fast log backtracking by term, commit of current-term entries only, ReadIndex,
snapshots (InstallSnapshot), leadership transfer (TimeoutNow), batching of proposals and of
entries per AppendRequest, a back-off against repeated split votes, and membership changes one
server at a time with learners (see ``membership.py``).

Membership: the configuration in force is that of the newest configuration entry in the log
(committed or not; the snapshot's if none). Only voters campaign and count in quorums (votes,
commit, CheckQuorum, ReadIndex); learners receive the log. A vote request from a node outside
this node's configuration whose log is behind ours is ignored before its term is looked at, so
a removed server cannot raise the term of a member that knows of its removal. A leader that
removed itself keeps leading until the removal commits, then hands over (TimeoutNow to its most
up-to-date voter) and steps down.
"""
from __future__ import annotations

import random
from typing import Sequence

from nameservice.raft import messages as msg
from nameservice.raft.errors import NotLeader, ProposalDropped
from nameservice.raft.leader import LeaderMixin
from nameservice.raft.log import RaftLog, empty_snapshot
from nameservice.raft.membership import ConfTracker, any_reserved
from nameservice.raft.progress import SNAPSHOT, Progress
from nameservice.raft.reads import PendingReads
from nameservice.raft.types import (
    MAX_TERM,
    NONE,
    Config,
    ConfState,
    Entry,
    HardState,
    ReadState,
    Ready,
    Role,
    Snapshot,
    SnapshotMeta,
    Status,
)
from nameservice.raft.validate import is_valid

# Requests a leader or candidate may send before its own writes are durable (see Ready).
_EARLY = frozenset(
    {msg.AppendRequest, msg.Heartbeat, msg.SnapshotRequest, msg.TimeoutNow, msg.VoteRequest}
)
# Acknowledgements that promise nothing about this node's disk: they may leave at once, so a
# follower busy writing still confirms its leader (quorum check, ReadIndex). Only once their term
# is durable, though: a term is never announced before it is on disk.
_EARLY_ACKS = frozenset({msg.HeartbeatResponse, msg.ReadIndexResponse})

FOLLOWER = Role.FOLLOWER
PRE_CANDIDATE = Role.PRE_CANDIDATE
CANDIDATE = Role.CANDIDATE
LEADER = Role.LEADER


class RaftCore(LeaderMixin):
    """One node's Raft state machine. See the module docstring for the contract."""

    def __init__(
        self,
        config: Config,
        rng: random.Random,
        hard_state: HardState = HardState(),
        snapshot: Snapshot | None = None,
        entries: list[Entry] | None = None,
    ):
        config.validate()
        self.config = config
        self.id = config.id
        self.rng = rng
        if snapshot is None or snapshot.meta.index == 0:
            if not (snapshot and snapshot.meta.voters):
                snapshot = empty_snapshot(config.voters, config.learners)
        meta = snapshot.meta
        if meta.voters:
            base = ConfState(tuple(sorted(meta.voters)), tuple(sorted(meta.learners)))
        else:
            base = ConfState(tuple(sorted(config.voters)), tuple(sorted(config.learners)))
        self.log = RaftLog(snapshot, entries)
        # The configuration is rebuilt from storage: the snapshot's, then the log's entries.
        self.conf = ConfTracker(base, meta.index)
        self.conf.observe(self.log.entries)
        self.voters: tuple[int, ...] = ()
        self.learners: tuple[int, ...] = ()
        self.peers: tuple[int, ...] = ()  # the voters other than this node
        self._voter_set: frozenset[int] = frozenset()
        self._members: frozenset[int] = frozenset()
        self.quorum = 1
        self._set_conf(self.conf.current)
        if hard_state.commit > self.log.last_index():
            raise ValueError(
                f"hard state commit {hard_state.commit} is beyond the last log index "
                f"{self.log.last_index()}"
            )
        self.log.commit_to(hard_state.commit)
        self.term = hard_state.term
        self.vote = hard_state.vote
        self.leader = NONE
        self.role = FOLLOWER
        self.counters: dict[str, int] = {
            "dropped_invalid": 0,
            "dropped_stale": 0,
            "ignored_non_member": 0,
            "ignored_behind": 0,
            "term_at_bound": 0,
        }
        # Leader only: every other member, and removed ones until their removal commits.
        self.progress: dict[int, Progress] = {}
        self._departing: set[int] = set()
        self._leaving = False
        self._conf_changed = False
        self.transferee = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_timeout = config.election_timeout_min
        self.failed_campaigns = 0
        self._deferred_for = 0
        self._votes: dict[int, bool] = {}
        self._msgs: list[msg.Message] = []
        self._early: list[msg.Message] = []
        self._read_states: list[ReadState] = []
        self._reads = PendingReads(config.max_pending_reads)
        self._dirty: set[int] = set()
        self._pending_snapshot: Snapshot | None = None
        self._role_changed = False
        self._persisted_hard_state = HardState(self.term, self.vote, self.log.committed)
        self._outstanding: Ready | None = None
        self._become_follower(self.term, NONE)
        self._randomize_timeout()

    # ------------------------------------------------------------------ public queries

    @property
    def last_index(self) -> int:
        return self.log.last_index()

    @property
    def commit_index(self) -> int:
        return self.log.committed

    @property
    def applied_index(self) -> int:
        return self.log.applied

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    @property
    def conf_state(self) -> ConfState:
        """The configuration in force (Ready.conf_state reports each change of it)."""
        return ConfState(self.voters, self.learners)

    @property
    def is_voter(self) -> bool:
        return self.id in self._voter_set

    def status(self) -> Status:
        """A snapshot of this node's view; on a leader, with every other member's progress."""
        progress = self._peer_statuses() if self.role is LEADER else {}
        conf_index = self.conf.last_index
        return Status(
            id=self.id,
            role=self.role,
            term=self.term,
            leader=self.leader,
            commit=self.log.committed,
            applied=self.log.applied,
            last_index=self.log.last_index(),
            voters=self.voters,
            learners=self.learners,
            pending_conf_index=conf_index if conf_index > self.log.committed else 0,
            progress=progress,
        )

    def snapshot_meta(self, index: int) -> SnapshotMeta:
        """The meta of a snapshot of the state at ``index``: its term and the configuration in
        force at that point (which may be older than the newest one in the log)."""
        term = self.log.term(index)
        if term is None:
            raise ValueError(f"no log entry at index {index} to take a snapshot at")
        state = self.conf.at(index)
        return SnapshotMeta(index, term, state.voters, state.learners)

    # ------------------------------------------------------------------ inputs

    def tick(self, n: int = 1) -> None:
        """Let ``n`` ticks pass; exactly equivalent to ``n`` calls of ``tick()``."""
        while n > 0:
            due = self.ticks_until_due()
            k = n if n < due else due
            self.election_elapsed += k
            self.heartbeat_elapsed += k
            if self.role is not LEADER:
                self.heartbeat_elapsed = 0
            n -= k
            if k == due:
                self._on_timer()

    def ticks_until_due(self) -> int:
        """How many ticks may pass before the next one that does something (at least 1)."""
        if self.role is LEADER:
            due = min(
                self.config.heartbeat_interval - self.heartbeat_elapsed,
                self.config.election_timeout_min - self.election_elapsed,
            )
        else:
            due = self.randomized_timeout - self.election_elapsed
        return due if due > 1 else 1

    def step(self, m: msg.Message) -> None:
        """Feed one message from a peer. Malformed, misaddressed or unknown input is dropped."""
        if not is_valid(m, self.id):
            self.counters["dropped_invalid"] += 1
            return
        if (
            type(m) is msg.VoteRequest
            and m.frm not in self._members
            and not self.log.is_up_to_date(m.last_index, m.last_term)
        ):
            # A server our configuration does not know, with a log behind ours: a removed one
            # (its log lacks its removal, which ours holds) still campaigning. Neither its term
            # nor its request may reach our state (Raft dissertation §4.2.3). A server added
            # after our log ends has a log ahead of ours, and is heard.
            self.counters["ignored_non_member"] += 1
            return
        if m.term > self.term:
            if isinstance(m, msg.VoteRequest):
                if not self.log.is_up_to_date(m.last_index, m.last_term):
                    # It cannot win our vote, so its term must not reach us either: a node with
                    # a stale log (or a forged request) would otherwise depose a live leader
                    # and raise the term with each attempt. Nodes that can win learn the higher
                    # term from our answers to their own requests, and then win.
                    self.counters["ignored_behind"] += 1
                    return
                in_lease = (
                    self.config.check_quorum
                    and self.leader != NONE
                    and self.election_elapsed < self.config.election_timeout_min
                )
                # A transfer comes from our leader's TimeoutNow: its target campaigns in the
                # term after the leader's, which is ours while the lease holds.
                if in_lease and not (m.transfer and m.term == self.term + 1):
                    self.counters["dropped_stale"] += 1
                    return
                if not m.pre_vote:
                    self._become_follower(m.term, NONE)
            elif isinstance(m, msg.VoteResponse) and m.pre_vote and m.granted:
                pass  # a granted PreVote carries the term we would campaign in
            elif isinstance(m, (msg.AppendRequest, msg.Heartbeat, msg.SnapshotRequest)):
                self._become_follower(m.term, m.frm)
            else:
                self._become_follower(m.term, NONE)
        elif m.term < self.term:
            if isinstance(m, (msg.AppendRequest, msg.Heartbeat)):
                # A stale leader: tell it our term so it steps down (needed with CheckQuorum and
                # PreVote, where our higher term would otherwise never reach it).
                self._send(msg.AppendResponse(self.id, m.frm, self.term, 0))
            elif isinstance(m, msg.VoteRequest):
                # Our term tells the candidate why it lost; it campaigns again above it.
                self._send(msg.VoteResponse(self.id, m.frm, self.term, False, m.pre_vote))
            else:
                self.counters["dropped_stale"] += 1
            return

        if isinstance(m, msg.VoteRequest):
            self._handle_vote_request(m)
        elif self.role is LEADER:
            self._step_leader(m)
        elif self.role is FOLLOWER:
            self._step_follower(m)
        else:
            self._step_candidate(m)

    def propose(self, data: bytes) -> int:
        """Append one command; returns its log index. Leader only."""
        return self.propose_batch((data,))

    def propose_batch(self, datas: Sequence[bytes]) -> int:
        """Append many commands at once; returns the index of the last one. Leader only.

        Raises NotLeader on a non-leader and ProposalDropped while a leadership transfer is
        under way or when the uncommitted tail would exceed ``max_uncommitted_entries``.
        Data starting with the byte 0x00 is reserved for the core (ValueError).
        """
        if self.role is not LEADER:
            raise NotLeader(self.leader)
        if self.transferee != NONE:
            raise ProposalDropped("leadership transfer in progress")
        if any_reserved(datas):
            raise ValueError("entry data starting with byte 0x00 is reserved for the core")
        log = self.log
        first = log.last_index() + 1
        if first - 1 - log.committed + len(datas) > self.config.max_uncommitted_entries:
            raise ProposalDropped("too many uncommitted entries")
        term = self.term
        log.append([Entry(term, first + i, d) for i, d in enumerate(datas)])
        if self.quorum == 1:
            self._maybe_commit()
        self._dirty.update(self.progress)
        return log.last_index()

    def read_index(self, ctx: bytes) -> bool:
        """Ask for a linearizable read point for ``ctx`` (unique per request).

        The answer comes later as a ``ReadState`` in a Ready. Returns False when the request
        was dropped at once (no leader known, or too many reads pending); the driver retries.
        """
        if not ctx:
            raise ValueError("a read context must be non-empty")
        if self.role is LEADER:
            return self._leader_read(ctx, self.id)
        if self.leader == NONE:
            return False
        self._send(msg.ReadIndexRequest(self.id, self.leader, self.term, ctx))
        return True

    def transfer_leadership(self, to: int) -> None:
        """Hand leadership to voter ``to``: catch it up, then tell it to campaign at once.

        Proposals are refused until the transfer ends; it is abandoned if it has not
        finished within one election timeout.
        """
        if self.role is not LEADER:
            raise NotLeader(self.leader)
        if to == self.id or to not in self._voter_set:
            raise ValueError(f"cannot transfer leadership to {to}: not another voter")
        if self.transferee == to:
            return
        self.transferee = to
        self.election_elapsed = 0
        if self.progress[to].match == self.log.last_index():
            self._send(msg.TimeoutNow(self.id, to, self.term))
        else:
            self._dirty.add(to)

    def compact(self, snapshot: Snapshot) -> None:
        """The driver took ``snapshot`` of its applied state: drop the log entries it covers.

        Its meta must carry the configuration in force at its index (``snapshot_meta``).
        """
        meta = snapshot.meta
        if meta.index > self.log.snapshot.meta.index:
            want = self.conf.at(meta.index)
            if (tuple(sorted(meta.voters)), tuple(sorted(meta.learners))) != want:
                raise ValueError(
                    f"snapshot at {meta.index} names voters {meta.voters} and learners "
                    f"{meta.learners}, but the configuration there is {want}"
                )
        self.log.compact(snapshot)
        self.conf.compact(self.log.snapshot.meta.index)

    def campaign(self) -> None:
        """Start an election now (as if the election timer had fired)."""
        if self.role is not LEADER:
            self._campaign(pre_vote=self.config.pre_vote, transfer=False)

    # ------------------------------------------------------------------ output

    def has_ready(self) -> bool:
        """Whether ``ready()`` would return anything."""
        if self.role is LEADER:
            self._flush()  # turns pending sends into messages, so the answer is exact
        log = self.log
        return bool(
            self._msgs
            or self._early
            or log.unstable_from <= log.last_index()
            or log.committed > log.applied
            or self._read_states
            or self._pending_snapshot is not None
            or self._role_changed
            or self._conf_changed
            or self.hard_state() != self._persisted_hard_state
        )

    def early_messages(self) -> list[msg.Message]:
        """Take the requests that may be sent now, even while a Ready is outstanding."""
        early, self._early = self._early, []
        return early

    def ready(self) -> Ready:
        """Collect what the driver must persist, send and apply. Call ``advance`` after."""
        self._check_not_outstanding()
        if self.role is LEADER:
            self._flush()
        log = self.log
        rd = Ready()
        hs = HardState(self.term, self.vote, log.committed)
        if hs != self._persisted_hard_state:
            rd.hard_state = hs
        if log.unstable_from <= log.last_index():
            rd.entries = log.unstable_entries()
        if self._pending_snapshot is not None:
            rd.snapshot = self._pending_snapshot
        rd.committed = log.next_committed()
        rd.messages = self._msgs
        self._msgs = []
        rd.early_messages = self._early
        self._early = []
        log.rewound_to = None
        rd.read_states = self._read_states
        self._read_states = []
        rd.role_changed = self._role_changed
        self._role_changed = False
        if self._conf_changed:
            rd.conf_state = self.conf_state
            self._conf_changed = False
        self._outstanding = rd
        return rd

    def advance(self, rd: Ready) -> None:
        """The driver persisted, sent and applied everything in ``rd``."""
        if rd is not self._outstanding:
            raise RuntimeError("advance() must be given the Ready returned by the last ready()")
        self._outstanding = None
        log = self.log
        if rd.hard_state is not None:
            self._persisted_hard_state = rd.hard_state
        if rd.snapshot is not None:
            log.applied = max(log.applied, rd.snapshot.meta.index)
            self._pending_snapshot = None
        if rd.entries:
            written_to = rd.entries[-1].index + 1
            if log.rewound_to is not None and log.rewound_to < written_to:
                # Part of what was just written has since been replaced: write it again.
                written_to = log.rewound_to
            # Entries below first_index are covered by a snapshot and need no write.
            log.unstable_from = max(log.first_index, written_to)
        if rd.committed:
            log.applied = rd.committed[-1].index
        # Our own vote and our own log copy count only once durable (see Ready).
        if self.role is CANDIDATE and self._self_vote_durable():
            if self._tally() >= self.quorum:
                self._become_leader()
        elif self.role is LEADER and rd.entries and self._maybe_commit():
            self._dirty.update(self.progress)

    # ------------------------------------------------------------------ role changes

    def _reset(self, term: int, restart_timer: bool = True) -> None:
        if term != self.term:
            self.term = term
            self.vote = NONE
        self.leader = NONE
        self.heartbeat_elapsed = 0
        if restart_timer:
            self.election_elapsed = 0
            self._randomize_timeout()
        self.transferee = NONE
        self._votes = {}
        self.progress = {}
        self._departing.clear()
        self._leaving = False
        self._dirty.clear()
        self._reads.clear()

    def _randomize_timeout(self) -> None:
        cfg = self.config
        timeout = self.rng.randint(cfg.election_timeout_min, cfg.election_timeout_max)
        if cfg.split_vote_backoff and self.failed_campaigns:
            # Each election this node started that produced no leader spreads its next timeout
            # wider, so nodes that keep splitting the vote drift apart.
            spread = cfg.election_timeout_min * min(self.failed_campaigns, 4) // 2
            timeout += self.rng.randint(0, spread)
        self.randomized_timeout = timeout

    def _set_role(self, role: Role) -> None:
        if role is not self.role:
            self.role = role
            self._role_changed = True

    def _become_follower(self, term: int, leader: int) -> None:
        # The election timer restarts only on news from a leader, or when this node was the
        # leader (its timer was measuring something else). A vote request with a higher term
        # must not restart it: otherwise a node that cannot win (its log is behind) would
        # delay, with every attempt, the nodes that can (as in the Raft paper's LogCabin).
        restart_timer = leader != NONE or self.role is LEADER
        if leader != NONE:
            self.failed_campaigns = 0
        self._reset(term, restart_timer)
        self.leader = leader
        self._set_role(FOLLOWER)

    def _become_leader(self) -> None:
        self.failed_campaigns = 0
        self._reset(self.term)
        self.leader = self.id
        self._set_role(LEADER)
        next_index = self.log.last_index() + 1
        for peer in self.voters + self.learners:
            if peer != self.id:
                self.progress[peer] = Progress(next_index, self.config.max_inflight_messages)
        # A no-op entry of the new term lets the leader commit (and so learn the commit index
        # of) everything earlier logs held (Raft §5.4.2, §8).
        self.log.append([Entry(self.term, next_index, b"")])
        if self.quorum == 1:
            self._maybe_commit()
        self._dirty.update(self.progress)

    def _campaign(self, pre_vote: bool, transfer: bool) -> None:
        if self.id not in self._voter_set or self.term >= MAX_TERM:
            # Learners, removed servers and nodes still joining never campaign; nor does a node
            # whose next term would be beyond the bound (no one would take its requests).
            if self.term >= MAX_TERM:
                self.counters["term_at_bound"] += 1
            self.election_elapsed = 0
            self._randomize_timeout()
            return
        if pre_vote:
            self._reset(self.term)
            self._set_role(PRE_CANDIDATE)
            vote_term = self.term + 1
        else:
            self.failed_campaigns += 1
            self._reset(self.term + 1)
            self.vote = self.id
            self._set_role(CANDIDATE)
            vote_term = self.term
        if self._tally() >= self.quorum:
            self._won_vote(pre_vote)
            return
        last_index, last_term = self.log.last_index(), self.log.last_term()
        for peer in self.peers:
            self._send(
                msg.VoteRequest(self.id, peer, vote_term, last_index, last_term, pre_vote, transfer)
            )

    def _self_vote_durable(self) -> bool:
        hs = self._persisted_hard_state
        return hs.term == self.term and hs.vote == self.id

    def _tally(self) -> int:
        granted = sum(1 for ok in self._votes.values() if ok)
        if self.role is PRE_CANDIDATE or self._self_vote_durable():
            granted += 1
        return granted

    def _won_vote(self, pre_vote: bool) -> None:
        if pre_vote:
            self._campaign(pre_vote=False, transfer=False)
        else:
            self._become_leader()

    def _on_timer(self) -> None:
        cfg = self.config
        if self.role is not LEADER:
            self._campaign(pre_vote=cfg.pre_vote, transfer=False)
            return
        if self.election_elapsed >= cfg.election_timeout_min:
            self.election_elapsed = 0
            if cfg.check_quorum and not self._quorum_active():
                self._become_follower(self.term, NONE)
                return
            self.transferee = NONE  # a transfer that has not finished by now is abandoned
        if self.heartbeat_elapsed >= cfg.heartbeat_interval:
            self.heartbeat_elapsed = 0
            self._broadcast_heartbeat(self._reads.last_ctx())
            for pr in self.progress.values():
                if pr.state == SNAPSHOT:
                    pr.snapshot_elapsed += cfg.heartbeat_interval

    def _quorum_active(self) -> bool:
        voters = self._voter_set
        active = 1 if self.id in voters else 0
        for peer, pr in self.progress.items():
            if pr.recent_active and peer in voters:
                active += 1
            pr.recent_active = False
        return active >= self.quorum

    # ------------------------------------------------------------------ vote handling

    def _handle_vote_request(self, m: msg.VoteRequest) -> None:
        can_vote = (
            self.vote == m.frm
            or (self.vote == NONE and self.leader == NONE)
            or (m.pre_vote and m.term > self.term)
        )
        if can_vote and self.log.is_up_to_date(m.last_index, m.last_term):
            self._send(msg.VoteResponse(self.id, m.frm, m.term, True, m.pre_vote))
            if not m.pre_vote:
                self.election_elapsed = 0
                self.vote = m.frm
            elif self.config.defer_to_pre_candidate and self._deferred_for != m.term:
                # Someone at least as fit as us is already campaigning: give it a clear run
                # instead of starting a competing campaign (a split vote) — once per term,
                # so a candidate that can send but never hears back cannot silence us forever.
                self._deferred_for = m.term
                self.election_elapsed = 0
                self.leader = NONE  # we no longer count on the old leader (and its lease)
        else:
            self._send(msg.VoteResponse(self.id, m.frm, self.term, False, m.pre_vote))

    def _step_candidate(self, m: msg.Message) -> None:
        if isinstance(m, (msg.AppendRequest, msg.Heartbeat, msg.SnapshotRequest)):
            self._become_follower(m.term, m.frm)
            self._step_follower(m)
        elif isinstance(m, msg.VoteResponse):
            pre = self.role is PRE_CANDIDATE
            if m.pre_vote != pre:
                self.counters["dropped_stale"] += 1
                return
            if pre and m.granted and m.term != self.term + 1:
                return
            if m.frm not in self._voter_set:
                return  # only voters count
            self._votes.setdefault(m.frm, m.granted)
            granted = self._tally()
            if granted >= self.quorum:
                self._won_vote(pre)
            elif sum(1 for ok in self._votes.values() if not ok) > len(self.voters) - self.quorum:
                self._become_follower(self.term, NONE)

    # ------------------------------------------------------------------ follower

    def _step_follower(self, m: msg.Message) -> None:
        if isinstance(m, msg.AppendRequest):
            self._heard_from_leader(m.frm)
            self._handle_append(m)
        elif isinstance(m, msg.Heartbeat):
            self._heard_from_leader(m.frm)
            self.log.commit_to(min(m.commit, self.log.last_index()))
            self._send(msg.HeartbeatResponse(self.id, m.frm, self.term, m.ctx))
        elif isinstance(m, msg.SnapshotRequest):
            self._heard_from_leader(m.frm)
            self._handle_snapshot(m)
        elif isinstance(m, msg.TimeoutNow):
            if m.frm == self.leader:
                self._campaign(pre_vote=False, transfer=True)
        elif isinstance(m, msg.ReadIndexResponse):
            if m.frm == self.leader:
                self._read_states.append(ReadState(m.index, m.ctx))
        else:
            self.counters["dropped_stale"] += 1

    def _heard_from_leader(self, leader: int) -> None:
        self.election_elapsed = 0
        self.leader = leader
        self.failed_campaigns = 0

    def _handle_append(self, m: msg.AppendRequest) -> None:
        log = self.log
        if m.prev_index < log.committed:
            self._send(msg.AppendResponse(self.id, m.frm, self.term, log.committed))
            return
        if log.matches(m.prev_index, m.prev_term):
            last_new = m.prev_index + len(m.entries)
            log.truncate_and_append(m.entries)
            if m.entries:
                self._track_conf(m.entries)
            log.commit_to(min(m.commit, last_new))
            self._send(msg.AppendResponse(self.id, m.frm, self.term, last_new))
            return
        hint_index, hint_term = log.find_conflict_by_term(
            min(m.prev_index, log.last_index()), m.prev_term
        )
        self._send(
            msg.AppendResponse(self.id, m.frm, self.term, m.prev_index, True, hint_index, hint_term)
        )

    def _handle_snapshot(self, m: msg.SnapshotRequest) -> None:
        log = self.log
        meta = m.snapshot.meta
        if meta.index <= log.committed:
            self._send(msg.AppendResponse(self.id, m.frm, self.term, log.committed))
            return
        if log.matches(meta.index, meta.term):
            # We already hold the snapshot's last entry: just fast-forward the commit index.
            log.commit_to(meta.index)
        else:
            log.restore(m.snapshot)
            self._pending_snapshot = m.snapshot
            self.conf.restore(
                ConfState(tuple(sorted(meta.voters)), tuple(sorted(meta.learners))), meta.index
            )
            self._refresh_conf()
        self._send(msg.AppendResponse(self.id, m.frm, self.term, log.last_index()))

    # ------------------------------------------------------------------ membership

    def _set_conf(self, state: ConfState) -> None:
        self.voters = state.voters
        self.learners = state.learners
        self._voter_set = frozenset(state.voters)
        self._members = self._voter_set.union(state.learners)
        self.peers = tuple(v for v in state.voters if v != self.id)
        self.quorum = len(state.voters) // 2 + 1

    def _track_conf(self, entries: tuple[Entry, ...]) -> None:
        """``entries`` are now in the log (maybe after replacing a suffix): follow the config."""
        conf = self.conf
        dropped = conf.forget_replaced(self.log.term) if conf.changes else False
        if conf.observe(entries) or dropped:
            self._refresh_conf()

    def _refresh_conf(self) -> None:
        state = self.conf.current
        if state.voters == self.voters and state.learners == self.learners:
            return
        self._set_conf(state)
        self._conf_changed = True
        if self.role is LEADER:
            self._leader_conf_changed()

    # ------------------------------------------------------------------ plumbing

    def _send(self, m: msg.Message) -> None:
        t = type(m)
        if t in _EARLY or (t in _EARLY_ACKS and m.term == self._persisted_hard_state.term):
            self._early.append(m)
        else:
            self._msgs.append(m)

    def _check_not_outstanding(self) -> None:
        if self._outstanding is not None:
            raise RuntimeError("a Ready is outstanding: call advance() before new input")
