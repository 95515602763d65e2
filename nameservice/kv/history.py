"""A bounded ring of recent events, so a watcher can resume from a revision.

Every change gets its own revision, one more than the last, so the ring holds the events of the
consecutive revisions ``compacted + 1 .. current``; the event of revision R sits at offset
``R - compacted - 1``. The ring is local memory, not replicated state: it is bounded by a count
and by bytes, its oldest events go first, and it starts empty after a restore.
"""
from __future__ import annotations

from collections import deque
from itertools import islice

from .errors import Compacted
from .results import Event

__all__ = ["EventHistory"]

_EVENT_OVERHEAD = 200
"""Rough bytes of an event beyond its keys and values (objects, ring slot)."""


class EventHistory:
    """The last events, at most ``max_events`` of them and about ``max_bytes``."""

    def __init__(self, max_events: int, max_bytes: int) -> None:
        if max_events < 0 or max_bytes < 0:
            raise ValueError("history bounds must not be negative")
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.compacted = 0
        """Every revision <= compacted is no longer in the ring."""
        self._events: deque[Event] = deque()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._events)

    @property
    def oldest(self) -> int:
        """The oldest revision ``since`` can serve."""
        return self.compacted + 1

    def reset(self, revision: int) -> None:
        """Forget everything; the next event will have revision ``revision + 1``."""
        self._events.clear()
        self._bytes = 0
        self.compacted = revision

    def extend(self, events: list[Event]) -> None:
        """Append the events of one apply (consecutive revisions), dropping the oldest."""
        ring = self._events
        added = 0
        for event in events:
            prev = event.prev
            added += _EVENT_OVERHEAD + 2 * len(event.kv.key) + len(event.kv.value)
            if prev is not None:
                added += len(prev.value)
        ring.extend(events)
        self._bytes += added
        while len(ring) > self.max_events or (self._bytes > self.max_bytes and ring):
            dropped = ring.popleft()
            self._bytes -= _EVENT_OVERHEAD + 2 * len(dropped.kv.key) + len(dropped.kv.value)
            if dropped.prev is not None:
                self._bytes -= len(dropped.prev.value)
            self.compacted = dropped.kv.mod_revision

    def since(self, revision: int, prefix: bytes = b"") -> list[Event]:
        """Events with revision >= ``revision`` whose key starts with ``prefix``, in order.

        Raises ``Compacted`` when an event at or after ``revision`` was already dropped.
        A revision beyond the newest gives an empty list (nothing happened yet).
        """
        revision = max(revision, 1)
        if revision <= self.compacted:
            raise Compacted(revision, self.oldest)
        tail = islice(self._events, revision - self.compacted - 1, None)
        if not prefix:
            return list(tail)
        return [e for e in tail if e.kv.key.startswith(prefix)]
