"""Snapshot streaming: a leader sends a follower that is far behind (or new) its snapshot in
chunks, with flow control, resumable, CRC-checked, while it keeps serving.

Theory of operation
-------------------
The Raft core asks for a snapshot to be sent with a ``SnapshotRequest`` carrying the whole
image, and asks again about every election timeout while the follower has not answered. The
node hands such requests to ``SnapshotStreams.intercept`` instead of the transport:

* the ``SnapshotSender`` (here) runs at most one stream per peer. It computes the image's
  CRC32 in a worker thread, then **offers** the stream (meta, size, CRC, chunk size); the
  receiver answers where to start (REWIND: 0, or the bytes it already holds from an earlier
  try). Then it sends **chunks** (``CHUNK_SIZE``, each with its offset and its own CRC32) from
  memoryview slices of the image, at most ``WINDOW_CHUNKS`` beyond the receiver's cumulative
  acknowledgement: each PROGRESS ack lets one more chunk out, so sending is spread over the
  loop's iterations and never blocks it. No progress for ``RETRANSMIT_S``: the first
  unacknowledged chunk is sent again (a probe; the window refills from the acks it brings).
  Nothing heard for ``STREAM_TIMEOUT_S``: the stream is dropped (the core asks again later
  and the new offer resumes). The core's repeated requests for the stream's snapshot change
  nothing; a request in a new term replaces the stream; a newer snapshot in the same term
  waits until the running stream ends (see docs/nameservice.md, "Snapshot streaming", why).
* the ``SnapshotReceiver`` (``snapreceive.py``) writes chunks to a partial file in the data
  directory, checks each chunk's CRC and, at the end, the whole image's, then steps the
  complete ``SnapshotRequest`` into the core — which then runs exactly as before.

Wire: SNAP frames (``nameservice.wire``: ``SnapOffer``, ``SnapChunk``, ``SnapAck``), sent at
once with ``send_frame(peer, frame)``, not through the step's outbox. Stream messages that
decode but fit no stream are counted (``snapshot_frames_dropped``) and dropped.

The clock is injected (``clock()``: monotonic seconds), as is ``run_in_thread(fn, *args)``
(returns a future whose done-callbacks run on the loop; ``None``: run inline), so both sides
are tested without a loop or a network.
"""
from __future__ import annotations

import logging
import time
import zlib
from concurrent.futures import Future
from typing import Any, Callable

from nameservice import wire
from nameservice.raft.messages import SnapshotRequest
from nameservice.server.snapreceive import SnapshotReceiver

log = logging.getLogger(__name__)

__all__ = ["CHUNK_SIZE", "MAX_STREAMS", "RETRANSMIT_S", "STREAM_TIMEOUT_S", "WINDOW_CHUNKS",
           "SnapshotSender", "SnapshotStreams"]

CHUNK_SIZE = 1 << 20
"""Bytes per chunk: the per-chunk cost (a frame, an ack, a CRC call) is then negligible,
and one chunk's copy and CRC (well under a millisecond) never stalls the loop."""
WINDOW_CHUNKS = 8
"""Chunks in flight beyond the receiver's acknowledgement (8 MiB)."""
RETRANSMIT_S = 1.0
"""No acknowledgement progress for this long: send the first unacknowledged chunk again."""
OFFER_RETRY_S = 0.5
"""An offer not answered for this long is sent again."""
STREAM_TIMEOUT_S = 10.0
"""Nothing heard from the receiver for this long: the stream is dropped."""
DONE_LINGER_S = 1.0
"""A finished stream is remembered this long, so that a request the core sent before it
heard of the install does not start the stream over."""
MAX_STREAMS = 4
"""Streams a leader runs at once (one per peer); requests beyond wait for the core to ask
again."""

RunInThread = Callable[..., "Future[Any] | Any"]
SendFrame = Callable[[int, bytes], None]

_PREPARING, _OFFERED, _SENDING, _DONE = range(4)


