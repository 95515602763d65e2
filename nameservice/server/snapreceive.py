"""The receiving side of snapshot streaming: chunks into a partial file, checked, resumed.

A follower holds at most one incoming stream. An offer names the snapshot by
``(index, snap_term, size, crc)``; its chunks go, in order, into the partial file
``DATA_DIR/snapshot-stream-INDEX-TERM-SIZE-CRC.partial``, each checked against its CRC32 first
(a bad one is refused, counted and asked for again: REWIND). Chunks are written as they come
(no fsync: a killed process leaves its writes in the page cache), so memory holds no more than
the chunks in flight. Once the file holds ``size`` bytes it is read back and checked against
the offer's CRC32 as a whole; only then is the ``SnapshotRequest`` stepped into the core, as if
it had come in one message, and the leader told DONE.

Resume: an offer of the same snapshot — from a new leader, in a new term, after the stream
broke, or after this process was killed and restarted (the file is found by its name) —
continues from the bytes already in the file (rounded down to a chunk boundary) instead of
from zero. A file whose bytes fail the final check (a torn write after a power loss) is
emptied and the stream starts over. An offer of another snapshot removes the old file, so a
data directory holds at most one. Without a data directory (``spool_dir=None``: a node on
``MemoryStorage``) the partial image is kept in memory.

Out of order, duplicate, stale or unknown chunks are counted and dropped; a gap is answered
with one REWIND, a chunk for no stream here with UNKNOWN (the leader offers again).
"""
from __future__ import annotations

import logging
import os
import zlib
from typing import Callable

from nameservice import wire
from nameservice.raft.messages import SnapshotRequest
from nameservice.raft.types import Snapshot, SnapshotMeta

log = logging.getLogger(__name__)

__all__ = ["MAX_SNAPSHOT_BYTES", "RECEIVE_TIMEOUT_S", "SnapshotReceiver", "partial_name"]

MAX_SNAPSHOT_BYTES = 4 << 30
"""Largest snapshot accepted (the storage's own limit on a snapshot file)."""
RECEIVE_TIMEOUT_S = 10.0
"""No chunk for this long: the stream is forgotten and its file closed (kept for a resume)."""
UNKNOWN_EVERY_S = 0.2
"""UNKNOWN is answered at most this often (every chunk in flight would ask otherwise)."""
_PREFIX, _SUFFIX = "snapshot-stream-", ".partial"


def partial_name(index: int, snap_term: int, size: int, crc: int) -> str:
    """The partial file's name for a snapshot."""
    return f"{_PREFIX}{index}-{snap_term}-{size}-{crc:08x}{_SUFFIX}"


