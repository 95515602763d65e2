"""A node's quorum-less writes, waiting to go through the log: the local overlay.

Theory of operation (docs/kv.md, "Quorum-less writes"). A node asked to ``set(key, value,
consistent=False)`` without a quorum records the write here together with the key's
mod_revision in the node's applied state (its *base*: what the writer saw), persists
``encode()`` and acknowledges. Its own stale reads go through ``read``/``range``, which lay the
pending writes over the applied state. When a leader is reachable the node proposes
``commands()`` (one ``StaleWrite`` per key, in key order, inside its client session) and feeds
each result to ``settle``. The state machine applies a ``StaleWrite`` only if the key is still
at its base revision; otherwise it is a conflict, kept in ``conflicts`` for the operator.

Several local writes to one key before it is proposed collapse into the last one, keeping the
first base: the node's own writes never conflict with each other.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace

import msgpack

from .codec import FORMAT_VERSION
from .commands import StaleWrite
from .errors import DecodeError, KvError
from .results import CasResult, KeyValue, Result

__all__ = ["PendingWrite", "StaleConflict", "StaleBacklogFull", "StaleOverlay"]


class StaleBacklogFull(KvError):
    """The node holds ``max_pending`` unreplicated keys already; the write is refused."""


@dataclass(frozen=True, slots=True)
class PendingWrite:
    """A write not yet through the log. ``value`` None deletes; ``generation`` tells a write
    apart from a later local write to the same key."""

    key: bytes
    value: bytes | None
    base_mod_revision: int
    generation: int

    def command(self) -> StaleWrite:
        """The command to propose for it."""
        return StaleWrite(self.key, self.value, self.base_mod_revision)


@dataclass(frozen=True, slots=True)
class StaleConflict:
    """A stale write the log refused: the key had changed since the node saw it."""

    key: bytes
    value: bytes | None
    base_mod_revision: int
    current: KeyValue | None


class StaleOverlay:
    """Pending quorum-less writes of one node, by key (node-local, not replicated)."""

    def __init__(self, max_pending: int = 10_000, max_conflicts: int = 1000) -> None:
        self.max_pending = max_pending
        self._pending: dict[bytes, PendingWrite] = {}
        self._generation = 0
        self.conflicts: deque[StaleConflict] = deque(maxlen=max_conflicts)
        """The most recent conflicts, oldest first (older ones are dropped)."""
        self.conflict_count = 0

    def __len__(self) -> int:
        return len(self._pending)

    def write(self, key: bytes, value: bytes | None, applied: KeyValue | None) -> PendingWrite:
        """Record a local write; ``applied`` is the key in this node's applied state."""
        command = StaleWrite(key, value, 0)  # validates key and value like any command
        key, value = command.key, command.value
        self._generation += 1
        earlier = self._pending.get(key)
        if earlier is not None:
            pending = replace(earlier, value=value, generation=self._generation)
        else:
            if len(self._pending) >= self.max_pending:
                raise StaleBacklogFull(f"{self.max_pending} keys are waiting for a quorum")
            base = applied.mod_revision if applied is not None else 0
            pending = PendingWrite(key, value, base, self._generation)
        self._pending[key] = pending
        return pending

    def read(self, key: bytes, applied: KeyValue | None) -> KeyValue | None:
        """The key as this node's stale reads see it. A pending write shows as a key-value
        with mod_revision 0 (not yet in the log)."""
        pending = self._pending.get(key)
        if pending is None:
            return applied
        return _as_kv(pending, applied)

    def range(self, prefix: bytes, applied: list[KeyValue]) -> list[KeyValue]:
        """``applied`` (a sorted range under ``prefix``) with the pending writes laid over."""
        mine = {k: p for k, p in self._pending.items() if k.startswith(prefix)}
        if not mine:
            return applied
        merged = {kv.key: kv for kv in applied}
        for key, pending in mine.items():
            kv = _as_kv(pending, merged.get(key))
            if kv is None:
                merged.pop(key, None)
            else:
                merged[key] = kv
        return [merged[k] for k in sorted(merged)]

    def pending(self) -> list[PendingWrite]:
        """Every pending write, in key order: propose their ``command()`` in this order."""
        return [self._pending[k] for k in sorted(self._pending)]

    def commands(self) -> list[StaleWrite]:
        """The ``StaleWrite`` commands for every pending write, in key order."""
        return [p.command() for p in self.pending()]

    def settle(self, proposed: PendingWrite, result: Result) -> StaleConflict | None:
        """Take the log's answer to ``proposed``; return the conflict if it was refused.

        Success forgets the write (or, if the key was written locally again meanwhile, moves
        that newer write's base onto the revision our write made). A refusal whose current
        value already equals the wanted one counts as done (the write made it in an earlier,
        unanswered attempt). Any other answer (a rejected session, say) keeps it pending.
        """
        if type(result) is not CasResult:
            return None
        key = proposed.key
        current = self._pending.get(key)
        if not result.succeeded and _satisfied(proposed, result.kv):
            result = CasResult(True, result.revision, result.kv)
        if result.succeeded:
            if current is not None and current.generation != proposed.generation:
                base = result.kv.mod_revision if result.kv is not None else 0
                self._pending[key] = replace(current, base_mod_revision=base)
            elif current is not None:
                del self._pending[key]
            return None
        latest = current if current is not None else proposed
        self._pending.pop(key, None)
        conflict = StaleConflict(key, latest.value, proposed.base_mod_revision, result.kv)
        self.conflicts.append(conflict)
        self.conflict_count += 1
        return conflict

    # --- persistence (the node keeps its pending writes on disk) ---

    def encode(self) -> bytes:
        """The pending writes as bytes, for the node's disk."""
        rows = [[p.key, p.value, p.base_mod_revision] for p in self.pending()]
        packed: bytes = msgpack.packb(rows, use_bin_type=True)
        return bytes([FORMAT_VERSION]) + packed

    def load(self, data: bytes) -> None:
        """Replace the pending writes with ``encode()`` bytes; ``DecodeError`` if malformed."""
        if not isinstance(data, (bytes, bytearray)) or len(data) < 2 or data[0] != FORMAT_VERSION:
            raise DecodeError("stale overlay: not an encoding of this version")
        try:
            rows = msgpack.unpackb(memoryview(data)[1:], raw=False)
            commands = [StaleWrite(key, value, base) for key, value, base in rows]
        except Exception as exc:  # msgpack and the constructors raise many kinds; same meaning
            raise DecodeError(f"stale overlay: malformed ({exc})") from exc
        if len(commands) > self.max_pending:
            raise DecodeError(f"stale overlay: more than {self.max_pending} pending writes")
        pending: dict[bytes, PendingWrite] = {}
        for command in commands:
            self._generation += 1
            pending[command.key] = PendingWrite(
                command.key, command.value, command.base_mod_revision, self._generation
            )
        self._pending = pending


def _as_kv(pending: PendingWrite, applied: KeyValue | None) -> KeyValue | None:
    if pending.value is None:
        return None
    if applied is None:
        return KeyValue(pending.key, pending.value, 0, 0, 1, 0)
    return KeyValue(pending.key, pending.value, applied.create_revision, 0, applied.version + 1, 0)


def _satisfied(pending: PendingWrite, current: KeyValue | None) -> bool:
    if pending.value is None:
        return current is None
    return current is not None and current.value == pending.value and current.lease == 0