class _Outgoing:
    """One stream to one peer."""

    __slots__ = ("peer", "term", "index", "snapshot", "view", "size", "crc", "state", "acked",
                 "next", "sent_max", "started", "offered", "last_heard", "last_progress",
                 "last_offer", "done_at")

    def __init__(self, request: SnapshotRequest, now: float) -> None:
        self.peer = request.to
        self.term = request.term
        self.snapshot = request.snapshot
        self.index = request.snapshot.meta.index
        self.view = memoryview(request.snapshot.data)
        self.size = len(self.view)
        self.crc: int | None = None
        self.state = _PREPARING
        self.acked = 0  # the receiver holds [0, acked)
        self.next = 0  # the next byte to send
        self.sent_max = 0  # bytes below this were sent at least once
        self.started = self.last_heard = self.last_progress = now
        self.offered = self.last_offer = 0.0
        self.done_at = 0.0


class SnapshotSender:
    """The leader's side: one stream per peer (see module docstring).

    ``send_frame(peer, frame)`` sends one SNAP frame now (dropped if the peer is down).
    """

    def __init__(self, me: int, send_frame: SendFrame, *, clock: Callable[[], float],
                 run_in_thread: RunInThread | None = None, chunk_size: int = CHUNK_SIZE,
                 window: int = WINDOW_CHUNKS, max_streams: int = MAX_STREAMS,
                 timeout_s: float = STREAM_TIMEOUT_S) -> None:
        if not 0 < chunk_size <= wire.MAX_SNAP_CHUNK:
            raise ValueError(f"chunk size {chunk_size} is not in 1..{wire.MAX_SNAP_CHUNK}")
        self._me = me
        self._send_frame = send_frame
        self._clock = clock
        self._run_in_thread = run_in_thread
        self.chunk_size = chunk_size
        self.window = window
        self.max_streams = max_streams
        self.timeout_s = timeout_s
        self._streams: dict[int, _Outgoing] = {}
        self._crcs: dict[tuple[int, int], tuple[bytes, int]] = {}  # (index, term) -> image, crc
        self.last_completed: dict | None = None
        """The last stream completed: ``peer``, ``index``, ``bytes``, ``prepare_s`` (the CRC),
        ``stream_s`` (from the first offer to DONE)."""
        self.counters = {"snapshot_streams_started": 0, "snapshot_streams_resumed": 0,
                         "snapshot_streams_completed": 0, "snapshot_streams_expired": 0,
                         "snapshot_requests_coalesced": 0, "snapshot_chunks_sent": 0,
                         "snapshot_chunks_resent": 0, "snapshot_bytes_sent": 0,
                         "snapshot_bytes_skipped": 0}

    def __len__(self) -> int:
        return len(self._streams)

    def peers(self) -> list[int]:
        """The peers with a stream (running, or finished a moment ago)."""
        return list(self._streams)

    def stream_state(self, peer: int) -> dict | None:
        """The stream to ``peer`` (``term``, ``index``, ``size``, ``acked``, ``next``,
        ``state``), or None."""
        s = self._streams.get(peer)
        if s is None:
            return None
        state = ("preparing", "offered", "sending", "done")[s.state]
        return {"term": s.term, "index": s.index, "size": s.size, "acked": s.acked,
                "next": s.next, "state": state}

    # ------------------------------------------------------------------ requests from the core

    def offer(self, request: SnapshotRequest) -> None:
        """The core asks for ``request``'s snapshot to be sent: start a stream, or leave the
        running one alone."""
        now = self._clock()
        s = self._streams.get(request.to)
        if s is not None and s.term == request.term:
            expired_done = s.state == _DONE and now - s.done_at >= DONE_LINGER_S
            if s.index == request.snapshot.meta.index and not expired_done:
                self.counters["snapshot_requests_coalesced"] += 1
                if s.state == _OFFERED and now - s.last_offer >= OFFER_RETRY_S:
                    self._send_offer(s, now)
                return
            if s.state != _DONE:
                # A newer snapshot: the running stream finishes first (docs: why).
                self.counters["snapshot_requests_coalesced"] += 1
                return
        elif s is None and len(self._streams) >= self.max_streams:
            self._expire(now)
            if len(self._streams) >= self.max_streams:
                return  # the core asks again
        s = _Outgoing(request, now)
        self._streams[request.to] = s
        self.counters["snapshot_streams_started"] += 1
        meta = request.snapshot.meta
        key = (meta.index, meta.term)
        cached = self._crcs.get(key)
        if cached is not None and cached[0] is request.snapshot.data:
            self._prepared(s, cached[1])
        elif self._run_in_thread is None:
            self._prepared(s, zlib.crc32(request.snapshot.data))
        else:
            future = self._run_in_thread(zlib.crc32, request.snapshot.data)
            future.add_done_callback(lambda f: self._crc_done(s, f))

    def _crc_done(self, s: _Outgoing, future: Future) -> None:
        if future.cancelled() or future.exception() is not None:
            if self._streams.get(s.peer) is s:
                del self._streams[s.peer]
            return
        self._prepared(s, future.result())

    def _prepared(self, s: _Outgoing, crc: int) -> None:
        meta = s.snapshot.meta
        self._crcs = {(meta.index, meta.term): (s.snapshot.data, crc)}  # the newest only
        if self._streams.get(s.peer) is not s:
            return  # replaced or dropped meanwhile
        s.crc = crc
        s.offered = self._clock()
        self._send_offer(s, s.offered)

    def _send_offer(self, s: _Outgoing, now: float) -> None:
        assert s.crc is not None
        meta = s.snapshot.meta
        s.state = _OFFERED
        s.last_offer = now
        self._send_frame(s.peer, wire.encode_snap_frame([wire.SnapOffer(
            self._me, s.peer, s.term, s.index, meta.term, tuple(meta.voters),
            tuple(meta.learners), s.size, s.crc, self.chunk_size)]))

    def abandon(self) -> None:
        """Drop every stream (this node stopped leading)."""
        self._streams.clear()

    # ------------------------------------------------------------------ acknowledgements

    def handle_ack(self, ack: wire.SnapAck) -> bool:
        """Take one acknowledgement; False if it fits no stream (the caller counts it)."""
        s = self._streams.get(ack.frm)
        if (s is None or s.term != ack.term or s.index != ack.index or s.crc is None
                or s.state == _DONE):
            return False
        now = self._clock()
        status, offset = ack.status, ack.offset
        if status == wire.ACK_UNKNOWN:
            s.last_heard = now
            if s.state != _OFFERED or now - s.last_offer >= OFFER_RETRY_S:
                self._send_offer(s, now)  # the receiver restarted, or lost the stream
            return True
        if status == wire.ACK_DONE:
            if offset != s.size:
                return False
            s.state = _DONE
            s.done_at = s.last_heard = now
            s.acked = s.size
            s.view = memoryview(b"")  # the image is no longer needed here
            s.snapshot = s.snapshot._replace(data=b"")
            self.counters["snapshot_streams_completed"] += 1
            self.last_completed = {"peer": s.peer, "index": s.index, "bytes": s.size,
                                   "prepare_s": round(s.offered - s.started, 4),
                                   "stream_s": round(now - s.offered, 4)}
            log.info("snapshot %d (%d bytes) streamed to node %d in %.2f s", s.index, s.size,
                     s.peer, now - s.offered)
            return True
        if offset > s.size or (offset % self.chunk_size and offset != s.size):
            return False
        if status == wire.ACK_REWIND:
            if s.state == _OFFERED and offset:
                self.counters["snapshot_streams_resumed"] += 1
                self.counters["snapshot_bytes_skipped"] += offset
            s.state = _SENDING
            s.acked = s.next = offset
        elif s.state != _SENDING or offset > s.sent_max:
            return False  # progress past what was sent: not ours to believe
        elif offset > s.acked:
            s.acked = offset
            s.next = max(s.next, offset)
        else:
            s.last_heard = now
            return True
        s.last_heard = s.last_progress = now
        self._pump(s, self.window)
        return True

    def _pump(self, s: _Outgoing, window: int) -> None:
        """Send chunks while fewer than ``window`` are unacknowledged."""
        limit = min(s.size, s.acked + window * self.chunk_size)
        view, chunk, counters = s.view, self.chunk_size, self.counters
        while s.next < limit:
            start = s.next
            end = min(start + chunk, s.size)
            piece = view[start:end]
            self._send_frame(s.peer, wire.encode_snap_frame([wire.SnapChunk(
                self._me, s.peer, s.term, s.index, start, zlib.crc32(piece), piece)]))
            counters["snapshot_chunks_sent"] += 1
            counters["snapshot_bytes_sent"] += end - start
            if start < s.sent_max:
                counters["snapshot_chunks_resent"] += 1
            s.next = end
            s.sent_max = max(s.sent_max, end)

    # ------------------------------------------------------------------ time

    def tick(self) -> None:
        """Resend what went unanswered; drop streams whose receiver went silent."""
        now = self._clock()
        self._expire(now)
        for s in self._streams.values():
            if s.state == _OFFERED and now - s.last_offer >= OFFER_RETRY_S:
                self._send_offer(s, now)
            elif (s.state == _SENDING and s.acked < s.size
                  and now - s.last_progress >= RETRANSMIT_S):
                s.next = s.acked
                s.last_progress = now
                self._pump(s, 1)  # a probe; the window refills as its acks come

    def _expire(self, now: float) -> None:
        for peer, s in list(self._streams.items()):
            if s.state == _DONE:
                if now - s.done_at >= DONE_LINGER_S:
                    del self._streams[peer]
            elif now - s.last_heard >= self.timeout_s:
                del self._streams[peer]
                self.counters["snapshot_streams_expired"] += 1
                log.warning("snapshot stream to node %d dropped: nothing heard for %.1f s "
                            "(%d of %d bytes acknowledged)", peer, now - s.last_heard, s.acked,
                            s.size)


