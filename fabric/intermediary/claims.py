"""Claim rounds as an intermediary keeps them (pure: the caller sends the frames).

A producer that lost another intermediary sends CLAIM; the intermediary forwards it to every
consumer and waits for each one's CLAIMED. Once none is left to wait for — each answered, or
left without answering (declared dead, or reconnected) — the producer gets one CLAIMED, flagged
UNANSWERED if any consumer left. See docs/protocol.md, CLAIM and CLAIMED.
"""
from __future__ import annotations

from dataclasses import dataclass

MAX_ROUNDS = 10_000  # open rounds; beyond, a CLAIM is answered at once, UNANSWERED


@dataclass(slots=True)
class Answer:
    """Send CLAIMED for ``round`` to producer ``producer_id``."""

    producer_id: bytes
    round: int
    unanswered: bool


@dataclass(slots=True)
class _Round:
    waiting: set[bytes]  # routing ids of the consumers that have not answered
    unanswered: bool = False  # a consumer left the round without answering


class ClaimRounds:
    """The open claim rounds of one intermediary, keyed by (producer id, round)."""

    def __init__(self, limit: int = MAX_ROUNDS) -> None:
        self.limit = limit
        self._rounds: dict[tuple[bytes, int], _Round] = {}

    def __len__(self) -> int:
        return len(self._rounds)

    def full(self, producer_id: bytes, number: int) -> bool:
        """True if a new round cannot be kept (answer it at once, UNANSWERED)."""
        return (producer_id, number) not in self._rounds and len(self._rounds) >= self.limit

    def open(self, producer_id: bytes, number: int, asked: set[bytes],
             missed: bool) -> Answer | None:
        """A CLAIM was forwarded to the consumers ``asked`` (``missed``: to not all of them).
        Asking again in an open round adds to it. The answer, if nobody is left to wait for."""
        key = (producer_id, number)
        rnd = self._rounds.setdefault(key, _Round(set()))
        rnd.waiting |= asked
        rnd.unanswered |= missed
        return self._finish(key, rnd) if not rnd.waiting else None

    def answered(self, producer_id: bytes, number: int, consumer: bytes) -> Answer | None:
        """A consumer's CLAIMED. Raises KeyError if that round does not wait for it."""
        key = (producer_id, number)
        rnd = self._rounds.get(key)
        if rnd is None or consumer not in rnd.waiting:
            raise KeyError(key)
        rnd.waiting.discard(consumer)
        return self._finish(key, rnd) if not rnd.waiting else None

    def leave(self, consumer: bytes) -> list[Answer]:
        """A consumer will not answer: stop waiting for it; the rounds that are now over."""
        done = []
        for key, rnd in list(self._rounds.items()):
            if consumer in rnd.waiting:
                rnd.waiting.discard(consumer)
                rnd.unanswered = True
                if not rnd.waiting:
                    done.append(self._finish(key, rnd))
        return done

    def clear(self) -> None:
        """Forget every round (the intermediary starts afresh)."""
        self._rounds.clear()

    def _finish(self, key: tuple[bytes, int], rnd: _Round) -> Answer:
        del self._rounds[key]
        return Answer(key[0], key[1], rnd.unanswered)
