"""The leader's lease clock: when each lease runs out, and which have run out.

The replicated state only records each lease's TTL; time is the leader's business. A leader
keeps one deadline per lease in its own memory:

* when it becomes leader, every lease it knows gets ``now + TTL`` (``start``): a new leader
  never expires a lease at once, since it cannot know when the last keepalive reached the old
  one;
* a lease granted while it leads gets ``now + TTL`` when the grant is applied (``granted``);
* a keepalive resets the deadline to ``now + TTL`` and is answered from here, without a log
  entry (``keepalive``);
* once a deadline passes, ``due`` hands the lease to the caller, who proposes ``LeaseExpire``
  through the log (``expire`` does both, given the core's ``propose``); from then on
  keepalives of that lease are refused (it is on its way out), and it is offered again after
  ``retry_s`` in case that proposal was lost.

No clock, sockets or disk: the caller passes ``now`` (seconds, monotonic). Revoked or expired
leases are forgotten lazily: ``due`` asks the caller whether a lease still exists before
handing it out. Memory: one deadline per lease plus at most a few heap entries per keepalive
within one TTL (stale heap entries are dropped as they come due, and the heap is rebuilt
from the live deadlines when it grows past four entries per lease).
"""
from __future__ import annotations

import heapq
import logging
from typing import Callable

from nameservice.kv import Batch, LeaseExpire, encode_command
from nameservice.raft.errors import NotLeader, ProposalDropped

log = logging.getLogger(__name__)

__all__ = ["LeaseClock"]

EXPIRE_RETRY_S = 1.0
"""After handing out a due lease, offer it again this much later if it still exists."""
MAX_EXPIRES_PER_ENTRY = 4096
"""``LeaseExpire`` commands per log entry."""


class LeaseClock:
    """Deadlines of the leases, kept by the leader (see module docstring)."""

    def __init__(self, retry_s: float = EXPIRE_RETRY_S) -> None:
        self.retry_s = retry_s
        self.active = False
        """True while this node leads (between ``start`` and ``stop``)."""
        self._deadline: dict[int, float] = {}
        self._expiring: set[int] = set()
        self._heap: list[tuple[float, int]] = []
        self.expiries = 0
        """Leases handed out to expire (``due``), a lease offered again counted again."""

    def __len__(self) -> int:
        return len(self._deadline)

    def start(self, leases: dict[int, int], now: float) -> None:
        """Become the lease keeper: every lease (id → TTL in ms) gets ``now + TTL``."""
        self.stop()
        self.active = True
        for lease_id, ttl_ms in leases.items():
            self._set(lease_id, ttl_ms / 1000.0, now)

    def stop(self) -> None:
        """Forget every deadline (this node no longer leads)."""
        self.active = False
        self._deadline.clear()
        self._expiring.clear()
        self._heap.clear()

    def granted(self, lease_id: int, ttl_ms: int, now: float) -> None:
        """A grant was applied: the lease runs out ``ttl_ms`` from now (ignored unless active)."""
        if self.active:
            self._expiring.discard(lease_id)
            self._set(lease_id, ttl_ms / 1000.0, now)

    def keepalive(self, lease_id: int, ttl_ms: int, now: float) -> int:
        """Renew an existing lease of ``ttl_ms`` (the caller checked that it exists); return
        its TTL in ms, or 0 if it is already expiring (or this node does not lead)."""
        if not self.active or lease_id in self._expiring:
            return 0
        self._set(lease_id, ttl_ms / 1000.0, now)
        return ttl_ms

    def knows(self, lease_id: int) -> bool:
        """Whether the lease has a deadline here."""
        return lease_id in self._deadline

    def forget(self, lease_id: int) -> None:
        """Drop a lease (revoked or expired)."""
        self._deadline.pop(lease_id, None)
        self._expiring.discard(lease_id)

    def next_deadline(self) -> float | None:
        """The earliest deadline (possibly of a stale entry), None if there is none."""
        return self._heap[0][0] if self._heap else None

    def due(self, now: float, exists: Callable[[int], bool]) -> list[int]:
        """The leases whose deadline passed and that still ``exists``; expire them.

        Leases that no longer exist are forgotten. Each returned lease is marked expiring
        (keepalives refused) and offered again after ``retry_s`` while it still exists.
        """
        heap, deadline = self._heap, self._deadline
        out: list[int] = []
        while heap and heap[0][0] <= now:
            at, lease_id = heapq.heappop(heap)
            if deadline.get(lease_id) != at:
                continue  # superseded by a later keepalive, or forgotten
            if not exists(lease_id):
                self.forget(lease_id)
                continue
            out.append(lease_id)
        self.expiries += len(out)
        for lease_id in out:
            self._expiring.add(lease_id)
            self._push(lease_id, now + self.retry_s)
        return out

    def expiry_entries(self, now: float, exists: Callable[[int], bool]) -> list[bytes]:
        """``due`` as encoded log entries to propose: batches of ``LeaseExpire``."""
        due = self.due(now, exists)
        entries = []
        for start in range(0, len(due), MAX_EXPIRES_PER_ENTRY):
            chunk = due[start:start + MAX_EXPIRES_PER_ENTRY]
            entries.append(encode_command(Batch(tuple(LeaseExpire(i) for i in chunk))))
            log.info("expiring %d lease(s): %s", len(chunk), chunk[:8])
        return entries

    def expire(self, now: float, exists: Callable[[int], bool],
               propose: Callable[[bytes], int]) -> None:
        """Propose ``LeaseExpire`` for every lease whose deadline passed (``expiry_entries``);
        stops at the first proposal refused — those leases are offered again after
        ``retry_s``."""
        for entry in self.expiry_entries(now, exists):
            try:
                propose(entry)
            except (NotLeader, ProposalDropped):
                return

    def _set(self, lease_id: int, ttl_s: float, now: float) -> None:
        self._push(lease_id, now + ttl_s)

    def _push(self, lease_id: int, at: float) -> None:
        self._deadline[lease_id] = at
        heapq.heappush(self._heap, (at, lease_id))
        if len(self._heap) > 4 * len(self._deadline) + 1024:
            # Keepalives far more often than TTLs run out: rebuild from the live deadlines.
            self._heap = [(t, i) for i, t in self._deadline.items()]
            heapq.heapify(self._heap)
