"""Counting distinct message ids in bounded memory.

The demo's ids are ``producer << ID_SHIFT | n`` with n = 0, 1, 2, ... per producer. Each
producer's ids arrive almost in order, so a tracker keeps, per producer, the lowest n not yet
seen and the ids seen above it. Ids above the mark exist only while a lower one is missing; a
missing id is unacknowledged at its producer, whose window bounds how many messages it sends
meanwhile — so memory follows the producers' windows, not the length of the run.
"""
from __future__ import annotations

from fabric.butterfly.report import ID_SHIFT


class UniqueIds:
    """Tells a first delivery of an id from a repeat (:meth:`add`)."""

    def __init__(self, shift: int = ID_SHIFT) -> None:
        self._shift = shift
        self._mask = (1 << shift) - 1
        self._low: dict[int, int] = {}  # producer -> lowest n not seen yet
        self._above: dict[int, set[int]] = {}  # producer -> ns seen above it

    def add(self, ident: int) -> bool:
        """Record ``ident``; True the first time it is seen, False for a repeat."""
        producer, n = ident >> self._shift, ident & self._mask
        low = self._low.get(producer, 0)
        if n < low:
            return False
        above = self._above.setdefault(producer, set())
        if n in above:
            return False
        if n != low:
            above.add(n)
            return True
        low += 1
        while low in above:
            above.remove(low)
            low += 1
        self._low[producer] = low
        return True

    @property
    def held(self) -> int:
        """Ids kept individually (seen above a missing one): the memory in use."""
        return sum(len(s) for s in self._above.values())
