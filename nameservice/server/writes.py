"""The write batcher: client writes collected during a step become ONE log entry, and the
writers wait for it to be applied.

Writes reach the batcher already checked (``RequestIntake`` decoded each with the key-value
codec). ``add`` collects a write's wire array, its decoded command and its waiter
``(identity, rid)``; ``propose`` (once per step, or as soon as the batch reaches
``max_items`` writes or about ``max_bytes``) turns them into one kv ``Batch`` entry whose bytes
are the clients' own msgpack arrays packed once, and proposes it.

A proposed entry is remembered by its index until it is applied: ``claim(index, data)`` hands
its decoded batch and waiters to the applier if the entry at that index is still ours (the
same bytes), and ``answer`` replies to the waiters with their results. An entry another leader
wrote over ours fails our waiters NOT_LEADER (the client retries within its session, so
nothing is applied twice); so does ``fail_all``, when this node stops leading or installs a
snapshot.

Bound: at most ``max_pending`` writes proposed or collected and not yet applied (``full``);
the intake answers BUSY beyond.

Histograms (observed once per entry, when it is claimed for applying): ``latency``, from the
first write of the batch reaching the batcher to the batch being answered, weighted by its
writes; ``commit_latency``, from the proposal to the entry being applied.
"""
from __future__ import annotations

import time
from typing import Callable

import msgpack

from nameservice import wire
from nameservice.kv import FORMAT_VERSION as KV_VERSION
from nameservice.kv import Batch
from nameservice.kv.codec import result_to_wire
from nameservice.metrics import Buckets
from nameservice.raft.errors import NotLeader, ProposalDropped
from nameservice.server.seam import Reply

__all__ = ["MAX_ENTRY_BYTES", "MAX_ITEMS_PER_ENTRY", "MAX_PENDING_WRITES", "WriteBatcher"]

MAX_ITEMS_PER_ENTRY = 4096
"""Client writes per log entry (a bigger batch becomes several entries)."""
MAX_ENTRY_BYTES = 1 << 20
"""Approximate bytes of client writes per log entry."""
MAX_PENDING_WRITES = 200_000
"""Writes proposed and not yet applied; beyond, new writes are answered BUSY."""

_KV_PREFIX = bytes([KV_VERSION])
_BATCH_TAG = 17  # the kv codec's tag of a Batch
_pack = msgpack.Packer(use_bin_type=True, autoreset=True).pack

Waiter = tuple[bytes, int]
"""``(identity, rid)`` of a client waiting for its write."""


class WriteBatcher:
    """Collected writes, proposed entries and their waiters (see module docstring).

    ``propose(data) -> index`` proposes a log entry (``RaftCore.propose``); ``reply`` queues a
    reply; ``leader_address()`` is what a NOT_LEADER reply carries.
    """

    def __init__(self, propose: Callable[[bytes], int], reply: Reply,
                 leader_address: Callable[[], str | None], *,
                 max_items: int = MAX_ITEMS_PER_ENTRY, max_bytes: int = MAX_ENTRY_BYTES,
                 max_pending: int = MAX_PENDING_WRITES) -> None:
        self._propose = propose
        self._reply = reply
        self._leader_address = leader_address
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.max_pending = max_pending
        # Collected this step: wire arrays, decoded commands, waiters, approximate bytes.
        self._wires: list = []
        self._items: list = []
        self._waiters: list[Waiter] = []
        self._bytes = 0
        self._first_at = 0.0  # when the first write of the collected batch came
        # Proposed entries not yet applied: index -> (data, Batch, waiters, first write's
        # arrival, proposal), times monotonic.
        self._proposed: dict[int, tuple[bytes, Batch, list[Waiter], float, float]] = {}
        self.pending = 0
        """Writes collected or proposed whose writers wait for an answer."""
        self.counters = {"entries_proposed": 0}
        self.latency = Buckets()
        """Seconds from a write's arrival to its batch being answered (per write)."""
        self.commit_latency = Buckets()
        """Seconds from an entry's proposal to its being applied (per entry)."""

    @property
    def full(self) -> bool:
        """Whether ``max_pending`` writes wait already (a new one is answered BUSY)."""
        return self.pending >= self.max_pending

    @property
    def collected(self) -> int:
        """Writes collected and not proposed yet."""
        return len(self._wires)

    def add(self, identity: bytes, rid: int, command: list, item: object, size: int) -> None:
        """Collect one write: ``command`` its wire array, ``item`` the same decoded, ``size``
        its approximate bytes. Proposes at once if the batch is full."""
        self.pending += 1
        if not self._wires:
            self._first_at = time.monotonic()
        self._wires.append(command)
        self._items.append(item)
        self._waiters.append((identity, rid))
        self._bytes += size
        if len(self._wires) >= self.max_items or self._bytes >= self.max_bytes:
            self.propose()

    def propose(self) -> None:
        """Propose the collected writes as one log entry (nothing if none were collected).
        Not leading: the writers are answered NOT_LEADER; a dropped proposal: BUSY."""
        if not self._wires:
            return
        wires, items, waiters = self._wires, self._items, self._waiters
        self._wires, self._items, self._waiters, self._bytes = [], [], [], 0
        data = _KV_PREFIX + _pack([_BATCH_TAG, wires])
        batch = Batch(tuple(items))
        try:
            index = self._propose(data)
        except NotLeader:
            self.fail(waiters, wire.ST_NOT_LEADER, self._leader_address())
            return
        except ProposalDropped as exc:
            self.fail(waiters, wire.ST_BUSY, str(exc))
            return
        self.counters["entries_proposed"] += 1
        self._proposed[index] = (data, batch, waiters, self._first_at, time.monotonic())

    # ------------------------------------------------------------------ applying

    def claim(self, index: int, data: bytes) -> tuple[Batch, list[Waiter]] | None:
        """Our batch and its waiters if we proposed the entry at ``index`` and it is still
        ours (the same bytes: an entry another leader wrote there with the same bytes holds
        the same requests, same answers); the caller applies it and calls ``answer``. An
        entry that replaced ours fails our waiters NOT_LEADER; None then, and when the entry
        was never ours."""
        mine = self._proposed.pop(index, None) if self._proposed else None
        if mine is None:
            return None
        if mine[0] is data or mine[0] == data:
            now = time.monotonic()
            self.commit_latency.observe(now - mine[4])
            self.latency.observe(now - mine[3], len(mine[2]))
            return mine[1], mine[2]
        self.fail(mine[2], wire.ST_NOT_LEADER, self._leader_address())
        return None

    def answer(self, waiters: list[Waiter], results) -> None:
        """Reply to a claimed batch's waiters with its results, in order."""
        self.pending -= len(waiters)
        reply = self._reply
        for (identity, rid), result in zip(waiters, results):
            reply(identity, rid, wire.ST_OK, result_to_wire(result))

    def fail(self, waiters: list[Waiter], status: int, payload: object) -> None:
        """Answer ``waiters`` with an error; they no longer wait."""
        self.pending -= len(waiters)
        reply = self._reply
        for identity, rid in waiters:
            reply(identity, rid, status, payload)

    def fail_all(self) -> None:
        """Fail every proposed entry's waiters NOT_LEADER (this node stopped leading, or a
        snapshot replaced its state): their entries may never be applied here."""
        proposed, self._proposed = self._proposed, {}
        for _, _, waiters, _, _ in proposed.values():
            self.fail(waiters, wire.ST_NOT_LEADER, self._leader_address())
