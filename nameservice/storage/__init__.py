"""Durable storage of a Raft node: hard state, snapshot and log.

``RaftStorage`` is the seam; ``DiskStorage`` is the real thing (segment files, atomic hard-state
and snapshot files, group commit, crash recovery) and ``MemoryStorage`` its in-memory twin for
tests and the simulator. docs/storage.md describes the file formats and recovery rules.
"""
from .base import (
    DEFAULT_SNAPSHOT_BYTES,
    DEFAULT_SNAPSHOT_THRESHOLD,
    RaftStorage,
    RecoveredState,
    StorageStats,
)
from .disk import DiskStorage
from .errors import (
    CorruptFileError,
    CorruptLogError,
    InvalidWriteError,
    RecoveryError,
    StorageClosedError,
    StorageError,
    StorageLockedError,
)
from .memory import MemoryStorage

__all__ = [
    "DEFAULT_SNAPSHOT_BYTES",
    "DEFAULT_SNAPSHOT_THRESHOLD",
    "CorruptFileError",
    "CorruptLogError",
    "DiskStorage",
    "InvalidWriteError",
    "MemoryStorage",
    "RaftStorage",
    "RecoveredState",
    "RecoveryError",
    "StorageClosedError",
    "StorageError",
    "StorageLockedError",
    "StorageStats",
]
