"""The Ready pipeline: persist → send → apply.

Each step turns the collected input into proposals and a read request, saves the core's next
Ready and syncs it (in the worker thread, or inline), sends its messages once durable, applies
committed entries (answering their writers and releasing waiting reads), and advances the core.
Snapshots are written and the log compacted in the worker thread.

A mixin of :class:`nameservice.server.node.Node`; the state it uses is created there.
"""
from __future__ import annotations

import asyncio
import time

from nameservice.kv import DecodeError as KvDecodeError
from nameservice.kv import LeaseGrantResult
from nameservice.kv.codec import result_to_wire
from nameservice.raft.types import Ready, Role, Snapshot, SnapshotMeta
from nameservice import wire

_TIMER_SLACK_S = 0.0002  # wake just after a tick boundary, never just before it


class ReadyPipeline:
    """Saving, syncing, sending and applying the Raft core's Readies (group commit)."""

    def _after_input(self) -> None:
        """Turn collected input into proposals and reads; send; start the next write."""
        core = self.core
        if self.stale.has_waiting:
            self.stale.flush(self._reply)
        if self._wires:
            self._propose()
        if self._reads:
            self._start_read()
        while True:
            ready = core.has_ready()  # on a leader this also queues the AppendRequests due
            self._send_messages(core.early_messages())
            self._check_leader()
            if self._syncing:
                self._apply_committed_early()
            if self._syncing or not ready or self._fatal is not None:
                break
            rd = core.ready()
            self.counters["readies"] += 1
            self._send_messages(rd.early_messages)
            if rd.snapshot is None:
                # Committed entries are on a quorum's disks already: apply (and answer) them
                # now, while this node's own write of the Ready is still under way.
                self._apply(rd)
            if rd.snapshot is not None or rd.entries or rd.hard_state is not None:
                try:
                    needs_sync = self._needs_sync(rd)
                    self.storage.save(rd)
                except Exception as exc:  # a storage failure: the node must restart
                    self._die(exc)
                    return
                if not needs_sync:
                    self._finish(rd)
                    continue
                self.counters["syncs"] += 1
                self._flush_output()  # early messages and replies leave before the fsync
                if self._sync_mode == "inline" or (
                        self._sync_mode == "auto" and core.role is not Role.LEADER):
                    started = time.monotonic()
                    try:
                        self.storage.sync()
                    except Exception as exc:
                        self._die(exc)
                        return
                    # The logical clock stands still while the loop is blocked in its own
                    # fsync: a stalled disk must not make this node time out the leader whose
                    # heartbeats are waiting in its socket. (A slower clock is always safe.)
                    self._start += time.monotonic() - started
                    self._finish(rd)
                    continue
                self._syncing = True
                future = self._loop.run_in_executor(self._executor, self.storage.sync)
                future.add_done_callback(lambda f, rd=rd: self._sync_done(f, rd))
                break
            self._finish(rd)
        self._flush_output()
        if self._timer is not None:
            due = self._start + (self._ticks + self.core.ticks_until_due()) * self._tick_s
            if due < self._timer_at - 1e-6:
                self._timer.cancel()
                self._timer_at = due
                self._timer = self._loop.call_at(
                    self._loop.time() + max(0.0, due - time.monotonic()) + _TIMER_SLACK_S,
                    self._on_tick)

    def _needs_sync(self, rd: Ready) -> bool:
        """Whether the Ready's messages must wait for an fsync.

        Only entries, snapshots, term and vote gate messages (acknowledgements, votes). A
        Ready that only moves the commit index needs none: the commit index is not needed for
        safety (a restarted node learns it again from the leader), so it is buffered and rides
        with the next sync instead of costing an fsync of its own.
        """
        if rd.entries or rd.snapshot is not None:
            return True
        hs, saved = rd.hard_state, self.storage.hard_state
        return hs is not None and (hs.term != saved.term or hs.vote != saved.vote)

    def _sync_done(self, future: asyncio.Future, rd: Ready) -> None:
        self._syncing = False
        if self._fatal is not None or self._shut_down:
            return
        exc = future.exception()
        if exc is not None:
            self._die(exc)
            return
        self._finish(rd)
        self._after_input()

    def _finish(self, rd: Ready) -> None:
        """The Ready's writes are durable: send its messages, install its snapshot, advance."""
        self._send_messages(rd.messages)
        if rd.snapshot is not None:
            try:
                self.machine.restore(rd.snapshot.data)
            except KvDecodeError as exc:  # the leader's own snapshot: nothing safe to do
                self._die(exc)
                return
            self.counters["snapshots_installed"] += 1
            self.watches.on_restore()
            self._fail_all_proposed()
            self._apply(rd)
        self.core.advance(rd)
        if self.storage.should_snapshot(self.machine.applied_index):
            self._take_snapshot()

    def _apply(self, rd: Ready) -> None:
        """Apply the Ready's committed entries, answer their writers, serve released reads."""
        self._apply_entries(rd.committed)
        for rs in rd.read_states:
            group = self._read_groups.pop(rs.ctx, None)
            if group is not None:
                self._reads_waiting.append((rs.index, group[1]))
        self._release_reads()

    def _apply_committed_early(self) -> None:
        """Apply entries committed since the last Ready without waiting for the next one (which
        may only come after the fsync or compaction under way) — on a leader and on a follower.

        Safe because a committed entry is on a quorum's disks and never changes: the core's
        in-memory log holds it whether or not this node's own write of it is done. The next
        Ready lists them again; they are skipped as already applied. A snapshot being installed
        (the log starts past the applied index) is left to its Ready.
        """
        log = self.core.log
        applied = self.machine.applied_index
        commit = log.committed
        first = log.first_index
        if commit <= applied or applied + 1 < first:
            return
        self._apply_entries(log.entries[applied + 1 - first:commit + 1 - first])
        self._release_reads()

    def _apply_entries(self, entries: list) -> None:
        machine = self.machine
        proposed = self._proposed
        for entry in entries:
            index = entry.index
            if index <= machine.applied_index:
                continue
            mine = proposed.pop(index, None) if proposed else None
            # Our proposal is still the entry at its index (the same bytes: an entry another
            # leader wrote there with the same bytes holds the same requests, same answers).
            if mine is not None and (mine[0] is entry.data or mine[0] == entry.data):
                applied = machine.apply(index, mine[1])
                if self.leases.active:
                    self._note_grants(applied.results)
                waiters = mine[2]
                self._pending_writes -= len(waiters)
                reply = self._reply
                for (identity, rid), result in zip(waiters, applied.results):
                    reply(identity, rid, wire.ST_OK, result_to_wire(result))
            else:
                applied = machine.apply_entry(index, entry.data)
                if self.leases.active:
                    self._note_grants(applied.results)
                if mine is not None:  # our entry was replaced by another leader's
                    self._fail_waiters(mine[2], wire.ST_NOT_LEADER, self._leader_address())
            self.watches.on_events(applied.events)

    def _note_grants(self, results) -> None:
        now = time.monotonic()
        for result in results:
            if type(result) is LeaseGrantResult:
                self.leases.granted(result.id, result.ttl_ms, now)

    def _take_snapshot(self) -> None:
        """Snapshot the state machine here; write it and compact the log in the worker thread.

        The write takes several fsyncs; on the loop thread a slow disk would stall heartbeats
        and cost the leadership. Until it is done no Ready is started (``_syncing``) and no
        entry is read from the storage, which is being compacted.
        """
        index = self.machine.applied_index
        meta = SnapshotMeta(index, self.core.log.term(index), self.core.voters)
        snapshot = Snapshot(meta, self.machine.snapshot())
        self._syncing = self._compacting = True
        future = self._loop.run_in_executor(self._executor, self.storage.compact, snapshot)
        future.add_done_callback(lambda f: self._compacted(f, snapshot))

    def _compacted(self, future: asyncio.Future, snapshot: Snapshot) -> None:
        self._syncing = self._compacting = False
        if self._fatal is not None or self._shut_down:
            return
        exc = future.exception()
        if exc is not None:
            self._die(exc)
            return
        self.core.compact(snapshot)
        self.counters["snapshots"] += 1
        self._after_input()
