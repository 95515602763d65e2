"""The leader's half of the Raft core: replication, commit, ReadIndex, heartbeats, and the
leader's part in membership changes (proposing them, tracking members, stepping down once its
own removal commits).

A mixin of ``RaftCore`` (it uses the core's state directly); kept apart so each file has one
concern: ``core.py`` decides roles and elections, this module runs the leader's duties.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from nameservice.raft import messages as msg
from nameservice.raft.errors import NotLeader, ProposalDropped
from nameservice.raft.membership import check_change, encode_conf_change
from nameservice.raft.progress import PROBE, REPLICATE, SNAPSHOT, Progress
from nameservice.raft.types import NONE, ConfChange, Entry, PeerStatus, ReadState, Role

_STATE_NAMES = {PROBE: "probe", REPLICATE: "replicate", SNAPSHOT: "snapshot"}

if TYPE_CHECKING:
    from nameservice.raft.log import RaftLog
    from nameservice.raft.membership import ConfTracker
    from nameservice.raft.reads import PendingReads
    from nameservice.raft.types import Config


class LeaderMixin:
    """Methods ``RaftCore`` runs while it is the leader."""

    if TYPE_CHECKING:
        # The state and helpers of RaftCore these methods use.
        config: Config
        id: int
        term: int
        role: Role
        leader: int
        quorum: int
        voters: tuple[int, ...]
        learners: tuple[int, ...]
        peers: tuple[int, ...]
        transferee: int
        log: RaftLog
        conf: ConfTracker
        progress: dict[int, Progress]
        counters: dict[str, int]
        _voter_set: frozenset[int]
        _departing: set[int]
        _leaving: bool
        _dirty: set[int]
        _reads: PendingReads
        _read_states: list[ReadState]

        def _send(self, m: msg.Message) -> None: ...

        def _refresh_conf(self) -> None: ...

        def _become_follower(self, term: int, leader: int) -> None: ...

    def propose_conf_change(self, change: ConfChange) -> int:
        """Append a configuration change; returns its log index. Leader only.

        It is in force at once (on every node, once in its log). Raises NotLeader on a
        non-leader, and ProposalDropped (with its reason) while this leader has not committed
        an entry of its own term, while another change is uncommitted, during a leadership
        transfer, for a change that does not fit the configuration (adding a member, promoting
        a non-learner, removing a non-member or the last voter), or for the promotion of a
        learner not caught up (``membership.check_change``).
        """
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader)
        if self.transferee != NONE:
            raise ProposalDropped("leadership transfer in progress")
        log = self.log
        last = log.last_index()
        pr = self.progress.get(change.node)
        try:
            state = check_change(
                self.conf,
                change,
                committed=log.committed,
                own_term_committed=self._committed_in_term(),
                last_index=last,
                learner_match=pr.match if pr is not None else 0,
                max_lag=self.config.max_promotion_lag,
            )
        except ValueError as exc:
            raise ProposalDropped(str(exc)) from None
        if last + 1 - log.committed > self.config.max_uncommitted_entries:
            raise ProposalDropped("too many uncommitted entries")
        entry = Entry(self.term, last + 1, encode_conf_change(change, state))
        log.append([entry])
        self.conf.observe((entry,))
        self._refresh_conf()
        self._dirty.update(self.progress)
        return entry.index

    def _step_leader(self, m: msg.Message) -> None:
        if isinstance(m, msg.AppendResponse):
            self._handle_append_response(m)
        elif isinstance(m, msg.HeartbeatResponse):
            pr = self.progress.get(m.frm)
            if pr is None:
                self.counters["dropped_stale"] += 1  # from a node no longer a member
                return
            pr.recent_active = True
            pr.probe_sent = False
            if pr.state == REPLICATE and len(pr.inflight) >= pr.max_inflight:
                pr.inflight.popleft()
            if pr.state == SNAPSHOT and pr.snapshot_elapsed >= self.config.election_timeout_min:
                pr.become_probe()  # the snapshot was probably lost: try again
            if pr.match < self.log.last_index():
                # Even with nothing new to send, an (empty) append re-checks where the follower
                # stands: an acknowledgement or a lost append would otherwise stall it forever.
                self._send_append(m.frm, pr, True)
            elif pr.sent_commit < self.log.committed:
                self._dirty.add(m.frm)
            if m.ctx:
                for read in self._reads.ack(m.ctx, m.frm, self._voter_set, self.quorum):
                    self._release_read(read.index, read.ctx, read.requester)
        elif isinstance(m, msg.ReadIndexRequest):
            if not self._leader_read(m.ctx, m.frm):
                self.counters["dropped_stale"] += 1
        else:
            self.counters["dropped_stale"] += 1

    def _handle_append_response(self, m: msg.AppendResponse) -> None:
        pr = self.progress.get(m.frm)
        if pr is None:
            self.counters["dropped_stale"] += 1  # from a node no longer a member
            return
        log = self.log
        if m.index > log.last_index():
            self.counters["dropped_invalid"] += 1  # acknowledges entries we never sent
            return
        pr.recent_active = True
        if m.reject:
            next_probe = m.hint_index
            if m.hint_term > 0:
                next_probe, _ = log.find_conflict_by_term(m.hint_index, m.hint_term)
            if pr.maybe_decrease_to(m.index, next_probe):
                if pr.state == REPLICATE:
                    pr.become_probe()
                self._dirty.add(m.frm)
            return
        was_paused = pr.is_paused()
        if not pr.maybe_update(m.index):
            if was_paused and not pr.is_paused():
                self._dirty.add(m.frm)
            return
        if pr.state == PROBE:
            pr.become_replicate()
        elif pr.state == SNAPSHOT and pr.match >= pr.pending_snapshot:
            pr.become_probe()
            pr.become_replicate()
        elif pr.state == REPLICATE:
            pr.free_inflight(m.index)
        if self._maybe_commit():
            self._dirty.update(self.progress)
        elif pr.match < log.last_index() or pr.sent_commit < log.committed:
            self._dirty.add(m.frm)
        if m.frm == self.transferee and pr.match == log.last_index():
            self._send(msg.TimeoutNow(self.id, m.frm, self.term))

    def _maybe_commit(self) -> bool:
        log = self.log
        voters = self._voter_set
        # Only voters of the configuration in force count; our own copy once it is on disk.
        matches = [pr.match for peer, pr in self.progress.items() if peer in voters]
        if self.id in voters:
            matches.append(log.unstable_from - 1)
        matches.sort()
        candidate = matches[len(matches) - self.quorum]
        # Only an entry of the current term is committed by counting replicas (Raft §5.4.2).
        if candidate > log.committed and log.term(candidate) == self.term:
            first_in_term = not self._committed_in_term()
            log.commit_to(candidate)
            if first_in_term:
                for read in self._reads.take_waiting():
                    self._leader_read(read.ctx, read.requester)
            if self.id not in voters and candidate >= self.conf.last_index:
                self._leaving = True  # our own removal committed: step down after this flush
            return True
        return False

    def _peer_statuses(self) -> dict[int, PeerStatus]:
        last = self.log.last_index()
        return {
            peer: PeerStatus(
                pr.match,
                pr.next,
                _STATE_NAMES[pr.state],
                last - pr.match,
                peer in self._voter_set,
                pr.recent_active,
            )
            for peer, pr in sorted(self.progress.items())
            if peer not in self._departing
        }

    def _step_down_removed(self) -> None:
        """This leader's own removal committed: hand over to the best voter and step down."""
        self._leaving = False
        last = self.log.last_index()
        best, best_match = NONE, -1
        for peer in self.peers:
            pr = self.progress.get(peer)
            if pr is not None and pr.match > best_match:
                best, best_match = peer, pr.match
        if best != NONE and best_match == last:
            self._send(msg.TimeoutNow(self.id, best, self.term))
        self._become_follower(self.term, NONE)

    def _leader_conf_changed(self) -> None:
        """The configuration in force changed: track new members, let removed ones go."""
        members = set(self.voters)
        members.update(self.learners)
        members.discard(self.id)
        for peer in self.progress:
            if peer not in members:
                # Keep sending to it until its removal commits, so it learns of it (and stops
                # campaigning) in the usual case; its answers count for nothing.
                self._departing.add(peer)
        next_index = self.log.last_index() + 1
        for peer in members:
            self._departing.discard(peer)
            if peer not in self.progress:
                self.progress[peer] = Progress(next_index, self.config.max_inflight_messages)
                self._dirty.add(peer)
        if self.transferee != NONE and self.transferee not in self._voter_set:
            self.transferee = NONE
        if self._maybe_commit():  # removing a lagging voter may commit at once
            self._dirty.update(self.progress)

    def _committed_in_term(self) -> bool:
        return self.log.term(self.log.committed) == self.term

    def _leader_read(self, ctx: bytes, requester: int) -> bool:
        if not self._committed_in_term():
            # Until an entry of this term commits, this leader may not know the latest commit.
            return self._reads.wait_for_commit(ctx, requester)
        voter = self.id in self._voter_set
        if voter and self.quorum == 1:
            self._release_read(self.log.committed, ctx, requester)
            return True
        return self._reads.add(self.log.committed, ctx, requester, self.id if voter else NONE)

    def _release_read(self, index: int, ctx: bytes, requester: int) -> None:
        if requester == self.id:
            self._read_states.append(ReadState(index, ctx))
        else:
            self._send(msg.ReadIndexResponse(self.id, requester, self.term, index, ctx))

    def _broadcast_heartbeat(self, ctx: bytes) -> None:
        committed = self.log.committed
        for peer, pr in self.progress.items():
            commit = pr.match if pr.match < committed else committed
            self._send(msg.Heartbeat(self.id, peer, self.term, commit, ctx))

    def _flush(self) -> None:
        """Send what proposals, acks and commits made due since the last Ready."""
        if self._reads.broadcast_needed:
            self._reads.broadcast_needed = False
            self._broadcast_heartbeat(self._reads.last_ctx())
        if self._dirty:
            for peer in self._dirty:
                pr = self.progress[peer]
                sent = self._send_append(peer, pr, pr.sent_commit < self.log.committed)
                while sent and pr.state == REPLICATE:
                    sent = self._send_append(peer, pr, False)
            self._dirty.clear()
        if self._departing and self.log.committed >= self.conf.last_index:
            committed = self.log.committed
            for peer in self._departing:  # their removal committed: say so once more, then go
                pr = self.progress.pop(peer)
                # A heartbeat is sent even when appends to the peer are paused, so that a
                # removed node holding its removal learns that it committed, and stops.
                self._send(msg.Heartbeat(self.id, peer, self.term, min(pr.match, committed),
                                         b""))
            self._departing.clear()
        if self._leaving:
            self._step_down_removed()

    def _send_append(self, peer: int, pr: Progress, allow_empty: bool) -> bool:
        if pr.is_paused():
            return False
        log = self.log
        prev_index = pr.next - 1
        prev_term = log.term(prev_index)
        if prev_term is None:
            if not pr.recent_active:
                return False
            snapshot = log.snapshot
            pr.become_snapshot(snapshot.meta.index)
            self._send(msg.SnapshotRequest(self.id, peer, self.term, snapshot))
            return False
        cfg = self.config
        entries = log.slice(
            pr.next, log.last_index() + 1, cfg.max_entries_per_message, cfg.max_bytes_per_message
        )
        if not entries and not allow_empty:
            return False
        committed = log.committed
        self._send(
            msg.AppendRequest(
                self.id, peer, self.term, prev_index, prev_term, tuple(entries), committed
            )
        )
        pr.sent_commit = committed
        if pr.state == REPLICATE:
            if entries:
                last = entries[-1].index
                pr.next = last + 1
                pr.inflight.append(last)
        else:
            pr.probe_sent = True
        return bool(entries)