class SnapshotStreams:
    """The node's snapshot streaming part: the sender and the receiver, and the routing of
    stream messages between them (see module docstring).

    ``send_frame(peer, frame)`` sends a SNAP frame now; ``deliver(request)`` steps a received
    ``SnapshotRequest`` into the core; ``committed_index()`` and ``current_term()`` are the
    core's; ``spool_dir`` holds the partial file (None: kept in memory).
    """

    def __init__(self, me: int, send_frame: SendFrame, deliver: Callable[[SnapshotRequest], None],
                 *, committed_index: Callable[[], int], current_term: Callable[[], int],
                 spool_dir: str | None, clock: Callable[[], float] = time.monotonic,
                 run_in_thread: RunInThread | None = None, **sender_options: Any) -> None:
        self._me = me
        self.sender = SnapshotSender(me, send_frame, clock=clock, run_in_thread=run_in_thread,
                                     **sender_options)
        self.receiver = SnapshotReceiver(me, send_frame, deliver, committed_index=committed_index,
                                         current_term=current_term, spool_dir=spool_dir,
                                         clock=clock)
        self._dropped = {"snapshot_frames_dropped": 0}

    @property
    def counters(self) -> dict[str, int]:
        """Both sides' counters."""
        return {**self.sender.counters, **self.receiver.counters, **self._dropped}

    def status(self) -> dict:
        """What ``fabric ns status`` shows: the streams running and the last ones completed."""
        sender = self.sender
        sending = {str(peer): sender.stream_state(peer) for peer in sender.peers()}
        return {"sending": sending, "receiving": self.receiver.receiving,
                "last_sent": sender.last_completed, "last_received": self.receiver.last_completed}

    def intercept(self, messages: list) -> list:
        """Take the ``SnapshotRequest``s out of ``messages`` (they are streamed); the rest."""
        for m in messages:
            if type(m) is SnapshotRequest:
                break
        else:
            return messages
        rest = []
        for m in messages:
            if type(m) is SnapshotRequest:
                self.sender.offer(m)
            else:
                rest.append(m)
        return rest

    def handle(self, messages: list) -> None:
        """Stream messages from a SNAP frame."""
        sender, receiver = self.sender, self.receiver
        for m in messages:
            if m.to != self._me or m.frm == self._me:
                ok = False
            elif type(m) is wire.SnapChunk:
                ok = receiver.handle_chunk(m)
            elif type(m) is wire.SnapAck:
                ok = sender.handle_ack(m)
            else:
                ok = receiver.handle_offer(m)
            if not ok:
                self._dropped["snapshot_frames_dropped"] += 1

    def tick(self) -> None:
        """Timers of both sides."""
        self.sender.tick()
        self.receiver.tick()

    def abandon(self) -> None:
        """This node stopped leading: its outgoing streams end."""
        self.sender.abandon()

    def close(self) -> None:
        """Release the partial file (it stays on disk for a resume)."""
        self.sender.abandon()
        self.receiver.close()
