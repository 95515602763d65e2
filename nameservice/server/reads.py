"""The read service: consistent reads grouped into one ReadIndex request per step and served
once the state machine has applied up to the read index; stale reads answered at once from the
applied state (with this node's quorum-less writes laid over).

A consistent read goes through three places, each owned here:

1. ``add`` collects it for this step;
2. ``start`` (once per step) asks the core for ONE read index for every read collected
   (``read_index(ctx)``, ``ctx`` a fresh 8-byte sequence number) and files them as a group
   under that ctx, with a deadline;
3. ``on_read_states`` moves a group whose read index the core confirmed to the queue waiting
   for the state machine, and ``release`` serves what the machine has applied.

A group whose index never comes (the leader changed, a timeout) is failed (``fail_groups``,
``expire``): the client retries. Bound: at most ``max_pending`` consistent reads collected or
waiting (``full``); the intake answers BUSY beyond.

Replies are bounded in bytes (``wire.MAX_REPLY_BYTES``): a RANGE whose reply alone would pass
it is refused (BAD_REQUEST, "reply too large", counted in ``replies_too_large``) as soon as
the key-values counted so far pass it, before the rest is looked at; a read that would take its
frame's ``ReplyBudget`` past it is answered BUSY (``replies_over_budget``) and the client
retries it. No reply larger than the limit is ever built.

Histograms (observed once per group): ``latency``, from the first read of a group reaching the
service to the group being served, weighted by its reads; ``index_wait``, from asking for the
read index to the core confirming it.
"""
from __future__ import annotations

import time
from collections import deque
from typing import Callable

from nameservice import wire
from nameservice.kv import KvStateMachine
from nameservice.kv.codec import kv_to_wire
from nameservice.metrics import Buckets
from nameservice.server.seam import Reply
from nameservice.server.stale import StaleWrites

__all__ = ["MAX_PENDING_READS", "ReadService", "ReplyBudget"]

MAX_PENDING_READS = 200_000
"""Consistent reads waiting for their read index; beyond, answered BUSY."""
_KV_OVERHEAD = 48
"""Bytes a key-value costs on the wire besides its key and value (array header, four ints,
two bin headers), rounded up: the reply budget counts with it."""


class ReplyBudget:
    """The key and value bytes the replies to one request frame may still carry
    (``wire.MAX_REPLY_BYTES`` at first)."""

    __slots__ = ("left",)

    def __init__(self, limit: int = wire.MAX_REPLY_BYTES) -> None:
        self.left = limit


def _kv_size(kv) -> int:
    return len(kv.key) + len(kv.value) + _KV_OVERHEAD


