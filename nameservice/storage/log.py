"""The pure in-memory model of a stored Raft log: entries after a base position.

Both storages keep their live state in these objects, and DiskStorage rebuilds one from its
segment files on open, so the rules for what a write may do live in exactly one place.
"""
from __future__ import annotations

from collections.abc import Sequence

from ..raft.types import NONE, Entry, HardState, Snapshot
from .errors import InvalidWriteError


class LogState:
    """Entries ``base_index + 1 .. last_index``, where ``base`` is the snapshot position.

    ``term(base_index)`` is ``base_term``; every earlier index is compacted away.
    ``data_bytes`` is the sum of the entries' data sizes (what the log holds in memory).
    """

    __slots__ = ("base_index", "base_term", "entries", "data_bytes")

    def __init__(self, base_index: int = 0, base_term: int = 0,
                 entries: list[Entry] | None = None) -> None:
        self.base_index = base_index
        self.base_term = base_term
        self.entries: list[Entry] = entries if entries is not None else []
        self.data_bytes = sum(len(e.data) for e in self.entries)

    @property
    def last_index(self) -> int:
        """Index of the last entry, or ``base_index`` when there is none."""
        return self.base_index + len(self.entries)

    def term(self, index: int) -> int | None:
        """Term of the entry at ``index``; None when it is compacted away or not there yet."""
        if index == self.base_index:
            return self.base_term
        if self.base_index < index <= self.last_index:
            return self.entries[index - self.base_index - 1].term
        return None

    def slice(self, lo: int, hi: int) -> list[Entry]:
        """Entries with ``lo <= index < hi``, clipped to what the log holds."""
        start = max(lo - self.base_index - 1, 0)
        stop = max(hi - self.base_index - 1, 0)
        return self.entries[start:stop]

    def check_append(self, entries: Sequence[Entry]) -> None:
        """Raise InvalidWriteError unless ``entries`` may be appended (see ``append``)."""
        first = entries[0].index
        if first <= self.base_index:
            raise InvalidWriteError(
                f"entry {first} is at or below the snapshot/log start at {self.base_index}")
        if first > self.last_index + 1:
            raise InvalidWriteError(
                f"entry {first} would leave a gap after the last entry {self.last_index}")
        for offset, entry in enumerate(entries):
            if entry.index != first + offset:
                raise InvalidWriteError(
                    f"entries are not consecutive: {entry.index} follows {first + offset - 1}")
            if type(entry.data) is not bytes or type(entry.term) is not int:
                raise InvalidWriteError(f"entry {entry.index} needs an int term and bytes data")

    def append(self, entries: Sequence[Entry]) -> None:
        """Append consecutive entries; the first one's index replaces that entry and all after."""
        if entries:
            self.check_append(entries)
            self.append_checked(entries)

    def append_checked(self, entries: Sequence[Entry]) -> None:
        """``append`` for entries that already passed ``check_append``."""
        cut = entries[0].index - self.base_index - 1
        if cut < len(self.entries):
            self.data_bytes -= sum(len(e.data) for e in self.entries[cut:])
            del self.entries[cut:]
        self.entries.extend(entries)
        self.data_bytes += sum(len(e.data) for e in entries)

    def bytes_through(self, index: int) -> int:
        """Data bytes of the entries up to ``index`` (those a snapshot there would drop)."""
        held = index - self.base_index
        if held <= 0:
            return 0
        if held >= len(self.entries):
            return self.data_bytes
        return sum(len(e.data) for e in self.entries[:held])

    def compact(self, index: int, term: int) -> None:
        """Drop entries up to ``index`` (which must be in the log) and make it the new base."""
        self.data_bytes -= self.bytes_through(index)
        del self.entries[: index - self.base_index]
        self.base_index, self.base_term = index, term

    def reset(self, index: int, term: int) -> None:
        """Drop every entry; the log restarts after ``(index, term)``."""
        self.entries = []
        self.data_bytes = 0
        self.base_index, self.base_term = index, term

    def install(self, index: int, term: int) -> bool:
        """Move the base to a snapshot at ``(index, term)`` by the rule of the Raft paper (§7).

        If the entry at ``index`` has ``term`` the entries after it are kept and True is
        returned; otherwise the whole log is discarded and False is returned.
        """
        if self.term(index) == term:
            self.compact(index, term)
            return True
        self.reset(index, term)
        return False

    def copy(self) -> LogState:
        """An independent copy (entries are immutable, so the list is all that is copied)."""
        return LogState(self.base_index, self.base_term, list(self.entries))


