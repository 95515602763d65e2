"""What a drain reports: whether it finished, how long it took, and what it could not flush.

Every fabric process drains the same way (stop taking new work, finish what it holds, exit) and
ends with a :class:`DrainReport`. A drain that ran out of time lists its :class:`Leftover`
groups: how many messages, whose, where they were left and what becomes of them.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

DEFAULT_TIMEOUT = 5.0
"""Seconds a drain may take before it gives up and reports what is left."""


@dataclass(frozen=True, slots=True)
class Leftover:
    """``messages`` (in ``batches`` batches) of producer ``producer`` that a drain left ``where``;
    ``fate`` says what becomes of them."""

    messages: int
    batches: int
    producer: str
    where: str
    fate: str

    def line(self, holder: str) -> str:
        """One human-readable sentence."""
        return (f"{self.messages} messages ({self.batches} batches) of producer "
                f"{self.producer[:12]} left by {holder} {self.where}; {self.fate}")


def group_leftovers(batches: Iterable[tuple[str, str, str, int]]) -> tuple[Leftover, ...]:
    """One :class:`Leftover` per (producer, where, fate) of ``batches``, each given as
    ``(producer, where, fate, messages left of it)``."""
    groups: dict[tuple[str, str, str], list[int]] = {}
    for producer, where, fate, messages in batches:
        group = groups.setdefault((producer, where, fate), [0, 0])
        group[0] += messages
        group[1] += 1
    return tuple(Leftover(n, b, producer, where, fate)
                 for (producer, where, fate), (n, b) in groups.items())


@dataclass(frozen=True, slots=True)
class DrainReport:
    """The outcome of draining one process or port.

    ``kind`` is ``"intermediary"``, ``"producer"`` or ``"consumer"``; ``name`` identifies it
    (an endpoint or an id); ``complete`` is False when the timeout passed first, and then
    ``left`` says what could not be flushed.
    """

    kind: str
    name: str
    complete: bool
    elapsed: float
    left: tuple[Leftover, ...] = ()

    @property
    def left_messages(self) -> int:
        """Messages the drain could not flush."""
        return sum(item.messages for item in self.left)

    def lines(self) -> list[str]:
        """A summary line, then one line per leftover group."""
        holder = f"{self.kind} {self.name[:40]}"
        if self.complete:
            return [f"{holder} drained in {self.elapsed * 1000:.0f} ms"]
        head = (f"{holder} gave up draining after {self.elapsed * 1000:.0f} ms with "
                f"{self.left_messages} messages not flushed")
        return [head, *(item.line(holder) for item in self.left)]

    def log(self, logger: logging.Logger) -> None:
        """Log the summary (info) or what was left (warning)."""
        for line in self.lines():
            (logger.info if self.complete else logger.warning)("%s", line)

    def to_dict(self) -> dict:
        """A JSON-able form (for ``drained {JSON}`` lines and the control socket)."""
        return {"kind": self.kind, "name": self.name, "complete": self.complete,
                "elapsed_ms": round(self.elapsed * 1000, 1),
                "left_messages": self.left_messages,
                "left": [{"messages": i.messages, "batches": i.batches, "producer": i.producer,
                          "where": i.where, "fate": i.fate} for i in self.left]}


class Stopwatch:
    """Elapsed seconds since creation (monotonic clock)."""

    __slots__ = ("_start",)

    def __init__(self) -> None:
        self._start = time.monotonic()

    def elapsed(self) -> float:
        """Seconds since creation."""
        return time.monotonic() - self._start
