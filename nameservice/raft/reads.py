"""ReadIndex requests a leader holds until a quorum confirms it is still the leader."""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass(slots=True)
class PendingRead:
    index: int
    ctx: bytes
    requester: int
    acks: set[int] = field(default_factory=set)


class PendingReads:
    """An ordered, bounded queue of reads awaiting a quorum of heartbeat acknowledgements.

    A heartbeat carries the newest pending ``ctx``; when a quorum echoes a ctx, that read and
    every read queued before it are released (leadership was confirmed after they arrived).
    At the limit new reads are refused and the caller retries.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self._queue: deque[PendingRead] = deque()
        self._by_ctx: dict[bytes, PendingRead] = {}
        self._waiting: list[PendingRead] = []
        self.broadcast_needed = False

    def __len__(self) -> int:
        return len(self._queue) + len(self._waiting)

    def clear(self) -> None:
        self._queue.clear()
        self._by_ctx.clear()
        self._waiting.clear()
        self.broadcast_needed = False

    def last_ctx(self) -> bytes:
        return self._queue[-1].ctx if self._queue else b""

    def add(self, index: int, ctx: bytes, requester: int, leader: int) -> bool:
        """Queue a read; ``leader`` counts as its first acknowledgement (0: the leader is not a
        voter, as while it removes itself)."""
        if len(self) >= self.limit or ctx in self._by_ctx:
            return False
        read = PendingRead(index, ctx, requester, {leader} if leader else set())
        self._queue.append(read)
        self._by_ctx[ctx] = read
        self.broadcast_needed = True
        return True

    def wait_for_commit(self, ctx: bytes, requester: int) -> bool:
        """Park a read until the leader has committed an entry of its own term."""
        if len(self) >= self.limit:
            return False
        self._waiting.append(PendingRead(0, ctx, requester))
        return True

    def take_waiting(self) -> list[PendingRead]:
        waiting, self._waiting = self._waiting, []
        return waiting

    def ack(
        self, ctx: bytes, frm: int, voters: frozenset[int], quorum: int
    ) -> list[PendingRead]:
        """Record that ``frm`` echoed ``ctx``; return the reads this releases, oldest first.

        Only acknowledgements from ``voters`` (the configuration in force) count towards the
        ``quorum``: with single-server changes, a majority of it meets a majority of the
        configuration any newer leader could have been elected in.
        """
        read = self._by_ctx.get(ctx)
        if read is None:
            return []
        read.acks.add(frm)
        if sum(1 for voter in read.acks if voter in voters) < quorum:
            return []
        released = []
        while self._queue:
            head = self._queue.popleft()
            del self._by_ctx[head.ctx]
            released.append(head)
            if head is read:
                break
        return released