class StoredState:
    """Hard state + snapshot + log, with the checks every storage applies to every write."""

    __slots__ = ("hard_state", "snapshot", "log")

    def __init__(self, hard_state: HardState = HardState(), snapshot: Snapshot = Snapshot(),
                 log: LogState | None = None) -> None:
        self.hard_state = hard_state
        self.snapshot = snapshot
        self.log = log if log is not None else LogState(snapshot.meta.index, snapshot.meta.term)

    def check_append(self, entries: Sequence[Entry]) -> None:
        """Raise InvalidWriteError unless ``entries`` may be appended: besides the log's own
        rules, a committed entry is never replaced."""
        self.log.check_append(entries)
        if entries[0].index <= self.hard_state.commit:
            raise InvalidWriteError(f"entry {entries[0].index} would replace a committed entry "
                                    f"(commit index {self.hard_state.commit})")

    def check_hard_state(self, hs: HardState) -> None:
        """Raise InvalidWriteError unless ``hs`` may follow the current hard state."""
        old = self.hard_state
        if hs.term < old.term:
            raise InvalidWriteError(f"term would go back from {old.term} to {hs.term}")
        if hs.term == old.term and old.vote != NONE and hs.vote != old.vote:
            raise InvalidWriteError(
                f"vote in term {hs.term} would change from {old.vote} to {hs.vote}")
        if hs.commit < old.commit:
            raise InvalidWriteError(f"commit would go back from {old.commit} to {hs.commit}")
        if hs.commit > self.log.last_index:
            raise InvalidWriteError(
                f"commit {hs.commit} is beyond the last entry {self.log.last_index}")

    def check_compact(self, snapshot: Snapshot) -> None:
        """Raise InvalidWriteError unless the log may be compacted up to ``snapshot``."""
        index, term = snapshot.meta.index, snapshot.meta.term
        if index <= self.snapshot.meta.index:
            raise InvalidWriteError(f"snapshot at {index} is not newer than the stored one at "
                                    f"{self.snapshot.meta.index}")
        if index > self.hard_state.commit or index > self.log.last_index:
            raise InvalidWriteError(f"snapshot at {index} is beyond the commit index "
                                    f"{self.hard_state.commit} or the last entry")
        if self.log.term(index) != term:
            raise InvalidWriteError(
                f"snapshot says entry {index} has term {term}, the log says {self.log.term(index)}")

    def check_install(self, snapshot: Snapshot) -> None:
        """Raise InvalidWriteError unless ``snapshot`` may be installed: it must be newer than
        the stored one and must not contradict a committed entry."""
        index, term = snapshot.meta.index, snapshot.meta.term
        if index <= self.snapshot.meta.index:
            raise InvalidWriteError(f"snapshot at {index} is not newer than the "
                                    f"stored one at {self.snapshot.meta.index}")
        found = self.log.term(index)
        if found is not None and found != term and index <= self.hard_state.commit:
            raise InvalidWriteError(f"snapshot says entry {index} has term {term}, but the "
                                    f"committed entry there has term {found}")

    def recovered_hard_state(self) -> HardState:
        """The hard state a restarted node starts from: a snapshot implies its entries committed."""
        hs = self.hard_state
        return hs._replace(commit=max(hs.commit, self.snapshot.meta.index))

    def copy(self) -> StoredState:
        """An independent copy."""
        return StoredState(self.hard_state, self.snapshot, self.log.copy())


class StateReads:
    """The read half of RaftStorage, served from ``self._live`` (a StoredState).

    Shared by both storages so that a read means the same thing in each.
    """

    __slots__ = ()
    _live: StoredState

    @property
    def hard_state(self) -> HardState:
        """The last hard state written (synced or not)."""
        return self._live.hard_state

    @property
    def snapshot(self) -> Snapshot:
        """The stored snapshot; ``Snapshot()`` (index 0) when there is none."""
        return self._live.snapshot

    def first_index(self) -> int:
        """Index of the first entry still in the log."""
        return self._live.log.base_index + 1

    def last_index(self) -> int:
        """Index of the last entry (the snapshot's index when the log after it is empty)."""
        return self._live.log.last_index

    def term(self, index: int) -> int | None:
        """Term of the entry at ``index`` (the snapshot's own index included), else None."""
        return self._live.log.term(index)

    def entries(self, lo: int, hi: int) -> list[Entry]:
        """Entries with ``lo <= index < hi`` that the log holds."""
        return self._live.log.slice(lo, hi)


def should_snapshot(live: StoredState, applied_index: int, threshold: int,
                    max_bytes: int) -> bool:
    """Whether ``threshold`` entries, or ``max_bytes`` of entry data, lie between the snapshot
    and ``applied_index`` (the rule both storages share)."""
    since = applied_index - live.snapshot.meta.index
    if since >= threshold:
        return True
    log = live.log
    # The running total is cheap; the exact sum up to the applied entry only when it may pass.
    return (since > 0 and log.data_bytes >= max_bytes
            and log.bytes_through(applied_index) >= max_bytes)
