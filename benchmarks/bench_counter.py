"""The stateful component ``stateful_bench.py`` runs (a module of its own: the replica processes
load it by path)."""
from __future__ import annotations

from fabric.stateful import Input, Stateful


class BenchCounter(Stateful):
    """Counts messages and their bytes, and sums their numbers (the first 8 bytes)."""

    def __init__(self) -> None:
        self.state = {"count": 0, "bytes": 0, "sum": 0}

    def apply(self, message: Input) -> None:
        state = self.state
        state["count"] += 1
        state["bytes"] += len(message.payload)
        state["sum"] += int.from_bytes(message.payload[:8], "little")
