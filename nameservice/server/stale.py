"""A node's quorum-less writes: accepted here, kept on this node's disk, replayed through Raft.

Theory of operation (docs/nameservice.md, "Quorum-less writes"; the conflict rule is in
docs/kv.md). A client's ``put(..., consistent=False)`` reaches one node, which records it in its
``StaleOverlay`` with the key's mod_revision in its applied state as the write's *base*
(``StaleWrites.accept``). Before the reply leaves, the whole overlay is written to
``DATA_DIR/stale-writes`` (temporary file, fsync, rename, directory fsync) — once per loop
iteration for every write that arrived in it (``flush``). The node's stale reads see the
overlay at once (``read``/``range``).

``StaleReplayer`` is a task in the node's process: whenever the overlay holds writes and the
node knows a leader, it sends each as a ``StaleWrite`` command through an ordinary client
session to the leader, feeds each answer to ``StaleOverlay.settle`` (which drops the write,
applied or conflicted) and rewrites the file. Failures (no leader, timeouts, an expired
session) leave the writes pending; the next round retries them after a pause. A conflict is
logged and kept for ``fabric ns status``.

Bounds: at most ``max_pending`` keys (10,000) and about ``max_bytes`` (16 MiB) of pending
writes; past either, a write is refused with BAD_REQUEST and nothing is recorded.

In memory (``StaleWrites(None)``, for in-process nodes): the same rules without the file. The
replayer's client speaks ZeroMQ, so in an in-process cluster (``memtransport.py``) the writes
are accepted and read back, but stay pending.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
import zlib
from typing import Callable

from nameservice import wire
from nameservice.client.api import NameServiceClient
from nameservice.kv import DecodeError as KvDecodeError
from nameservice.kv import KeyValue, KvStateMachine, Result, StaleBacklogFull, StaleOverlay
from nameservice.kv.codec import kv_to_wire
from nameservice.kv.stale import PendingWrite
from nameservice.metrics import Buckets
from nameservice.storage.errors import CorruptFileError
from nameservice.storage.files import read_file, write_atomic

log = logging.getLogger(__name__)

__all__ = ["STALE_FILE", "StaleWrites", "StaleReplayer"]

STALE_FILE = "stale-writes"
"""The file in the node's data directory holding its pending quorum-less writes."""
MAX_PENDING_BYTES = 16 << 20
"""Approximate bytes of pending writes (keys and values) a node keeps."""
RETRY_S = (0.1, 2.0)
"""Pause after a failed replay round: starts at the first, doubles up to the second."""

Reply = Callable[[bytes, int, int, object], None]


