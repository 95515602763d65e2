"""The Ready pipeline: persist → send → apply → advance, with group commit.

``step()`` runs after every batch of input. It loops over the core's Readies:

1. ``core.has_ready()`` (on a leader this also queues the AppendRequests due), the early
   messages sent at once, then ``after_core_step()`` (the node notices leader changes);
2. if no sync is running: ``ready()``; its committed entries are applied and answered at once
   (they are on a quorum's disks already, so this need not wait for our own write) — except
   when the fsync runs inline, where they are applied once the Ready's messages have left;
   its snapshot, entries and hard state saved;
3. the sync: in the fsync worker thread (``sync_mode`` "thread", and "auto" on a leader) — the
   loop goes back to receiving and, when it completes, the Ready is finished and ``resume()``
   runs the next step, whose Ready holds everything that arrived meanwhile (group commit); or
   inline on the loop thread ("inline", and "auto" on a follower), the clock paused meanwhile
   (``pause_clock``);
4. finishing a durable Ready: its messages sent, its snapshot installed (``EntryApplier.restore``),
   the core advanced, and a snapshot taken if the storage says so.

A Ready that only moves the commit index needs no fsync (``needs_sync``). While a sync or a
compaction runs, entries committed meanwhile are applied straight from the core's in-memory
log (``_apply_committed_early``). Snapshots are written and the log compacted in the worker
thread; until that is done no Ready is started.

A storage failure is fatal: ``failed`` holds it and ``on_fatal`` is told; the node stops.

``fsync_latency``: the seconds each ``storage.sync()`` took, inline or in the worker thread.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Protocol, Sequence

from nameservice.errors import DecodeError
from nameservice.metrics import Buckets
from nameservice.raft.core import RaftCore
from nameservice.raft.types import Entry, ReadState, Ready, Role, Snapshot
from nameservice.storage import RaftStorage

__all__ = ["EntryApplier", "ReadyPipeline", "SYNC_MODES", "SnapshottedMachine"]

SYNC_MODES = ("thread", "inline", "auto")
SNAPSHOT_RETRY_ENTRIES = 1000
"""After a snapshot of the state failed, entries applied before the next try."""

log = logging.getLogger(__name__)


class SnapshottedMachine(Protocol):
    """What the pipeline needs of a state machine: how far it has applied, and its state as
    bytes (the name service's key-value machine; a stateful component's replica machine)."""

    @property
    def applied_index(self) -> int:
        """The index of the last entry applied."""
        ...

    def snapshot(self) -> bytes:
        """The whole state, as bytes ``restore`` takes back."""
        ...


class EntryApplier(Protocol):
    """Where committed entries go, and snapshots are installed (``server.apply.Applier``)."""

    def apply(self, entries: Sequence[Entry], read_states: Sequence[ReadState] = ()) -> None:
        """Apply committed entries (skipping those applied already)."""
        ...

    def restore(self, data: bytes) -> None:
        """Replace the state with a snapshot's (``DecodeError`` if it is damaged)."""
        ...


