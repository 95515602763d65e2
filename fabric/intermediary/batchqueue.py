"""The intermediary's batches waiting for a consumer's credit, and those it parks.

A batch is parked, not queued, while its producer is declared dead: after a partition the
producer has resent it elsewhere, so it is delivered only if the producer comes back on the
same connection (it was only frozen), and dropped if it comes back on a new one. Queued and
parked batches share one bound in bytes; at the bound a new batch does not fit (the
intermediary refuses it with NACK).
"""
from __future__ import annotations

from collections import deque
from collections.abc import Iterator

Item = tuple[bytes, bytes, bytes, int, int]
"""A batch: (producer routing id, producer id, frame, first_seq, count)."""


class BatchQueue:
    """Batches in arrival order (requeued ones first), plus the parked ones, within
    ``max_bytes``."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0  # frames queued and parked
        self._items: deque[Item] = deque()
        self._parked: dict[bytes, list[Item]] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Item]:
        """The queued batches (not the parked ones), first to be sent first."""
        return iter(self._items)

    def fits(self, size: int) -> bool:
        """Whether a frame of ``size`` bytes can still be queued."""
        return self.bytes + size <= self.max_bytes

    def append(self, item: Item) -> None:
        """Queue a batch that just arrived."""
        self._items.append(item)
        self.bytes += len(item[2])

    def put_back(self, item: Item) -> None:
        """Queue a batch first (it was at a consumer that is gone)."""
        self._items.appendleft(item)
        self.bytes += len(item[2])

    def first(self) -> Item | None:
        """The batch to send next, if any."""
        return self._items[0] if self._items else None

    def pop_first(self) -> None:
        """Remove the batch :meth:`first` returned (it was sent)."""
        self.bytes -= len(self._items.popleft()[2])

    def take_all(self) -> list[Item]:
        """Remove and return every queued batch (parked ones stay)."""
        items = list(self._items)
        self._items.clear()
        self.bytes -= sum(len(item[2]) for item in items)
        return items

    def park(self, producer_rid: bytes) -> None:
        """Its producer was declared dead: set its queued batches aside."""
        mine = [item for item in self._items if item[0] == producer_rid]
        if mine:
            self._items = deque(item for item in self._items if item[0] != producer_rid)
            self._parked.setdefault(producer_rid, []).extend(mine)

    def park_item(self, item: Item) -> None:
        """Set a batch of a producer declared dead aside (it was at a consumer that is gone)."""
        self._parked.setdefault(item[0], []).append(item)
        self.bytes += len(item[2])

    def unpark(self, producer_rid: bytes) -> None:
        """Its producer came back on the same connection: queue its batches again, first."""
        self._items.extendleft(reversed(self._parked.pop(producer_rid, [])))

    def drop_from(self, producer_rid: bytes) -> int:
        """Forget a producer's batches, queued and parked; how many there were."""
        dropped = self._parked.pop(producer_rid, [])
        kept: deque[Item] = deque()
        for item in self._items:
            (dropped if item[0] == producer_rid else kept).append(item)
        self._items = kept
        self.bytes -= sum(len(item[2]) for item in dropped)
        return len(dropped)

    def clear(self) -> None:
        """Forget everything."""
        self._items.clear()
        self._parked.clear()
        self.bytes = 0

    def messages(self) -> int:
        """Messages in the queued batches."""
        return sum(item[4] for item in self._items)

    def parked_messages(self) -> int:
        """Messages in the parked batches."""
        return sum(item[4] for items in self._parked.values() for item in items)
