"""MemoryStorage: the in-memory twin of DiskStorage, for tests and the simulator.

It keeps two copies of the state: the live one every write changes, and the durable one that
``sync()`` catches up. ``crashed()`` returns a new storage holding only the durable copy, which
is exactly what DiskStorage recovers after a process crash.
"""
from __future__ import annotations

from collections.abc import Sequence

from ..raft.types import Entry, HardState, Ready, Snapshot
from .base import DEFAULT_SNAPSHOT_BYTES, DEFAULT_SNAPSHOT_THRESHOLD, RecoveredState, StorageStats
from .errors import StorageClosedError
from .log import LogState, StateReads, StoredState, should_snapshot


class MemoryStorage(StateReads):
    """A RaftStorage that keeps everything in memory and simulates durability."""

    def __init__(self, state: RecoveredState | None = None, *,
                 snapshot_threshold: int = DEFAULT_SNAPSHOT_THRESHOLD,
                 snapshot_bytes: int = DEFAULT_SNAPSHOT_BYTES) -> None:
        if state is None:
            self._live = StoredState()
        else:
            meta = state.snapshot.meta
            log = LogState(meta.index, meta.term)
            log.append(state.entries)
            self._live = StoredState(state.hard_state, state.snapshot, log)
        self._durable = self._live.copy()
        self._pending: list[Sequence[Entry]] = []
        self._snapshot_threshold = snapshot_threshold
        self._snapshot_bytes = snapshot_bytes
        self._stats = StorageStats()
        self._closed = False

    @property
    def unsynced(self) -> bool:
        """True while some write has not been made durable by ``sync()``."""
        return bool(self._pending) or self._live.hard_state != self._durable.hard_state

    @property
    def stats(self) -> StorageStats:
        """Counters since creation (``fsyncs`` counts the syncs that had something to do)."""
        return self._stats

    def initial_state(self) -> RecoveredState:
        """The live state, as a node would be rebuilt from it."""
        live = self._live
        return RecoveredState(live.recovered_hard_state(), live.snapshot, list(live.log.entries))

    def append(self, entries: Sequence[Entry]) -> None:
        """Buffer consecutive entries, replacing any suffix from the first one's index."""
        self._check_open()
        if not entries:
            return
        batch = list(entries)
        self._live.check_append(batch)
        self._live.log.append_checked(batch)
        self._pending.append(batch)
        self._stats.entries_appended += len(batch)

    def set_hard_state(self, hard_state: HardState) -> None:
        """Buffer a new hard state (see RaftStorage.set_hard_state for the rules)."""
        self._check_open()
        self._live.check_hard_state(hard_state)
        self._live.hard_state = hard_state

    def install_snapshot(self, snapshot: Snapshot) -> None:
        """Store a snapshot from the leader; durable on return."""
        self._check_open()
        self._live.check_install(snapshot)
        self.sync()
        for state in (self._live, self._durable):
            state.log.install(snapshot.meta.index, snapshot.meta.term)
            state.snapshot = snapshot

    def compact(self, snapshot: Snapshot) -> None:
        """Store a snapshot of this node's state machine and drop the entries it covers."""
        self._check_open()
        self._live.check_compact(snapshot)
        self.sync()
        for state in (self._live, self._durable):
            state.log.compact(snapshot.meta.index, snapshot.meta.term)
            state.snapshot = snapshot

    def save(self, ready: Ready) -> None:
        """Persist a Ready's snapshot, entries and hard state, in that order (buffered)."""
        if ready.snapshot is not None:
            self.install_snapshot(ready.snapshot)
        if ready.entries:
            self.append(ready.entries)
        if ready.hard_state is not None:
            self.set_hard_state(ready.hard_state)

    def sync(self) -> None:
        """Make the buffered writes durable."""
        self._check_open()
        self._stats.syncs += 1
        if not self.unsynced:
            return
        for entries in self._pending:
            self._durable.log.append(entries)
        self._durable.hard_state = self._live.hard_state
        self._pending.clear()
        self._stats.fsyncs += 1

    def should_snapshot(self, applied_index: int) -> bool:
        """True once ``applied_index`` is the threshold or more past the snapshot, or the
        entries up to it hold ``snapshot_bytes`` or more."""
        return should_snapshot(self._live, applied_index, self._snapshot_threshold,
                               self._snapshot_bytes)

    def crashed(self) -> MemoryStorage:
        """A new storage holding what a crash right now would leave: the durable state only."""
        durable = self._durable
        state = RecoveredState(durable.recovered_hard_state(), durable.snapshot,
                               list(durable.log.entries))
        return MemoryStorage(state, snapshot_threshold=self._snapshot_threshold,
                             snapshot_bytes=self._snapshot_bytes)

    def close(self, sync: bool = True) -> None:
        """Release the storage; ``sync=False`` drops unsynced writes as a crash would."""
        if self._closed:
            return
        if sync:
            self.sync()
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise StorageClosedError("storage is closed")
