"""The leader's half of the Raft core: replication, commit, ReadIndex and heartbeats.

A mixin of ``RaftCore`` (it uses the core's state directly); kept apart so each file has one
concern: ``core.py`` decides roles and elections, this module runs the leader's duties.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from nameservice.raft import messages as msg
from nameservice.raft.progress import PROBE, REPLICATE, SNAPSHOT, Progress
from nameservice.raft.types import ReadState

if TYPE_CHECKING:
    from nameservice.raft.log import RaftLog
    from nameservice.raft.reads import PendingReads
    from nameservice.raft.types import Config


class LeaderMixin:
    """Methods ``RaftCore`` runs while it is the leader."""

    if TYPE_CHECKING:
        # The state and helpers of RaftCore these methods use.
        config: Config
        id: int
        term: int
        quorum: int
        peers: tuple[int, ...]
        transferee: int
        log: RaftLog
        progress: dict[int, Progress]
        counters: dict[str, int]
        _dirty: set[int]
        _reads: PendingReads
        _read_states: list[ReadState]

        def _send(self, m: msg.Message) -> None: ...

    def _step_leader(self, m: msg.Message) -> None:
        if isinstance(m, msg.AppendResponse):
            self._handle_append_response(m)
        elif isinstance(m, msg.HeartbeatResponse):
            pr = self.progress[m.frm]
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
                for read in self._reads.ack(m.ctx, m.frm, self.quorum):
                    self._release_read(read.index, read.ctx, read.requester)
        elif isinstance(m, msg.ReadIndexRequest):
            if not self._leader_read(m.ctx, m.frm):
                self.counters["dropped_stale"] += 1
        else:
            self.counters["dropped_stale"] += 1

    def _handle_append_response(self, m: msg.AppendResponse) -> None:
        pr = self.progress[m.frm]
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
            self._dirty.update(self.peers)
        elif pr.match < log.last_index() or pr.sent_commit < log.committed:
            self._dirty.add(m.frm)
        if m.frm == self.transferee and pr.match == log.last_index():
            self._send(msg.TimeoutNow(self.id, m.frm, self.term))

    def _maybe_commit(self) -> bool:
        log = self.log
        durable = log.unstable_from - 1  # our own copy counts once it is on disk
        matches = sorted([pr.match for pr in self.progress.values()] + [durable])
        candidate = matches[len(matches) - self.quorum]
        # Only an entry of the current term is committed by counting replicas (Raft §5.4.2).
        if candidate > log.committed and log.term(candidate) == self.term:
            first_in_term = not self._committed_in_term()
            log.commit_to(candidate)
            if first_in_term:
                for read in self._reads.take_waiting():
                    self._leader_read(read.ctx, read.requester)
            return True
        return False

    def _committed_in_term(self) -> bool:
        return self.log.term(self.log.committed) == self.term

    def _leader_read(self, ctx: bytes, requester: int) -> bool:
        if not self._committed_in_term():
            # Until an entry of this term commits, this leader may not know the latest commit.
            return self._reads.wait_for_commit(ctx, requester)
        if self.quorum == 1:
            self._release_read(self.log.committed, ctx, requester)
            return True
        return self._reads.add(self.log.committed, ctx, requester, self.id)

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
        if not self._dirty:
            return
        for peer in self._dirty:
            pr = self.progress[peer]
            sent = self._send_append(peer, pr, pr.sent_commit < self.log.committed)
            while sent and pr.state == REPLICATE:
                sent = self._send_append(peer, pr, False)
        self._dirty.clear()

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

