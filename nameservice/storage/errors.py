"""Errors raised by the Raft log storage.

    StorageError                  root of everything below (a nameservice.errors.NameServiceError)
    ├── CorruptLogError           a log record that is damaged where damage cannot be a torn write
    ├── CorruptFileError          the hard-state or snapshot file is unreadable or missing
    ├── RecoveryError             the files are each readable but do not fit together
    ├── StorageLockedError        another process has the data directory open
    ├── StorageClosedError        the storage was used after close()
    └── InvalidWriteError         the caller asked for a write that would break the log's rules
                                  (also a ValueError: it is a programming error, not a disk one)

Every error raised while opening a directory names the file (and, for the log, the byte offset),
so an operator can look at exactly the bytes that stopped the node.
"""
from __future__ import annotations

from nameservice.errors import NameServiceError


class StorageError(NameServiceError):
    """Root of the storage errors."""


class CorruptLogError(StorageError):
    """A log record is damaged in a place where a crash cannot have left it.

    Raised on open for a bad record that is followed by a valid one, a bad record in any segment
    but the last, a record whose entries do not continue the index sequence, or a bad segment
    header. The node refuses to start: truncating here would silently drop synced entries.
    """

    def __init__(self, path: str, offset: int, reason: str) -> None:
        self.path = path
        self.offset = offset
        self.reason = reason
        super().__init__(f"corrupt Raft log {path} at byte offset {offset}: {reason}")


class CorruptFileError(StorageError):
    """The hard-state or snapshot file is missing where it must exist, or fails its checks."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class RecoveryError(StorageError):
    """The snapshot, the log and the hard state are each intact but contradict one another."""


class StorageLockedError(StorageError):
    """The data directory is already open in another process (or another DiskStorage)."""


class StorageClosedError(StorageError):
    """The storage was used after ``close()``."""


class InvalidWriteError(StorageError, ValueError):
    """A write that would leave a gap, move a term or commit index backwards, or similar."""
