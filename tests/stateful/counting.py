"""The counting component the stateful tests run (a module, so processes can load it)."""
from __future__ import annotations

from fabric.stateful import Input, Stateful


class Counter(Stateful):
    """Counts the messages it applies and sums their (integer) payloads; emits every count."""

    input = "counted"

    def __init__(self) -> None:
        self.state = {"count": 0, "sum": 0}

    def apply(self, message: Input) -> None:
        self.state["count"] += 1
        self.state["sum"] += message.payload


class Echo(Counter):
    """Counts like ``Counter``, and emits every payload it applies."""

    def apply(self, message: Input) -> None:
        super().apply(message)
        self.emit(message.payload)
