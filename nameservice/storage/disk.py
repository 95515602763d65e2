"""DiskStorage: the Raft log in append-only segment files, hard state and snapshot in files
replaced atomically, group commit by an explicit ``sync()``.

Directory layout (docs/storage.md has the byte formats and the reasons)::

    LOCK                        flock'ed while open: one process per directory
    hardstate                   term, vote, commit (replaced atomically)
    snapshot                    the latest snapshot (replaced atomically), absent before the first
    0000000000000001.log ...    log segments, 16 hex digits of a sequence number
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ..raft.types import MAX_TERM, NONE, Entry, HardState, Ready, Snapshot
from . import codec
from .base import (
    DEFAULT_SNAPSHOT_BYTES,
    DEFAULT_SNAPSHOT_THRESHOLD,
    RecoveredState,
    StorageStats,
)
from .errors import CorruptFileError, InvalidWriteError, StorageClosedError, StorageError
from .files import TEMP_SUFFIX, fsync_dir, lock_directory, read_file, write_all, write_atomic
from .log import StateReads, should_snapshot
from .recovery import reconcile, replay

log = logging.getLogger(__name__)

HARD_STATE_FILE = "hardstate"
SNAPSHOT_FILE = "snapshot"
SEGMENT_NAME = re.compile(r"^([0-9a-f]{16})\.log$")
DEFAULT_SEGMENT_BYTES = 64 << 20
DEFAULT_MAX_UNSYNCED_BYTES = 16 << 20
RESTART_TERM = MAX_TERM // 2
"""Where a hard-state term at or above ``MAX_TERM`` is brought back to at recovery (see
``_term_within_bound``)."""


@dataclass(slots=True)
class _Segment:
    seq: int
    path: str
    size: int
    max_index: int  # highest entry/reset index recorded in it; 0 if none


class DiskStorage(StateReads):
    """A RaftStorage on local disk. Opening it recovers the directory (creating it if needed).

    ``segment_bytes``: a segment at or past this size is closed and a new one started before the
    next write. ``max_unsynced_bytes``: buffered writes reaching this size are synced at once
    (an early group commit; nothing is dropped). ``snapshot_threshold`` (entries) and
    ``snapshot_bytes`` (entry data): see ``should_snapshot``.
    Raises CorruptLogError, CorruptFileError or RecoveryError when the directory cannot be
    recovered without losing synced data, StorageLockedError when another process has it open.
    """

    def __init__(self, data_dir: str | os.PathLike[str], *,
                 segment_bytes: int = DEFAULT_SEGMENT_BYTES,
                 snapshot_threshold: int = DEFAULT_SNAPSHOT_THRESHOLD,
                 snapshot_bytes: int = DEFAULT_SNAPSHOT_BYTES,
                 max_unsynced_bytes: int = DEFAULT_MAX_UNSYNCED_BYTES) -> None:
        if min(segment_bytes, max_unsynced_bytes, snapshot_threshold, snapshot_bytes) <= 0:
            raise ValueError("segment_bytes, max_unsynced_bytes, snapshot_threshold and "
                             "snapshot_bytes must be > 0")
        self._dir = os.path.abspath(os.fspath(data_dir))
        self._segment_bytes = segment_bytes
        self._snapshot_threshold = snapshot_threshold
        self._snapshot_bytes = snapshot_bytes
        self._max_unsynced_bytes = max_unsynced_bytes
        self._stats = StorageStats()
        # Packed operations not yet written, each with the highest index it mentions. The
        # buffer lock lets a sync in a worker thread take exactly the operations queued before
        # it; the I/O lock serializes syncs, snapshot operations and close.
        self._pending: list[tuple[bytes, int]] = []
        self._pending_bytes = 0
        self._buffer_lock = threading.Lock()
        self._io_lock = threading.Lock()
        self._in_flight = False  # a sync has taken the buffer and not finished yet
        self._closed = True
        self._fd = self._dir_fd = -1
        os.makedirs(self._dir, exist_ok=True)
        self._lock_fd = lock_directory(self._dir)
        try:
            self._dir_fd = os.open(self._dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            self._recover()
        except BaseException:
            self._release()
            raise
        self._closed = False

    # -- open / recover -------------------------------------------------------------------

    def _path(self, name: str) -> str:
        return os.path.join(self._dir, name)

    def _recover(self) -> None:
        for name in os.listdir(self._dir):
            if name.endswith(TEMP_SUFFIX):
                os.unlink(self._path(name))  # a write_atomic that never reached its rename
        seqs = sorted(int(m.group(1), 16) for m in map(SEGMENT_NAME.match, os.listdir(self._dir))
                      if m)
        hs_path, snap_path = self._path(HARD_STATE_FILE), self._path(SNAPSHOT_FILE)
        hs_bytes, snap_bytes = read_file(hs_path), read_file(snap_path)
        if hs_bytes is None:
            if seqs or snap_bytes is not None:
                raise CorruptFileError(hs_path, "missing, but the directory holds a log or a "
                                                "snapshot: term and vote would be forgotten")
            hs_bytes = codec.encode_hard_state(HardState())
            write_atomic(self._dir, self._dir_fd, HARD_STATE_FILE, hs_bytes)
        hard_state = codec.decode_hard_state(hs_bytes, hs_path)
        snapshot = (codec.decode_snapshot(snap_bytes, snap_path) if snap_bytes is not None
                    else Snapshot())
        del snap_bytes

        scans = []
        self._segments: list[_Segment] = []
        for position, seq in enumerate(seqs):
            path = self._path(f"{seq:016x}.log")
            data = read_file(path) or b""
            scan = codec.scan_segment(data, path, last=position == len(seqs) - 1)
            if scan.torn is not None:
                log.warning("%s: dropping a torn tail of %d bytes at offset %d (%s): writes that "
                            "were never synced", path, len(data) - scan.valid_end,
                            scan.valid_end, scan.torn)
                self._truncate(path, scan.valid_end)
            scans.append((path, scan))
            self._segments.append(_Segment(seq, path, scan.valid_end, 0))
            del data
        replayed = replay(scans)
        del scans
        for segment, highest in zip(self._segments, replayed.segment_max_index):
            segment.max_index = highest
        self._live, reset = reconcile(replayed, snapshot, hard_state, self._dir)
        self._term_within_bound(hs_path)
        self._durable_hard_state = self._live.hard_state
        if not self._segments:
            self._segments.append(self._create_segment(1))
        self._fd = os.open(self._segments[-1].path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        if reset:
            # Record the reset so that entries appended from here on continue the log on disk.
            self._write_records([(codec.pack_reset_op(snapshot.meta.index, snapshot.meta.term),
                                  snapshot.meta.index)])

    def _term_within_bound(self, path: str) -> None:
        """Bring a term at or beyond the bound back to ``RESTART_TERM``, with no vote.

        Before terms were bounded, one forged vote request could leave a node at 2**63 - 1,
        where it could never campaign again. No honest election gets past 2**61, so the node
        took part (voted, followed a leader) only in terms below ``RESTART_TERM``: restarting
        there without a vote cannot make it vote twice in one term, and leaves 2**61 terms of
        room. A log holding entries of a later term (a forged leader's) keeps that term.
        """
        live = self._live
        hs = live.hard_state
        if hs.term < MAX_TERM:
            return
        last_term = live.log.term(live.log.last_index) or 0
        fixed = HardState(max(RESTART_TERM, last_term), NONE, hs.commit)
        log.warning("%s: term %d is beyond the bound %d (a forged message before this version "
                    "refused them); restarting at term %d with no vote", path, hs.term,
                    MAX_TERM, fixed.term)
        write_atomic(self._dir, self._dir_fd, HARD_STATE_FILE, codec.encode_hard_state(fixed))
        live.hard_state = fixed

    def _truncate(self, path: str, size: int) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        finally:
            os.close(fd)

    def _create_segment(self, seq: int) -> _Segment:
        name = f"{seq:016x}.log"
        header = codec.segment_header()
        self._stats.fsyncs += write_atomic(self._dir, self._dir_fd, name, header)
        return _Segment(seq, self._path(name), len(header), 0)

    # -- reads and state ------------------------------------------------------------------

    @property
    def unsynced(self) -> bool:
        """True while some write has not been made durable by a completed ``sync()``."""
        return (bool(self._pending) or self._in_flight
                or self._live.hard_state != self._durable_hard_state)

    @property
    def stats(self) -> StorageStats:
        """Counters since open."""
        return self._stats

    @property
    def data_dir(self) -> str:
        """The directory this storage lives in."""
        return self._dir

    def initial_state(self) -> RecoveredState:
        """The current state; right after open, exactly what was recovered."""
        live = self._live
        return RecoveredState(live.recovered_hard_state(), live.snapshot, list(live.log.entries))

    def should_snapshot(self, applied_index: int) -> bool:
        """True once ``applied_index`` is the threshold or more past the snapshot, or the
        entries up to it hold ``snapshot_bytes`` or more."""
        return should_snapshot(self._live, applied_index, self._snapshot_threshold,
                               self._snapshot_bytes)

    # -- writes ---------------------------------------------------------------------------

    def append(self, entries: Sequence[Entry]) -> None:
        """Buffer consecutive entries, replacing any suffix from the first one's index."""
        self._check_open()
        if not entries:
            return
        self._live.check_append(entries)
        ops = self._pack_entries(entries)
        self._live.log.append_checked(entries)
        for op in ops:
            self._queue(op, entries[-1].index)
        self._stats.entries_appended += len(entries)
        if self._pending_bytes >= self._max_unsynced_bytes and self._io_lock.acquire(False):
            try:  # (if a sync is running in another thread, the next one takes the excess)
                self._sync_locked()
            finally:
                self._io_lock.release()

    def _pack_entries(self, entries: Sequence[Entry]) -> list[bytes]:
        op = codec.pack_entries_op(entries)
        if len(op) + 16 <= codec.MAX_RECORD_BYTES:
            return [op]
        if len(entries) == 1:
            raise InvalidWriteError(f"entry {entries[0].index} is larger than a log record "
                                    f"may be ({codec.MAX_RECORD_BYTES} bytes)")
        half = len(entries) // 2
        return self._pack_entries(entries[:half]) + self._pack_entries(entries[half:])

    def _queue(self, op: bytes, index: int) -> None:
        with self._buffer_lock:
            self._pending.append((op, index))
            self._pending_bytes += len(op)

    def set_hard_state(self, hard_state: HardState) -> None:
        """Buffer a new hard state (see RaftStorage.set_hard_state for the rules)."""
        self._check_open()
        self._live.check_hard_state(hard_state)
        self._live.hard_state = hard_state

    def save(self, ready: Ready) -> None:
        """Persist a Ready's snapshot, entries and hard state, in that order (buffered)."""
        if ready.snapshot is not None:
            self.install_snapshot(ready.snapshot)
        if ready.entries:
            self.append(ready.entries)
        if ready.hard_state is not None:
            self.set_hard_state(ready.hard_state)

    def sync(self) -> None:
        """Make every write made before this call durable: usually one fdatasync.

        A changed term or vote is written to the hard-state file first (write, fsync, rename,
        fsync the directory); a changed commit index rides in the log record instead.

        sync() may run in a worker thread (``loop.run_in_executor``) while the owning thread goes
        on calling ``append`` and ``set_hard_state``: it takes the buffered writes when it
        starts, and what is written meanwhile waits for the next sync. Syncs, snapshot
        operations and close() wait for one another.
        On an I/O error the storage closes itself and raises StorageError: after a failed
        fsync nothing about the file can be trusted, so the node must restart and recover.
        """
        with self._io_lock:
            self._sync_locked()

    def _sync_locked(self) -> None:
        self._check_open()
        with self._buffer_lock:
            # Read the hard state before taking the buffer: a commit index set after some
            # entries were appended then always travels with (or after) those entries.
            hs, durable = self._live.hard_state, self._durable_hard_state
            ops, self._pending, self._pending_bytes = self._pending, [], 0
            self._in_flight = True
        try:
            with self._closing_on_failure("sync"):
                self._sync_captured(hs, durable, ops)
        finally:
            self._in_flight = False

    def _sync_captured(self, hs: HardState, durable: HardState,
                       ops: list[tuple[bytes, int]]) -> None:
        self._stats.syncs += 1
        if hs.term != durable.term or hs.vote != durable.vote:
            data = codec.encode_hard_state(hs._replace(commit=durable.commit))
            self._stats.fsyncs += write_atomic(self._dir, self._dir_fd, HARD_STATE_FILE, data)
        if hs.commit != durable.commit:
            ops.append((codec.pack_commit_op(hs.commit), 0))
        if ops:
            self._write_records(ops)
        self._durable_hard_state = hs

    @contextlib.contextmanager
    def _closing_on_failure(self, what: str) -> Iterator[None]:
        """Close the storage if the block fails: memory and disk may no longer agree.

        After a failed write or fsync nothing about the files can be trusted (the kernel may
        have dropped the dirty pages), so the node must restart and recover from the files.
        """
        try:
            yield
        except BaseException as exc:
            self._release()
            if isinstance(exc, OSError):
                raise StorageError(f"{self._dir}: {what} failed ({exc}); the storage is closed "
                                   f"and the node must restart") from exc
            raise

    def _write_records(self, ops: list[tuple[bytes, int]]) -> None:
        """Frame ``ops`` as one record (more if over the record limit), write, fdatasync."""
        segment = self._segments[-1]
        if segment.size >= self._segment_bytes:
            segment = self._roll()
        records: list[bytes] = []
        group: list[bytes] = []
        group_bytes = max_index = 0
        for op, index in ops:
            max_index = max(max_index, index)
            if group and group_bytes + len(op) + 16 > codec.MAX_RECORD_BYTES:
                records.append(codec.frame_ops(group))
                group, group_bytes = [], 0
            group.append(op)
            group_bytes += len(op)
        records.append(codec.frame_ops(group))
        data = records[0] if len(records) == 1 else b"".join(records)
        write_all(self._fd, data)
        os.fdatasync(self._fd)
        segment.size += len(data)
        segment.max_index = max(segment.max_index, max_index)
        self._stats.fsyncs += 1
        self._stats.bytes_written += len(data)

    def _roll(self) -> _Segment:
        segment = self._create_segment(self._segments[-1].seq + 1)
        fd = os.open(segment.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        os.close(self._fd)
        self._fd = fd
        self._segments.append(segment)
        return segment

    def install_snapshot(self, snapshot: Snapshot) -> None:
        """Durably store a snapshot from the leader (syncs pending writes first)."""
        self._check_open()
        self._live.check_install(snapshot)
        data = self._encode_snapshot(snapshot)
        index, term = snapshot.meta.index, snapshot.meta.term
        with self._io_lock, self._closing_on_failure("installing a snapshot"):
            self._sync_locked()
            self._write_snapshot(data)
            if not self._live.log.install(index, term):
                self._write_records([(codec.pack_reset_op(index, term), index)])
            self._live.snapshot = snapshot
            self._delete_segments_upto(index)

    def compact(self, snapshot: Snapshot) -> None:
        """Durably store a snapshot of this node's state machine and drop what it covers."""
        self._check_open()
        self._live.check_compact(snapshot)
        data = self._encode_snapshot(snapshot)
        with self._io_lock, self._closing_on_failure("compaction"):
            self._sync_locked()
            self._write_snapshot(data)
            self._live.log.compact(snapshot.meta.index, snapshot.meta.term)
            self._live.snapshot = snapshot
            self._delete_segments_upto(snapshot.meta.index)

    @staticmethod
    def _encode_snapshot(snapshot: Snapshot) -> bytes:
        data = codec.encode_snapshot(snapshot)
        if len(data) > codec.MAX_FILE_RECORD_BYTES:
            raise InvalidWriteError(f"snapshot of {len(data)} bytes is larger than 4 GiB")
        return data

    def _write_snapshot(self, data: bytes) -> None:
        self._stats.fsyncs += write_atomic(self._dir, self._dir_fd, SNAPSHOT_FILE, data)
        self._stats.bytes_written += len(data)

    def _delete_segments_upto(self, index: int) -> None:
        """Delete the oldest segments that mention nothing past ``index`` (never the active one)."""
        deleted = 0
        while len(self._segments) > 1 and self._segments[0].max_index <= index:
            os.unlink(self._segments.pop(0).path)
            deleted += 1
        if deleted:
            fsync_dir(self._dir_fd)
            self._stats.fsyncs += 1
            self._stats.segments_deleted += deleted

    # -- close ----------------------------------------------------------------------------

    def close(self, sync: bool = True) -> None:
        """Sync (unless ``sync=False``: drop unsynced writes, as a crash would) and release."""
        with self._io_lock:
            if self._closed:
                return
            try:
                if sync:
                    self._sync_locked()
            finally:
                self._release()

    def _release(self) -> None:
        self._closed = True
        for name in ("_fd", "_dir_fd", "_lock_fd"):
            fd = getattr(self, name, -1)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)

    def _check_open(self) -> None:
        if self._closed:
            raise StorageClosedError(f"{self._dir}: storage is closed")

    def __enter__(self) -> DiskStorage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
