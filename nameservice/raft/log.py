"""The in-memory view of a node's Raft log: a snapshot point followed by entries.

Entries up to and including ``snapshot.meta.index`` are compacted away; the entry with index
``i`` lives at ``entries[i - first_index]``. The log also tracks which suffix has not yet been
handed to the driver for persistence (``unstable_from``).
"""
from __future__ import annotations

from nameservice.raft.types import Entry, Snapshot, SnapshotMeta


class RaftLog:
    """Entries after a snapshot, plus the commit and apply positions."""

    __slots__ = (
        "snapshot", "entries", "first_index", "committed", "applied", "unstable_from", "rewound_to"
    )

    def __init__(self, snapshot: Snapshot | None = None, entries: list[Entry] | None = None):
        self.snapshot = snapshot or Snapshot()
        self.first_index = self.snapshot.meta.index + 1
        self.entries: list[Entry] = list(entries or ())
        if self.entries and self.entries[0].index != self.first_index:
            raise ValueError(
                f"log entries start at {self.entries[0].index}, expected {self.first_index}"
            )
        for prev, entry in zip(self.entries, self.entries[1:]):
            if entry.index != prev.index + 1 or entry.term < prev.term:
                raise ValueError(f"log entries are not contiguous at index {entry.index}")
        self.committed = self.snapshot.meta.index
        self.applied = self.snapshot.meta.index
        self.unstable_from = self.last_index() + 1
        # Lowest index replaced since the last Ready was handed out (None: nothing replaced).
        self.rewound_to: int | None = None

    # -- positions -------------------------------------------------------------------------

    def last_index(self) -> int:
        return self.first_index + len(self.entries) - 1

    def last_term(self) -> int:
        if self.entries:
            return self.entries[-1].term
        return self.snapshot.meta.term

    def term(self, index: int) -> int | None:
        """The term of the entry at ``index``; None when compacted away or beyond the end."""
        offset = index - self.first_index
        if offset >= 0:
            if offset < len(self.entries):
                return self.entries[offset].term
            return None
        if index == self.snapshot.meta.index:
            return self.snapshot.meta.term
        return None

    def matches(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Whether a candidate's log is at least as up-to-date as ours (Raft §5.4.1)."""
        our_term = self.last_term()
        return last_term > our_term or (last_term == our_term and last_index >= self.last_index())

    # -- reading ---------------------------------------------------------------------------

    def slice(self, lo: int, hi: int, max_count: int, max_bytes: int) -> list[Entry]:
        """Entries with lo <= index < hi, at most ``max_count`` of them and about ``max_bytes``
        of data (always at least one entry, so a huge entry still makes progress)."""
        start = lo - self.first_index
        stop = min(hi - self.first_index, start + max_count)
        out = self.entries[start:stop]
        if max_bytes and len(out) > 1:
            size = 0
            for n, entry in enumerate(out):
                size += len(entry.data) + 16
                if size > max_bytes and n > 0:
                    return out[:n]
        return out

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest index <= ``index`` whose term is <= ``term``, with that term.

        Used in both directions of fast backtracking: everything after the returned index may
        disagree with a log whose entry at ``index`` has ``term``.
        """
        index = min(index, self.last_index())
        while index >= self.first_index:
            entry_term = self.entries[index - self.first_index].term
            if entry_term <= term:
                return index, entry_term
            index -= 1
        return self.snapshot.meta.index, self.snapshot.meta.term

    def unstable_entries(self) -> list[Entry]:
        return self.entries[self.unstable_from - self.first_index:]

    def next_committed(self) -> list[Entry]:
        """Committed entries not yet applied."""
        start = max(self.applied, self.snapshot.meta.index) + 1
        if self.committed < start:
            return []
        return self.entries[start - self.first_index:self.committed + 1 - self.first_index]

    # -- writing ---------------------------------------------------------------------------

    def append(self, entries: list[Entry] | tuple[Entry, ...]) -> None:
        """Append entries that directly follow the last index."""
        self.entries.extend(entries)

    def truncate_and_append(self, entries: tuple[Entry, ...]) -> None:
        """Append entries following a matched prefix, replacing a conflicting suffix.

        The first index of ``entries`` must be <= last_index + 1 and the entry before it must
        already match the leader's. Entries already present with the same term are kept.
        """
        if not entries:
            return
        first = entries[0].index
        last = self.last_index()
        if first > last:
            self.entries.extend(entries)
            return
        # Skip the prefix we already hold; find the first entry whose term differs.
        offset = 0
        count = len(entries)
        while offset < count:
            index = first + offset
            if index > last:
                break
            if self.entries[index - self.first_index].term != entries[offset].term:
                if index <= self.committed:
                    raise AssertionError(f"conflict at committed index {index}")
                del self.entries[index - self.first_index:]
                self.unstable_from = min(self.unstable_from, index)
                self._rewind(index)
                break
            offset += 1
        if offset < count:
            self.entries.extend(entries[offset:])
            self.unstable_from = min(self.unstable_from, first + offset)

    def commit_to(self, index: int) -> bool:
        """Raise the commit index (never lowers it). Returns whether it moved."""
        if index > self.committed:
            self.committed = index
            return True
        return False

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the whole log by a snapshot (InstallSnapshot)."""
        self.snapshot = snapshot
        self.first_index = snapshot.meta.index + 1
        self.entries = []
        self.committed = snapshot.meta.index
        self.unstable_from = self.first_index
        self._rewind(self.first_index)

    def _rewind(self, index: int) -> None:
        if self.rewound_to is None or index < self.rewound_to:
            self.rewound_to = index

    def compact(self, snapshot: Snapshot) -> None:
        """Drop entries covered by a snapshot the driver took of its applied state."""
        index = snapshot.meta.index
        if index <= self.snapshot.meta.index:
            return
        if index > self.applied:
            raise ValueError(f"cannot compact to {index}: only {self.applied} is applied")
        if self.term(index) != snapshot.meta.term:
            raise ValueError(
                f"snapshot term {snapshot.meta.term} does not match the log at {index}"
            )
        del self.entries[:index + 1 - self.first_index]
        self.snapshot = snapshot
        self.first_index = index + 1
        # Entries the snapshot covers need not be written any more.
        self.unstable_from = max(self.unstable_from, self.first_index)


def empty_snapshot(voters: tuple[int, ...], learners: tuple[int, ...] = ()) -> Snapshot:
    """The snapshot a brand-new cluster starts from: index 0, term 0, the initial members."""
    return Snapshot(SnapshotMeta(0, 0, tuple(sorted(voters)), tuple(sorted(learners))), b"")
