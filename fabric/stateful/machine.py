"""The replica machine: what a stateful component's Raft log is applied to (pure, no I/O).

Every replica holds one. Its state is the component's own plus what makes a replayed or
resent message harmless:

* **applied messages, per producer** (``AppliedSeqs``): a message is identified by its
  producer id and sequence number; one seen before is skipped (``duplicates_skipped``), so a
  batch resent after a leader's failover, or a log entry that carries a message twice, changes
  nothing. Kept small: everything below a producer's *floor* is applied, and only the applied
  numbers above it are listed.
* **the outbox**: what ``apply`` emitted, numbered in order (``emitted``: the number of the
  next one) and cut into batches (an entry's emits, at most ``OUTBOX_BATCH`` to a batch), kept
  until the leader learns that consumers acknowledged them. Numbers and batches are the same on
  every replica, so a new leader that sends the outbox again sends the same batches under the
  same numbers, and consumers recognise the copies.

Log entries (msgpack, never starting with 0x00, which is the Raft core's):

* ``[1, [[producer_id, first_seq, [payload, ...]], ...]]`` — INPUT: runs of consecutive
  messages of one producer;
* ``[2, acked_below]`` — OUTBOX_ACKED: emitted messages below this number are acknowledged
  downstream and leave the outbox.

An entry that does not decode is counted (``malformed_entries``) and changes nothing but the
applied index: every replica decides the same. ``apply`` raising is counted
(``apply_errors``) and logged; the message counts as applied (deterministic code raises on
every replica alike).

Bounds: at most ``max_producers`` producers are remembered (the one applied longest ago is
forgotten first: a message of it resent after that would be applied again); a producer's list
above its floor holds at most ``max_gap`` numbers (beyond, the floor jumps to the lowest listed:
a message that never came — sent to another consumer group — stops holding it back); the
outbox holds at most ``max_outbox`` messages (``outbox_full``: the leader proposes no more
input until consumers catch up).
"""
from __future__ import annotations

import hashlib
import logging
from collections import deque
from typing import Any

import msgpack

from fabric.errors import DecodeError, FabricError
from fabric.stateful.component import Input, Stateful

log = logging.getLogger(__name__)

__all__ = ["AppliedSeqs", "ApplyFailed", "INPUT", "OUTBOX_ACKED", "ReplicaMachine",
           "encode_input", "encode_outbox_acked"]

INPUT = 1
OUTBOX_ACKED = 2
SNAPSHOT_VERSION = 1
MAX_PRODUCERS = 100_000
MAX_GAP = 1 << 20
MAX_OUTBOX = 1 << 20
MAX_OUTBOX_BYTES = 256 << 20
OUTBOX_BATCH = 1024
MAX_EMIT_BYTES = 256 * 1024 - 64
"""The largest emitted message, encoded (it must fit a data-path batch of its own)."""


class ApplyFailed(FabricError):
    """``apply`` failed in a way that depends on the process, not on the message (recursion
    too deep, memory exhausted): counting it as applied could make replicas differ, so the
    replica stops instead."""


def encode_input(runs: list[tuple[bytes, int, list[Any]]]) -> bytes:
    """An INPUT entry: ``runs`` of ``(producer_id, first_seq, payloads)``."""
    return msgpack.packb([INPUT, runs], use_bin_type=True)


def encode_outbox_acked(acked_below: int) -> bytes:
    """An OUTBOX_ACKED entry."""
    return msgpack.packb([OUTBOX_ACKED, acked_below], use_bin_type=True)


class AppliedSeqs:
    """The sequence numbers of one producer's applied messages: all below ``floor``, and those
    listed in ``above``."""

    __slots__ = ("floor", "above")

    def __init__(self, floor: int = 0, above: set[int] | None = None) -> None:
        self.floor = floor
        self.above: set[int] = above if above is not None else set()

    def add(self, seq: int, max_gap: int) -> bool:
        """Record ``seq`` as applied; False if it was already."""
        above = self.above
        if seq < self.floor or seq in above:
            return False
        if seq == self.floor:
            self._fold(seq + 1)
        else:
            above.add(seq)
            if len(above) > max_gap:
                self._fold(min(above))  # the gap below it will never be filled here
        return True

    def add_run(self, first: int, count: int, max_gap: int) -> bool:
        """Record ``first .. first+count-1`` as applied if none of them was; False (nothing
        recorded) if any was — the caller then takes them one by one."""
        end = first + count
        above = self.above
        if first < self.floor or above and not above.isdisjoint(range(first, end)):
            return False
        if first == self.floor:
            self._fold(end)
        else:
            above.update(range(first, end))
            while len(above) > max_gap:  # a run may overflow the bound by more than one gap
                self._fold(min(above))
        return True

    def _fold(self, floor: int) -> None:
        """Move the floor to ``floor``, then past the listed numbers that follow it."""
        above = self.above
        while floor in above:
            above.discard(floor)
            floor += 1
        self.floor = floor