class _FileSpool:
    """The partial image in a file (written at its end, read back whole)."""

    def __init__(self, directory: str, name: str) -> None:
        for other in os.listdir(directory):
            if other.startswith(_PREFIX) and other.endswith(_SUFFIX) and other != name:
                os.unlink(os.path.join(directory, other))
        self.path = os.path.join(directory, name)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        self.length = os.fstat(self._fd).st_size

    def truncate(self, length: int) -> None:
        os.ftruncate(self._fd, length)
        self.length = length

    def append(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.pwrite(self._fd, view, self.length)
            self.length += written
            view = view[written:]

    def read_all(self) -> bytes:
        parts = []
        offset = 0
        while offset < self.length:
            part = os.pread(self._fd, self.length - offset, offset)
            if not part:
                break
            parts.append(part)
            offset += len(part)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def remove(self) -> None:
        self.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class _MemorySpool:
    """The partial image in memory (a node without a data directory)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    @property
    def length(self) -> int:
        return len(self._buf)

    def truncate(self, length: int) -> None:
        del self._buf[length:]

    def append(self, data: bytes) -> None:
        self._buf += data

    def read_all(self) -> bytes:
        return bytes(self._buf)

    def close(self) -> None:
        pass

    def remove(self) -> None:
        self._buf = bytearray()


class _Incoming:
    __slots__ = ("offer", "ident", "leader", "term", "spool", "expected", "nacked_at",
                 "last_heard", "started", "resumed_from")

    def __init__(self, offer: wire.SnapOffer, spool: _FileSpool | _MemorySpool,
                 now: float) -> None:
        self.offer = offer
        self.ident = _ident(offer)
        self.leader = offer.frm
        self.term = offer.term
        self.spool = spool
        self.expected = 0  # the file holds [0, expected), every chunk of it checked
        self.nacked_at = -1  # the offset a gap was last answered for
        self.last_heard = self.started = now
        self.resumed_from = 0


def _ident(offer: wire.SnapOffer) -> tuple[int, int, int, int]:
    return offer.index, offer.snap_term, offer.size, offer.crc


class SnapshotReceiver:
    """A follower's side of snapshot streaming (see module docstring).

    ``send_frame(peer, frame)`` sends an acknowledgement now; ``deliver(request)`` steps the
    complete ``SnapshotRequest`` into the core; ``committed_index()`` and ``current_term()``
    are the core's; ``spool_dir``: where the partial file goes (None: in memory).
    """

    def __init__(self, me: int, send_frame: Callable[[int, bytes], None],
                 deliver: Callable[[SnapshotRequest], None], *,
                 committed_index: Callable[[], int], current_term: Callable[[], int],
                 spool_dir: str | None, clock: Callable[[], float],
                 timeout_s: float = RECEIVE_TIMEOUT_S) -> None:
        self._me = me
        self._send_frame = send_frame
        self._deliver = deliver
        self._committed_index = committed_index
        self._current_term = current_term
        self.spool_dir = spool_dir
        self._clock = clock
        self.timeout_s = timeout_s
        self._stream: _Incoming | None = None
        self._memory: _Incoming | None = None  # an in-memory stream kept for a resume
        self._unknown_sent = -UNKNOWN_EVERY_S
        self.last_completed: dict | None = None
        """The last stream completed: ``leader``, ``index``, ``bytes``, ``resumed_from``,
        ``stream_s`` (from the offer this run accepted to the image verified)."""
        self.counters = {"snapshot_receives_started": 0, "snapshot_receives_resumed": 0,
                         "snapshot_receives_completed": 0, "snapshot_receives_corrupt": 0,
                         "snapshot_chunks_received": 0, "snapshot_chunks_refused": 0,
                         "snapshot_chunks_dropped": 0, "snapshot_bytes_received": 0}

    @property
    def receiving(self) -> dict | None:
        """The stream being received (``index``, ``size``, ``received``, ``leader``), or None."""
        s = self._stream
        if s is None:
            return None
        return {"index": s.offer.index, "size": s.offer.size, "received": s.expected,
                "leader": s.leader}

    def _ack(self, s: _Incoming, status: int, offset: int) -> None:
        self._send_frame(s.leader, wire.encode_snap_frame([wire.SnapAck(
            self._me, s.leader, s.term, s.offer.index, status, offset)]))

    # ------------------------------------------------------------------ offers

    def handle_offer(self, offer: wire.SnapOffer) -> bool:
        """An offer: start, resume or refuse a stream; False if it is dropped."""
        if offer.term < self._current_term() or not 0 < offer.size <= MAX_SNAPSHOT_BYTES:
            return False  # a deposed leader's, or absurd (a state machine's image is not empty)
        now = self._clock()
        s = self._stream
        if s is not None and offer.term < s.term:
            return False  # an older leader's while a newer one streams
        if offer.index <= self._committed_index():
            # The core would not look at the data: say it is there (the core catches up
            # through appends). Any stream stays as it is.
            self._send_frame(offer.frm, wire.encode_snap_frame([wire.SnapAck(
                self._me, offer.frm, offer.term, offer.index, wire.ACK_DONE, offer.size)]))
            return True
        ident = _ident(offer)
        if s is None and self._memory is not None and self._memory.ident == ident:
            s = self._stream = self._memory
        if s is not None and s.ident != ident:
            s.spool.remove()
            s = self._stream = None
        self._memory = None
        if s is None:
            try:
                spool = self._open(offer)
            except OSError as exc:
                log.error("cannot write a partial snapshot in %s: %s", self.spool_dir, exc)
                return True
            s = self._stream = _Incoming(offer, spool, now)
            self.counters["snapshot_receives_started"] += 1
            s.expected = spool.length
        resumed = s.expected
        if resumed and resumed != offer.size:
            resumed -= resumed % offer.chunk_size  # chunks start at multiples of the size
        if resumed > offer.size:
            resumed = 0
        if resumed != s.spool.length:
            s.spool.truncate(resumed)
        if resumed:
            self.counters["snapshot_receives_resumed"] += 1
            log.info("resuming snapshot %d from node %d at byte %d of %d", offer.index,
                     offer.frm, resumed, offer.size)
        s.offer, s.leader, s.term = offer, offer.frm, offer.term
        s.expected, s.nacked_at, s.last_heard = resumed, -1, now
        s.started, s.resumed_from = now, resumed
        self._ack(s, wire.ACK_REWIND, resumed)
        if resumed == offer.size:
            self._finish(s)
        return True

    def _open(self, offer: wire.SnapOffer) -> _FileSpool | _MemorySpool:
        if self.spool_dir is None:
            return _MemorySpool()
        return _FileSpool(self.spool_dir, partial_name(*_ident(offer)))

    # ------------------------------------------------------------------ chunks

    def handle_chunk(self, chunk: wire.SnapChunk) -> bool:
        """A chunk: written if it is the next one and intact; False if it is dropped."""
        s = self._stream
        counters = self.counters
        if s is None or chunk.frm != s.leader or chunk.term != s.term or (
                chunk.index != s.offer.index):
            counters["snapshot_chunks_dropped"] += 1
            now = self._clock()
            if (chunk.term >= self._current_term()
                    and now - self._unknown_sent >= UNKNOWN_EVERY_S):
                self._unknown_sent = now
                self._send_frame(chunk.frm, wire.encode_snap_frame([wire.SnapAck(
                    self._me, chunk.frm, chunk.term, chunk.index, wire.ACK_UNKNOWN, 0)]))
            return True
        s.last_heard = self._clock()
        offset, data = chunk.offset, chunk.data
        if offset != s.expected:
            counters["snapshot_chunks_dropped"] += 1
            if offset < s.expected:
                self._ack(s, wire.ACK_PROGRESS, s.expected)  # its ack may have been lost
            elif s.nacked_at != s.expected:
                s.nacked_at = s.expected  # once per gap: the chunks behind it fall in it too
                self._ack(s, wire.ACK_REWIND, s.expected)
            return True
        size, n = s.offer.size, len(data)
        if (n == 0 or offset + n > size or (n != s.offer.chunk_size and offset + n != size)
                or zlib.crc32(data) != chunk.crc):
            counters["snapshot_chunks_refused"] += 1
            log.warning("refused a chunk of snapshot %d at byte %d from node %d (bad CRC or "
                        "size)", s.offer.index, offset, s.leader)
            s.nacked_at = s.expected
            self._ack(s, wire.ACK_REWIND, s.expected)
            return True
        try:
            s.spool.append(data)
        except OSError as exc:
            log.error("cannot write the partial snapshot: %s", exc)
            s.spool.truncate(s.expected)
            return True
        s.expected += n
        counters["snapshot_chunks_received"] += 1
        counters["snapshot_bytes_received"] += n
        if s.expected == size:
            self._finish(s)
        else:
            self._ack(s, wire.ACK_PROGRESS, s.expected)
        return True

    def _finish(self, s: _Incoming) -> None:
        offer = s.offer
        if s.term < self._current_term():
            # The core would drop it (a deposed leader's term): keep the whole image for the
            # next leader's offer of the same snapshot, which then finishes at once.
            self._forget(s)
            return
        data = s.spool.read_all()
        if len(data) != offer.size or zlib.crc32(data) != offer.crc:
            self.counters["snapshot_receives_corrupt"] += 1
            log.warning("snapshot %d from node %d failed its whole-image check: starting over",
                        offer.index, s.leader)
            s.spool.truncate(0)
            s.expected, s.nacked_at = 0, 0
            self._ack(s, wire.ACK_REWIND, 0)
            return
        s.spool.remove()
        self._stream = None
        meta = SnapshotMeta(offer.index, offer.snap_term, offer.voters, offer.learners)
        self.counters["snapshot_receives_completed"] += 1
        self.last_completed = {"leader": s.leader, "index": offer.index, "bytes": offer.size,
                               "resumed_from": s.resumed_from,
                               "stream_s": round(self._clock() - s.started, 4)}
        self._deliver(SnapshotRequest(s.leader, self._me, s.term, Snapshot(meta, data)))
        self._ack(s, wire.ACK_DONE, offer.size)

    # ------------------------------------------------------------------ time

    def tick(self) -> None:
        """Forget a stream whose leader went silent (its file stays for a resume)."""
        s = self._stream
        if s is not None and self._clock() - s.last_heard >= self.timeout_s:
            self._forget(s)

    def _forget(self, s: _Incoming) -> None:
        """Stop receiving ``s``; what it holds stays for a resume (its file, or in memory)."""
        s.spool.close()
        self._stream = None
        if self.spool_dir is None:
            self._memory = s

    def close(self) -> None:
        """Close the partial file (it stays on disk)."""
        if self._stream is not None:
            self._stream.spool.close()
            self._stream = None