class StaleWrites:
    """The overlay of one node, its durable copy, and the replies waiting for it.

    ``data_dir`` None keeps the overlay in memory only (an in-process node on
    ``MemoryStorage``, whose log does not outlive the process either): writes are answered
    at the next ``flush`` without a file, and a new ``StaleWrites`` starts empty.
    """

    def __init__(self, data_dir: str | None, max_pending: int = 10_000,
                 max_bytes: int = MAX_PENDING_BYTES) -> None:
        self.overlay = StaleOverlay(max_pending=max_pending)
        self.max_bytes = max_bytes
        self._dir = data_dir
        self._path = os.path.join(data_dir, STALE_FILE) if data_dir is not None else None
        self._bytes = 0
        self._waiting: list[tuple[bytes, int, bool]] = []
        self._dirty = False
        self.changed = asyncio.Event()
        """Set when the overlay holds writes to replay (the replayer clears it)."""
        self.refused = 0
        self.persist_failures = 0
        self._first_at = 0.0  # when the first write waiting for ``flush`` came
        self.latency = Buckets()
        """Seconds from a write's arrival to its answer (per write), ``flush`` included."""
        data = read_file(self._path) if self._path is not None else None
        if data is not None:
            self._load(data)

    def _load(self, data: bytes) -> None:
        path = self._path or "(in memory)"
        if len(data) < 4 or zlib.crc32(data[4:]).to_bytes(4, "big") != data[:4]:
            raise CorruptFileError(path, "checksum mismatch (move it aside to start "
                                               "without its unreplicated writes)")
        try:
            self.overlay.load(data[4:])
        except KvDecodeError as exc:
            raise CorruptFileError(path, str(exc)) from None
        self._bytes = len(data)
        if len(self.overlay):
            log.info("%d quorum-less writes waiting to be replicated", len(self.overlay))
            self.changed.set()

    # ------------------------------------------------------------------ accepting

    def accept(self, identity: bytes, rid: int, key: bytes, value: bytes | None,
               applied: KeyValue | None) -> None:
        """Record a write (``applied``: the key in this node's applied state); its reply
        waits for ``flush``. Raises ``ValueError`` (bad key or value) or ``StaleBacklogFull``
        (counted in ``refused``)."""
        size = len(key) + (len(value) if value is not None else 0) + 16
        try:
            if self._bytes + size > self.max_bytes:
                raise StaleBacklogFull(f"{self._bytes} bytes of writes are waiting for a quorum")
            existed = self.overlay.read(key, applied) is not None
            self.overlay.write(key, value, applied)
        except StaleBacklogFull:
            self.refused += 1
            raise
        self._bytes += size
        self._dirty = True
        if not self._waiting:
            self._first_at = time.monotonic()
        self._waiting.append((identity, rid, existed))
        self.changed.set()

    def flush(self, reply: Reply) -> None:
        """Make the overlay durable if it changed; then answer the writes waiting for it."""
        waiting, self._waiting = self._waiting, []
        try:
            self.persist()
        except OSError as exc:
            self.persist_failures += 1
            log.error("could not write %s: %s", self._path, exc)
            for identity, rid, _ in waiting:
                reply(identity, rid, wire.ST_UNAVAILABLE, f"could not persist the write: {exc}")
            return
        for identity, rid, existed in waiting:
            reply(identity, rid, wire.ST_OK, existed)
        if waiting:
            self.latency.observe(time.monotonic() - self._first_at, len(waiting))

    @property
    def has_waiting(self) -> bool:
        """Whether accepted writes wait for ``flush``."""
        return bool(self._waiting)

    def persist(self) -> None:
        """Write the overlay to disk (fsynced) if it changed since the last write (in memory:
        nothing to write)."""
        if not self._dirty:
            return
        if self._dir is None:
            self._dirty = False
            return
        body = self.overlay.encode()
        data = zlib.crc32(body).to_bytes(4, "big") + body
        dir_fd = os.open(self._dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            write_atomic(self._dir, dir_fd, STALE_FILE, data)
        finally:
            os.close(dir_fd)
        self._bytes = len(data)
        self._dirty = False

    def try_persist(self) -> bool:
        """``persist``; a failure is counted and logged (the writes stay in memory, and are
        written with the next change). Whether it succeeded."""
        try:
            self.persist()
        except OSError as exc:
            self.persist_failures += 1
            log.error("could not write the quorum-less writes: %s", exc)
            return False
        return True

    # ------------------------------------------------------------------ reading and settling

    def read(self, key: bytes, applied: KeyValue | None) -> KeyValue | None:
        """The key as this node's stale reads see it."""
        return self.overlay.read(key, applied) if len(self.overlay) else applied

    def range(self, prefix: bytes, applied: list[KeyValue], limit: int) -> list[KeyValue]:
        """A stale range with the pending writes laid over (at most ``limit`` when > 0)."""
        if not len(self.overlay):
            return applied
        merged = self.overlay.range(prefix, applied)
        return merged[:limit] if limit > 0 else merged

    def read_payload(self, machine: KvStateMachine, get: bool, key: bytes, limit: int) -> list:
        """The reply payload of a stale GET (``get``) or RANGE, as the node's other reads."""
        if get:
            kv = self.read(key, machine.get(key))
            return [None if kv is None else kv_to_wire(kv), machine.revision]
        kvs = self.range(key, machine.range(key), limit)
        return [[kv_to_wire(kv) for kv in kvs], machine.revision]

    def settle(self, proposed: PendingWrite, result: Result) -> None:
        """Take the log's answer to a replayed write."""
        conflict = self.overlay.settle(proposed, result)
        self._dirty = True
        if conflict is not None:
            current = conflict.current
            log.warning("quorum-less write of %r conflicted and was dropped: the key changed "
                        "since this node saw it (base revision %d, now %s)",
                        conflict.key[:80], conflict.base_mod_revision,
                        "absent" if current is None else f"revision {current.mod_revision}")

    def status(self) -> dict:
        """Counts and the most recent conflicts, for ``fabric ns status``."""
        overlay = self.overlay
        return {
            "pending": len(overlay), "conflicts": overlay.conflict_count,
            "refused": self.refused, "persist_failures": self.persist_failures,
            "recent_conflicts": [
                {"key": c.key.decode("utf-8", "replace"),
                 "value": None if c.value is None else c.value.decode("utf-8", "replace"),
                 "base_revision": c.base_mod_revision,
                 "current_revision": 0 if c.current is None else c.current.mod_revision}
                for c in list(overlay.conflicts)[-10:]],
        }


class StaleReplayer:
    """Replays a node's pending quorum-less writes through the leader (module docstring).

    ``addresses``: the cluster's client addresses; ``leader_known()``: whether the node
    currently knows a leader (no round is tried without one).
    """

    def __init__(self, writes: StaleWrites, addresses: list[str],
                 leader_known: Callable[[], bool], timeout: float = 5.0) -> None:
        self.writes = writes
        self._addresses = addresses
        self._leader_known = leader_known
        self._timeout = timeout
        self._client: NameServiceClient | None = None
        self.leader_seen = asyncio.Event()
        """Set by the node when it learns of a leader."""
        self.rounds = 0

    async def run(self) -> None:
        """Replay until cancelled."""
        pause = RETRY_S[0]
        try:
            while True:
                await self.writes.changed.wait()
                if not self._leader_known():
                    self.leader_seen.clear()
                    await self.leader_seen.wait()
                    continue
                self.writes.changed.clear()
                if not len(self.writes.overlay):
                    continue
                if await self._round():
                    pause = RETRY_S[0]
                else:
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, RETRY_S[1])
                if len(self.writes.overlay):
                    self.writes.changed.set()
        finally:
            if self._client is not None:
                await self._client.close()

    async def _round(self) -> bool:
        """Send every pending write once; True if each got an answer from the log."""
        if self._client is None:
            self._client = NameServiceClient(self._addresses, timeout=self._timeout)
            await self._client.connect(wait=self._timeout)
        self.rounds += 1
        pending = self.writes.overlay.pending()
        results = await asyncio.gather(
            *(self._client.stale_write(p.key, p.value, p.base_mod_revision) for p in pending),
            return_exceptions=True)
        answered = 0
        for proposed, result in zip(pending, results):
            if isinstance(result, asyncio.CancelledError):
                raise result
            if isinstance(result, BaseException):
                continue
            self.writes.settle(proposed, result)
            answered += 1
        self.writes.try_persist()
        if answered < len(pending):
            log.info("%d of %d quorum-less writes not replicated yet; retrying",
                     len(pending) - answered, len(pending))
        return answered == len(pending)