class ReadService:
    """Consistent (ReadIndex) and stale reads of one node (see module docstring).

    ``read_index(ctx) -> bool`` asks the core for a read index (``RaftCore.read_index``; False:
    dropped); ``reply`` queues a reply; a group not confirmed within ``timeout_s`` fails.
    """

    def __init__(self, machine: KvStateMachine, stale: StaleWrites,
                 read_index: Callable[[bytes], bool], reply: Reply, *, timeout_s: float,
                 max_pending: int = MAX_PENDING_READS) -> None:
        self._machine = machine
        self._stale = stale
        self._read_index = read_index
        self._reply = reply
        self.timeout_s = timeout_s
        self.max_pending = max_pending
        # Collected this step: (identity, rid, op, key, limit, budget).
        self._collected: list[tuple[bytes, int, int, bytes, int, ReplyBudget]] = []
        self._first_at = 0.0  # when the first read collected came
        # In flight: ctx -> (deadline, reads, first read's arrival, read index asked at).
        self._groups: dict[bytes, tuple[float, list, float, float]] = {}
        # Confirmed: (read index, reads, first read's arrival), index order.
        self._waiting: deque[tuple[int, list, float]] = deque()
        self._seq = 0
        self.pending = 0
        """Consistent reads collected, in flight or waiting for the state machine."""
        self.latency = Buckets()
        """Seconds from a consistent read's arrival to its being served (per read)."""
        self.index_wait = Buckets()
        """Seconds from asking for a read index to its confirmation (per group)."""
        self.counters = {"replies_too_large": 0, "replies_over_budget": 0}

    @property
    def full(self) -> bool:
        """Whether ``max_pending`` consistent reads wait already."""
        return self.pending >= self.max_pending

    @property
    def in_flight(self) -> int:
        """Read groups whose read index the core has not confirmed yet."""
        return len(self._groups)

    # ------------------------------------------------------------------ consistent reads

    def add(self, identity: bytes, rid: int, op: int, key: bytes, limit: int,
            budget: ReplyBudget | None = None) -> None:
        """Collect a consistent GET or RANGE for this step's read index."""
        if not self._collected:
            self._first_at = time.monotonic()
        self._collected.append((identity, rid, op, key, limit, budget or ReplyBudget()))
        self.pending += 1

    def start(self) -> None:
        """Ask for one read index for every read collected (nothing if none were)."""
        if not self._collected:
            return
        reads, self._collected = self._collected, []
        self._seq += 1
        ctx = self._seq.to_bytes(8, "big")
        if self._read_index(ctx):
            now = time.monotonic()
            self._groups[ctx] = (now + self.timeout_s, reads, self._first_at, now)
            return
        self._fail(reads, wire.ST_BUSY, "read index dropped; retry")

    def on_read_states(self, read_states) -> None:
        """The core confirmed these read indexes: their groups wait for the state machine."""
        now = 0.0
        for rs in read_states:
            group = self._groups.pop(rs.ctx, None)
            if group is not None:
                now = now or time.monotonic()
                self.index_wait.observe(now - group[3])
                self._waiting.append((rs.index, group[1], group[2]))

    def release(self) -> None:
        """Serve the groups whose read index the state machine has applied."""
        waiting = self._waiting
        applied = self._machine.applied_index
        while waiting and waiting[0][0] <= applied:
            _, reads, first_at = waiting.popleft()
            self._serve(reads)
            self.latency.observe(time.monotonic() - first_at, len(reads))

    def fail_groups(self, status: int, payload: object) -> None:
        """Fail every group still waiting for its read index (the leader changed: it will
        not come); the clients retry."""
        if not self._groups:
            return
        groups, self._groups = self._groups, {}
        for _, reads, _, _ in groups.values():
            self._fail(reads, status, payload)

    def expire(self, now: float) -> None:
        """Fail the groups whose read index did not come in time."""
        if not self._groups:
            return
        for ctx, (deadline, reads, _, _) in list(self._groups.items()):
            if deadline <= now:
                del self._groups[ctx]
                self._fail(reads, wire.ST_UNAVAILABLE, "read index timed out")

    def _fail(self, reads: list, status: int, payload: object) -> None:
        self.pending -= len(reads)
        for identity, rid, *_ in reads:
            self._reply(identity, rid, status, payload)

    def _serve(self, reads: list) -> None:
        self.pending -= len(reads)
        answer = self.answer
        for identity, rid, op, key, limit, budget in reads:
            self._reply(identity, rid, *answer(op, key, limit, budget))

    # ------------------------------------------------------------------ payloads

    def answer(self, op: int, key: bytes, limit: int,
               budget: ReplyBudget | None = None) -> tuple[int, object]:
        """``(status, payload)`` of a GET or RANGE from the applied state: ``[kv|nil, revision]``
        or ``[[kv...], revision]``, unless it is too large (see the module docstring)."""
        machine = self._machine
        budget = budget or ReplyBudget()
        if op == wire.OP_GET:
            kv = machine.get(key)
            if kv is not None and not self._charge(budget, _kv_size(kv)):
                return self._over_budget(budget)
            return wire.ST_OK, [None if kv is None else kv_to_wire(kv), machine.revision]
        out, size = [], 0
        for kv in machine.range(key, limit):
            size += _kv_size(kv)
            if size > wire.MAX_REPLY_BYTES:
                return self._too_large(size)
            out.append(kv_to_wire(kv))
        if not self._charge(budget, size):
            return self._over_budget(budget)
        return wire.ST_OK, [out, machine.revision]

    def stale_answer(self, op: int, key: bytes, limit: int,
                     budget: ReplyBudget | None = None) -> tuple[int, object]:
        """A stale read: the applied state with this node's quorum-less writes laid over."""
        budget = budget or ReplyBudget()
        if not len(self._stale.overlay):
            return self.answer(op, key, limit, budget)
        payload = self._stale.read_payload(self._machine, op == wire.OP_GET, key, limit)
        kvs = [payload[0]] if op == wire.OP_GET else payload[0]
        size = sum(len(w[0]) + len(w[1]) + _KV_OVERHEAD for w in kvs if w is not None)
        if size > wire.MAX_REPLY_BYTES:
            return self._too_large(size)
        if not self._charge(budget, size):
            return self._over_budget(budget)
        return wire.ST_OK, payload

    @staticmethod
    def _charge(budget: ReplyBudget, size: int) -> bool:
        if size > budget.left:
            return False
        budget.left -= size
        return True

    def _too_large(self, size: int) -> tuple[int, object]:
        self.counters["replies_too_large"] += 1
        return wire.ST_BAD_REQUEST, (
            f"reply too large: more than {size:,} bytes, limit {wire.MAX_REPLY_BYTES:,}; "
            "ask for fewer keys (a limit, a longer prefix)")

    def _over_budget(self, budget: ReplyBudget) -> tuple[int, object]:
        self.counters["replies_over_budget"] += 1
        return wire.ST_BUSY, (
            f"the replies to this frame reached {wire.MAX_REPLY_BYTES - budget.left:,} "
            f"bytes, limit {wire.MAX_REPLY_BYTES:,}; retry")