class ReadyPipeline:
    """Saving, syncing, sending and applying the Raft core's Readies (see module docstring).

    Callbacks: ``send(messages)`` queues Raft messages; ``flush()`` sends what the step
    queued; ``after_core_step()`` runs after each ``has_ready``; ``resume()`` runs the node's
    next step once a sync or compaction in the worker thread is done; ``pause_clock(s)`` stops
    the logical clock for an inline fsync; ``on_fatal(exc)`` is told of a storage failure.
    """

    def __init__(self, core: RaftCore, storage: RaftStorage, machine: SnapshottedMachine,
                 applier: EntryApplier, *, sync_mode: str, send: Callable[[list], None],
                 flush: Callable[[], None], after_core_step: Callable[[], None],
                 resume: Callable[[], None], pause_clock: Callable[[float], None],
                 on_fatal: Callable[[BaseException], None]) -> None:
        if sync_mode not in SYNC_MODES:
            raise ValueError(f"unknown sync mode {sync_mode!r}")
        self._core = core
        self._storage = storage
        self._machine = machine
        self._applier = applier
        self.sync_mode = sync_mode
        self._send = send
        self._flush = flush
        self._after_core_step = after_core_step
        self._resume = resume
        self._pause_clock = pause_clock
        self._on_fatal = on_fatal
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._syncing = False  # a sync or a compaction runs in the worker thread
        self._closed = False
        self.failed: BaseException | None = None
        """The storage failure that stopped the pipeline, if any."""
        self.counters = {"readies": 0, "syncs": 0, "snapshots": 0, "snapshots_installed": 0,
                         "snapshot_failures": 0}
        self._snapshot_failed_at = -SNAPSHOT_RETRY_ENTRIES
        self.fsync_latency = Buckets()
        """Seconds per ``storage.sync()``."""

    @property
    def syncing(self) -> bool:
        """Whether a sync or a compaction runs in the worker thread."""
        return self._syncing

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the fsync worker thread; syncs and compactions complete on ``loop``."""
        self._loop = loop
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="ns-fsync")

    def stop(self) -> None:
        """From now on, what the worker thread completes is dropped (the node stops)."""
        self._closed = True

    def close(self) -> None:
        """Stop, and wait for the worker thread to end."""
        self._closed = True
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    # ------------------------------------------------------------------ the step

    def step(self) -> None:
        """Send, save and apply whatever the core has ready (see module docstring)."""
        core = self._core
        while True:
            ready = core.has_ready()  # on a leader this also queues the AppendRequests due
            self._send(core.early_messages())
            self._after_core_step()
            if self._syncing:
                self._apply_committed_early()
            if self._syncing or not ready or self.failed is not None:
                break
            rd = core.ready()
            self.counters["readies"] += 1
            self._send(rd.early_messages)
            needs_sync = self.needs_sync(rd)
            inline = needs_sync and (self.sync_mode == "inline" or (
                self.sync_mode == "auto" and core.role is not Role.LEADER))
            if rd.snapshot is None and not inline:
                # Committed entries are on a quorum's disks already: apply (and answer) them
                # now, while this node's own write of the Ready is still under way.
                self._applier.apply(rd.committed, rd.read_states)
            if rd.snapshot is None and not rd.entries and rd.hard_state is None:
                self._finish(rd)
                continue
            try:
                self._storage.save(rd)
            except Exception as exc:  # a storage failure: the node must restart
                self._die(exc)
                return
            if not needs_sync:
                self._finish(rd)
                continue
            self.counters["syncs"] += 1
            self._flush()  # early messages and replies leave before the fsync
            if inline:
                if not self._sync_inline():
                    return
                # The loop waited for the fsync: its acknowledgements leave first, and the
                # committed entries are applied after (a follower's apply would delay the
                # leader's commit otherwise).
                self._finish(rd, apply_after_send=True)
                continue
            self._syncing = True
            assert self._loop is not None  # steps run only after start()
            future = self._loop.run_in_executor(self._executor, self._timed_sync)
            future.add_done_callback(functools.partial(self._sync_done, rd=rd))
            break
        self._flush()

    def needs_sync(self, rd: Ready) -> bool:
        """Whether the Ready's messages must wait for an fsync.

        Only entries, snapshots, term and vote gate messages (acknowledgements, votes). A
        Ready that only moves the commit index needs none: the commit index is not needed for
        safety (a restarted node learns it again from the leader), so it is buffered and rides
        with the next sync instead of costing an fsync of its own.
        """
        if rd.entries or rd.snapshot is not None:
            return True
        hs, saved = rd.hard_state, self._storage.hard_state
        return hs is not None and (hs.term != saved.term or hs.vote != saved.vote)

    def _timed_sync(self) -> float:
        """``storage.sync()`` (in the worker thread); the seconds it took."""
        started = time.monotonic()
        self._storage.sync()
        return time.monotonic() - started

    def _sync_inline(self) -> bool:
        started = time.monotonic()
        try:
            self._storage.sync()
        except Exception as exc:
            self._die(exc)
            return False
        elapsed = time.monotonic() - started
        self.fsync_latency.observe(elapsed)
        # The logical clock stands still while the loop is blocked in its own fsync: a stalled
        # disk must not make this node time out the leader whose heartbeats are waiting in its
        # socket. (A slower clock is always safe.)
        self._pause_clock(elapsed)
        return True

    def _sync_done(self, future: asyncio.Future, rd: Ready) -> None:
        self._syncing = False
        if self.failed is not None or self._closed:
            return
        exc = future.exception()
        if exc is not None:
            self._die(exc)
            return
        self.fsync_latency.observe(future.result())
        self._finish(rd)
        self._resume()

    def _finish(self, rd: Ready, apply_after_send: bool = False) -> None:
        """The Ready's writes are durable: send its messages, install its snapshot (or, with
        ``apply_after_send``, apply its committed entries once the messages are out),
        advance."""
        self._send(rd.messages)
        if apply_after_send and rd.snapshot is None:
            self._flush()
            self._applier.apply(rd.committed, rd.read_states)
        if rd.snapshot is not None:
            try:
                self._applier.restore(rd.snapshot.data)
            except DecodeError as exc:  # the leader's own snapshot: nothing safe to do
                self._die(exc)
                return
            self.counters["snapshots_installed"] += 1
            self._applier.apply(rd.committed, rd.read_states)
        self._core.advance(rd)
        applied = self._machine.applied_index
        # Entries applied early (committed, their commit not saved yet) wait for a later Ready:
        # the storage takes a snapshot only up to the commit index it holds.
        if applied <= self._storage.hard_state.commit and self._storage.should_snapshot(applied):
            self._take_snapshot()

    def _apply_committed_early(self) -> None:
        """Apply entries committed since the last Ready without waiting for the next one (which
        may only come after the fsync or compaction under way) — on a leader and on a follower.

        Safe because a committed entry is on a quorum's disks and never changes: the core's
        in-memory log holds it whether or not this node's own write of it is done. The next
        Ready lists them again; they are skipped as already applied. A snapshot being installed
        (the log starts past the applied index) is left to its Ready.
        """
        log = self._core.log
        applied = self._machine.applied_index
        commit = log.committed
        first = log.first_index
        if commit <= applied or applied + 1 < first:
            return
        self._applier.apply(log.entries[applied + 1 - first:commit + 1 - first])

    # ------------------------------------------------------------------ snapshots

    def _take_snapshot(self) -> None:
        """Snapshot the state machine here; write it and compact the log in the worker thread.

        The write takes several fsyncs; on the loop thread a slow disk would stall heartbeats
        and cost the leadership. Until it is done no Ready is started (``syncing``) and no
        entry is read from the storage, which is being compacted.
        """
        index = self._machine.applied_index
        if index - self._snapshot_failed_at < SNAPSHOT_RETRY_ENTRIES:
            return
        meta = self._core.snapshot_meta(index)
        try:
            data = self._machine.snapshot()
        except Exception as exc:  # the state cannot be written (a component's own snapshot)
            self._snapshot_failed_at = index
            self.counters["snapshot_failures"] += 1
            log.error("could not snapshot the state at index %d (the log is not compacted; "
                      "next try %d entries on): %r", index, SNAPSHOT_RETRY_ENTRIES, exc)
            return
        snapshot = Snapshot(meta, data)
        self._syncing = True
        assert self._loop is not None
        future = self._loop.run_in_executor(self._executor, self._storage.compact, snapshot)
        future.add_done_callback(lambda f: self._compacted(f, snapshot))

    def _compacted(self, future: asyncio.Future, snapshot: Snapshot) -> None:
        self._syncing = False
        if self.failed is not None or self._closed:
            return
        exc = future.exception()
        if exc is not None:
            self._die(exc)
            return
        self._core.compact(snapshot)
        self.counters["snapshots"] += 1
        self._resume()

    def _die(self, exc: BaseException) -> None:
        self.failed = exc
        self._on_fatal(exc)