class ReplicaMachine:
    """A stateful component's replicated state (see module docstring)."""

    def __init__(self, component: Stateful, *, max_producers: int = MAX_PRODUCERS,
                 max_gap: int = MAX_GAP, max_outbox: int = MAX_OUTBOX,
                 max_outbox_bytes: int = MAX_OUTBOX_BYTES) -> None:
        self.component = component
        self.max_producers = max_producers
        self.max_gap = max_gap
        self.max_outbox = max_outbox
        self.max_outbox_bytes = max_outbox_bytes
        self.applied_index = 0
        self.producers: dict[bytes, AppliedSeqs] = {}  # least recently applied first
        # Emitted, not acknowledged: batches (first number, payloads), from outbox_floor on.
        self.outbox: deque[tuple[int, list[Any]]] = deque()
        self.outbox_floor = 0
        self.outbox_messages = 0
        self.outbox_bytes = 0  # encoded, as counted at emit (and again after a restore)
        self.counters = {"applied_messages": 0, "duplicates_skipped": 0, "apply_errors": 0,
                         "malformed_entries": 0, "producers_forgotten": 0}
        self._emitted_now: list[Any] = []
        self._emitted_bytes = 0
        self._digest: tuple[int, str] | None = None  # (applied index, digest)

    @property
    def emitted(self) -> int:
        """The number the next emitted message gets."""
        return self.outbox_floor + self.outbox_messages

    @property
    def outbox_full(self) -> bool:
        """Whether the outbox is at its bound, in messages or bytes (the leader proposes no
        new input)."""
        return (self.outbox_messages >= self.max_outbox
                or self.outbox_bytes >= self.max_outbox_bytes)

    def outbox_from(self, number: int) -> list[tuple[int, list[Any]]]:
        """The outbox batches holding messages numbered ``number`` and on (a batch that
        ``number`` falls inside comes whole)."""
        return [batch for batch in self.outbox if batch[0] + len(batch[1]) > number]

    def _emit(self, payload: Any) -> None:
        """``Stateful.emit`` while ``apply`` runs: a copy of ``payload`` as msgpack gives it
        back (so changing the object later changes nothing, and every replica holds the same),
        refused (``ValueError``, counted as the message's apply error) if it cannot be encoded
        or is too large to send."""
        try:
            packed = msgpack.packb(payload, use_bin_type=True)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"emit: the payload cannot be encoded: {exc}") from None
        if len(packed) > MAX_EMIT_BYTES:
            raise ValueError(f"emit: {len(packed)} bytes encoded, at most {MAX_EMIT_BYTES}")
        self._emitted_now.append(msgpack.unpackb(packed, raw=False, strict_map_key=False))
        self._emitted_bytes += len(packed)

    # ------------------------------------------------------------------ applying

    def apply_entry(self, index: int, data: bytes) -> int:
        """Apply log entry ``index``; the number of messages it applied (0 for an entry
        applied already, a no-op, the Raft core's own, or one that does not decode)."""
        if index <= self.applied_index:
            return 0
        self.applied_index = index
        if not data or data[:1] == b"\x00":
            return 0
        try:
            kind, body = msgpack.unpackb(data, raw=False, strict_map_key=False)
            if kind == INPUT:
                return self._apply_input(index, body)
            if kind == OUTBOX_ACKED:
                self._acked(int(body))
                return 0
            raise DecodeError(f"unknown entry kind {kind!r}")
        except (ValueError, TypeError, DecodeError, msgpack.UnpackException) as exc:
            self.counters["malformed_entries"] += 1
            log.warning("entry %d does not decode, skipped: %s", index, exc)
            return 0

    def _apply_input(self, index: int, runs: list) -> int:
        # Checked whole before any run is applied: an entry that does not decode changes nothing.
        if type(runs) is not list or not all(
            type(run) is list and len(run) == 3 and type(run[0]) is bytes
            and type(run[1]) is int and type(run[2]) is list for run in runs
        ):
            raise DecodeError("an INPUT entry is not a list of [bytes, int, list] runs")
        counters = self.counters
        applied = 0
        component = self.component
        component.__dict__["_fabric_emit"] = self._emit  # emit() works inside apply only
        try:
            applied = self._apply_runs(index, runs)
        finally:
            del component.__dict__["_fabric_emit"]
        counters["applied_messages"] += applied
        emitted = self._emitted_now
        if emitted:
            for start in range(0, len(emitted), OUTBOX_BATCH):
                self.outbox.append((self.emitted, emitted[start:start + OUTBOX_BATCH]))
                self.outbox_messages += len(self.outbox[-1][1])
            self.outbox_bytes += self._emitted_bytes
            emitted.clear()
            self._emitted_bytes = 0
        return applied

    def _apply_runs(self, index: int, runs: list) -> int:
        counters = self.counters
        applied = 0
        for pid, first_seq, payloads in runs:
            seqs = self._seqs_of(pid)
            if seqs.add_run(first_seq, len(payloads), self.max_gap):  # all new: the usual case
                for offset, payload in enumerate(payloads):
                    self._apply_one(Input(payload, pid, first_seq + offset, index))
                applied += len(payloads)
                continue
            for offset, payload in enumerate(payloads):
                seq = first_seq + offset
                if not seqs.add(seq, self.max_gap):
                    counters["duplicates_skipped"] += 1
                    continue
                self._apply_one(Input(payload, pid, seq, index))
                applied += 1
        return applied

    def _seqs_of(self, pid: bytes) -> AppliedSeqs:
        producers = self.producers
        seqs = producers.pop(pid, None)  # re-inserted last: the most recently applied
        if seqs is None:
            seqs = AppliedSeqs()
            if len(producers) >= self.max_producers:
                del producers[next(iter(producers))]
                self.counters["producers_forgotten"] += 1
        producers[pid] = seqs
        return seqs

    def _apply_one(self, message: Input) -> None:
        emitted = self._emitted_now
        mark, mark_bytes = len(emitted), self._emitted_bytes
        try:
            self.component.apply(message)
        except (RecursionError, MemoryError) as exc:
            raise ApplyFailed(f"apply failed for {message!r}: {exc!r}") from exc
        except Exception as exc:  # the user's code: every replica fails alike
            del emitted[mark:]  # what it emitted before raising is not sent
            self._emitted_bytes = mark_bytes
            self.counters["apply_errors"] += 1
            if self.counters["apply_errors"] <= 10 or self.counters["apply_errors"] % 1000 == 0:
                log.warning("apply raised for %r: %r", message, exc)

    def _acked(self, acked_below: int) -> None:
        acked_below = min(acked_below, self.emitted)
        outbox = self.outbox
        before = self.outbox_messages
        while outbox and outbox[0][0] < acked_below:
            first, payloads = outbox[0]
            done = min(len(payloads), acked_below - first)
            if done == len(payloads):
                outbox.popleft()
            else:
                outbox[0] = (first + done, payloads[done:])
            self.outbox_messages -= done
        self.outbox_floor = max(self.outbox_floor, acked_below)
        removed = before - self.outbox_messages
        if not outbox:
            self.outbox_bytes = 0
        elif removed:  # in proportion: the bound only holds back the leader's proposals
            self.outbox_bytes -= self.outbox_bytes * removed // before

    # ------------------------------------------------------------------ snapshots

    def snapshot(self) -> bytes:
        """The whole replicated state as bytes (``restore`` takes it back)."""
        return msgpack.packb({"v": SNAPSHOT_VERSION, "index": self.applied_index,
                              **self._state_fields()}, use_bin_type=True)

    def _state_fields(self) -> dict[str, Any]:
        """The snapshot's fields but its version and index (what replicas must agree on)."""
        return {
            "state": self.component.snapshot(),
            "producers": [[pid, s.floor, sorted(s.above)] for pid, s in self.producers.items()],
            "outbox_floor": self.outbox_floor,
            "outbox": [[first, payloads] for first, payloads in self.outbox],
        }

    def restore(self, data: bytes) -> None:
        """Replace the state with a snapshot's; ``DecodeError`` (nothing changed) if it does
        not decode."""
        try:
            snap = msgpack.unpackb(data, raw=False, strict_map_key=False)
            if snap.get("v") != SNAPSHOT_VERSION:
                raise DecodeError(f"unknown snapshot version {snap.get('v')!r}")
            producers = {bytes(pid): AppliedSeqs(int(floor), set(above))
                         for pid, floor, above in snap["producers"]}
            index, floor = int(snap["index"]), int(snap["outbox_floor"])
            outbox = deque((int(first), list(payloads)) for first, payloads in snap["outbox"])
            state = snap["state"]
        except (ValueError, TypeError, KeyError, AttributeError,
                msgpack.UnpackException) as exc:
            raise DecodeError(f"a replica snapshot that does not decode: {exc}") from exc
        try:
            self.component.restore(state)
        except Exception as exc:  # the user's restore: the snapshot is no use to it
            raise DecodeError(f"the component could not restore the snapshot: {exc!r}") \
                from exc
        self.applied_index = index
        self.producers = producers
        self.outbox_floor = floor
        self.outbox = outbox
        self.outbox_messages = sum(len(payloads) for _, payloads in outbox)
        self.outbox_bytes = sum(len(msgpack.packb(p, use_bin_type=True))
                                for _, payloads in outbox for p in payloads)
        self._digest = None

    def state_digest(self) -> str:
        """A digest of the replicated state (equal on replicas that applied the same log);
        computed once per applied index."""
        if self._digest is not None and self._digest[0] == self.applied_index:
            return self._digest[1]
        # Without the index: the same state may sit at different indexes (no-ops).
        packed = msgpack.packb(self._state_fields(), use_bin_type=True)
        digest = hashlib.sha256(packed).hexdigest()[:16]
        self._digest = (self.applied_index, digest)
        return digest
