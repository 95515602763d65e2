"""The storage seam: what a Raft node needs from durable storage, and the values it returns."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol, runtime_checkable

from ..raft.types import Entry, HardState, Ready, Snapshot

DEFAULT_SNAPSHOT_THRESHOLD = 10_000
"""Entries applied past the last snapshot after which ``should_snapshot`` says yes."""
DEFAULT_SNAPSHOT_BYTES = 64 << 20
"""Bytes of entry data applied past the last snapshot after which ``should_snapshot`` says
yes: the log is held in memory until compacted, so a few large writes must compact it as
surely as many small ones."""


class RecoveredState(NamedTuple):
    """What a node is rebuilt from after a restart.

    ``snapshot.meta.index == 0`` means no snapshot has been stored; ``entries`` are the entries
    after the snapshot, consecutive from ``snapshot.meta.index + 1``; ``hard_state.commit`` is at
    least ``snapshot.meta.index`` and at most the last entry's index.
    """

    hard_state: HardState
    snapshot: Snapshot
    entries: list[Entry]


@dataclass(slots=True)
class StorageStats:
    """Counters since the storage was opened (for metrics and benchmarks)."""

    entries_appended: int = 0
    syncs: int = 0
    fsyncs: int = 0
    bytes_written: int = 0
    segments_deleted: int = 0


@runtime_checkable
class RaftStorage(Protocol):
    """Durable home of one node's hard state, snapshot and log.

    Writes (``append``, ``set_hard_state``) are buffered; ``sync()`` makes everything written
    since the previous sync durable at once (group commit). The driver's loop is::

        for ready in readies:        # every Ready produced in this loop iteration
            storage.save(ready)      # snapshot, then entries, then hard state
        storage.sync()               # one fsync for all of them
        send(messages)               # only now: ``storage.unsynced`` is False

    Snapshot operations (``install_snapshot``, ``compact``) sync what is pending first and are
    durable when they return. After a crash, exactly the state as of the last completed sync
    (or snapshot operation) comes back from ``initial_state()``.

    One owning thread calls every method; only ``sync()`` may also run in a worker thread
    while the owner goes on writing (see DiskStorage.sync).
    """

    @property
    def hard_state(self) -> HardState:
        """The last hard state written (synced or not)."""
        ...

    @property
    def snapshot(self) -> Snapshot:
        """The stored snapshot; ``Snapshot()`` (index 0) when there is none."""
        ...

    @property
    def unsynced(self) -> bool:
        """True while some write has not been made durable by ``sync()``."""
        ...

    @property
    def stats(self) -> StorageStats:
        """Counters since open."""
        ...

    def initial_state(self) -> RecoveredState:
        """The state to build a Raft node from (after open: exactly what was recovered)."""
        ...

    def first_index(self) -> int:
        """Index of the first entry still in the log (``snapshot.meta.index + 1``)."""
        ...

    def last_index(self) -> int:
        """Index of the last entry (the snapshot's index when the log after it is empty)."""
        ...

    def term(self, index: int) -> int | None:
        """Term of the entry at ``index`` (the snapshot's own index included), else None."""
        ...

    def entries(self, lo: int, hi: int) -> list[Entry]:
        """Entries with ``lo <= index < hi`` that the log holds."""
        ...

    def append(self, entries: Sequence[Entry]) -> None:
        """Buffer consecutive entries. An entry whose index is already in the log replaces that
        entry and every entry after it. Raises InvalidWriteError on a gap or a compacted index."""
        ...

    def set_hard_state(self, hard_state: HardState) -> None:
        """Buffer a new hard state. Term and commit never go back, a vote is never changed within
        a term, commit never passes the last entry: anything else raises InvalidWriteError."""
        ...

    def install_snapshot(self, snapshot: Snapshot) -> None:
        """Durably store a snapshot received from the leader (must be newer than the stored one).
        Entries after it are kept if the log has the snapshot's entry with the same term,
        otherwise the whole log is discarded (Raft paper, section 7)."""
        ...

    def compact(self, snapshot: Snapshot) -> None:
        """Durably store a snapshot this node took of its own state machine, then drop the
        entries it covers. Its index must be committed and its term must match the log."""
        ...

    def save(self, ready: Ready) -> None:
        """Persist the storage part of a Ready in the required order: snapshot, entries, hard
        state. Buffered like ``append``: call ``sync()`` before sending the Ready's messages."""
        ...

    def sync(self) -> None:
        """Make every buffered write durable with as few fsyncs as possible (one, usually)."""
        ...

    def should_snapshot(self, applied_index: int) -> bool:
        """True when at least the configured threshold of entries, or of entry bytes, lies
        between the snapshot and ``applied_index``: time for the owner to take a snapshot and
        call ``compact``."""
        ...

    def close(self, sync: bool = True) -> None:
        """Release the storage. ``sync=False`` drops unsynced writes, exactly as a crash would."""
        ...
