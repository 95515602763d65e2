"""What a user writes: a stateful component is a class with a deterministic ``apply``.

    from fabric.stateful import Stateful

    class Counter(Stateful):
        input = "orders"                 # the channel it consumes
        output = "counts"                # the channel it emits to (optional)

        def __init__(self) -> None:
            self.state = {"count": 0}

        def apply(self, message) -> None:
            self.state["count"] += 1
            self.emit({"count": self.state["count"]})

    $ fabric component run counter.py:Counter --replicas 3 --name counter --data /var/lib/c1

Every replica applies the same messages in the same order (the group's Raft log), so
``apply`` must be deterministic: the same state and message give the same new state and the
same emitted messages — no clock, no randomness, no I/O. It runs on every replica; what it
emits is sent by the leader only. By default the state is ``self.state``, a msgpack-able
object that fabric snapshots itself; override ``snapshot`` and ``restore`` for anything else.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

__all__ = ["Input", "Stateful"]


class Input:
    """One message as ``apply`` sees it: its payload, the producer and sequence number that
    identify it, and the index of the log entry that carries it (the same on every replica)."""

    __slots__ = ("payload", "producer_id", "seq", "index")

    def __init__(self, payload: Any, producer_id: bytes, seq: int, index: int) -> None:
        self.payload = payload
        self.producer_id = producer_id
        self.seq = seq
        self.index = index

    def __repr__(self) -> str:
        return (f"Input(seq={self.seq}, producer={self.producer_id.hex()[:8]}, "
                f"index={self.index}, payload={self.payload!r})")


class Stateful(ABC):
    """Base class of a stateful component (see module docstring): a subclass defines
    ``apply`` (one without it cannot be made: TypeError).

    ``input``/``output``: the channels it consumes and emits to (the command line may name
    others). ``state``: what the default ``snapshot``/``restore`` keep.
    """

    input: str | None = None
    output: str | None = None
    state: Any = None

    @abstractmethod
    def apply(self, message: Input) -> None:
        """Change the state for one message; may call ``emit``. Must be deterministic."""

    def emit(self, payload: Any) -> None:
        """Emit ``payload`` on the output channel (sent by the leader replica only, once the
        entry that caused it is committed). What is emitted is a copy, taken now: changing
        the object afterwards changes nothing. ``ValueError`` if msgpack cannot encode it or
        it is over 256 KiB encoded."""
        emit = self.__dict__.get("_fabric_emit")
        if emit is None:
            raise RuntimeError("emit() is only valid inside apply()")
        emit(payload)

    def snapshot(self) -> Any:
        """The state as a msgpack-able object (default: ``self.state``)."""
        return self.state

    def restore(self, state: Any) -> None:
        """Take back what ``snapshot`` returned (default: into ``self.state``)."""
        self.state = state
