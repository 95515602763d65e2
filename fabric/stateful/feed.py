"""The leader's feed: input messages into the log, acknowledged once their entry is applied.

Only the leader replica consumes. When this replica becomes leader the feed opens an
``InputPort`` on the component's input channel with a batch handler (whole batches, no
per-message work here, acknowledged by hand); every batch the port delivers is buffered, and
once per turn of the event loop the buffer becomes ONE log entry (each batch a run of
consecutive messages of its producer; an entry closes once it holds ``max_entry_messages``
or ``max_entry_bytes``).
When that entry is applied, in the term it was proposed in, its batches are acknowledged: the
producers learn a message is handled only once it is on a quorum's disks and in the state.

When this replica stops leading, the port is closed without acknowledging anything pending:
the intermediaries give what it held to the next leader (flagged redelivered), and whatever of
it was committed after all is skipped there as a duplicate. A message is thus applied once
whatever fails: lost never (unacknowledged until committed), applied twice never (the machine
remembers each producer's applied numbers).

Bounds: the port's credit (``prefetch`` per intermediary) bounds what waits here, in the buffer
and in entries not yet applied; while the machine's outbox is full nothing is proposed (the
buffer waits, the port's credit runs out, the intermediaries hold the rest).
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fabric.ports.input import InputPort
from fabric.ports.received import DeliveredBatch
from fabric.stateful.group import GroupMember
from fabric.stateful.machine import ReplicaMachine, encode_input
from nameservice.raft.types import Entry

log = logging.getLogger(__name__)

__all__ = ["LeaderFeed", "OpenPort"]

MAX_ENTRY_MESSAGES = 4096
MAX_ENTRY_BYTES = 4 << 20
"""An entry closes once it holds this many bytes of payloads (at least one batch): entries
are replicated whole, in frames of bounded size."""
RETRY_S = 0.01
RETRY_OPEN_S = 0.5
StopFollowing = Callable[[], Awaitable[None]]
OpenPort = Callable[[Callable[[DeliveredBatch], None]],
                   Awaitable[tuple[InputPort, StopFollowing]]]
"""``open_port(batch_handler)``: an input port on the component's channel (``auto_ack=False``,
delivering to ``batch_handler``), started and following its intermediaries, and how to stop
following them (the feed calls it, then closes the port)."""


class LeaderFeed:
    """Feeds the log from the input channel while this replica leads (see module docstring)."""

    def __init__(self, member: GroupMember, machine: ReplicaMachine, open_port: OpenPort, *,
                 max_entry_messages: int = MAX_ENTRY_MESSAGES,
                 max_entry_bytes: int = MAX_ENTRY_BYTES) -> None:
        self._member = member
        self._machine = machine
        self._open_port = open_port
        self.max_entry_messages = max_entry_messages
        self.max_entry_bytes = max_entry_bytes
        self.port: InputPort | None = None
        self._stop_following: StopFollowing | None = None
        self._buffer: list[DeliveredBatch] = []
        self._buffered = 0  # messages in the buffer
        self._pending: dict[int, tuple[int, list[DeliveredBatch]]] = {}  # index -> (term, ...)
        self._flush_scheduled = False
        self._task: asyncio.Task | None = None
        self._closing: set[asyncio.Task] = set()
        self._closed = False
        self.counters = {"entries_proposed": 0, "messages_proposed": 0, "messages_acked": 0,
                         "messages_abandoned": 0}

    # ------------------------------------------------------------------ role changes

    def on_role(self, is_leader: bool) -> None:
        """This replica leads and may consume (open the port), or not (close it)."""
        if is_leader:
            if self._task is None and self.port is None and not self._closed:
                self._task = asyncio.ensure_future(self._open())
        else:
            self._let_go()

    async def _open(self) -> None:
        try:
            port, stop_following = await self._open_port(self._on_batch)
        except Exception as exc:
            log.warning("could not open the input port: %s", exc)
            self._task = None
            if self._member.is_leader and not self._closed:  # try again shortly
                asyncio.get_running_loop().call_later(RETRY_OPEN_S, self.on_role, True)
            return
        self._task = None
        if not self._member.is_leader or self._closed:  # lost the role meanwhile
            await _shut(port, stop_following)
            return
        self.port, self._stop_following = port, stop_following
        log.info("leading: consuming from channel %r", port.channel)

    def _let_go(self) -> None:
        abandoned = self._held()
        self.counters["messages_abandoned"] += abandoned
        self._buffer = []
        self._buffered = 0
        self._pending.clear()
        if self._task is not None:
            self._task.cancel()
            self._task = None
        port, self.port = self.port, None
        stop, self._stop_following = self._stop_following, None
        if port is not None:
            log.info("no longer leading: %d messages left to the next leader", abandoned)
            task = asyncio.ensure_future(_shut(port, stop))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """Stop consuming for good: what is not applied is left to the next leader."""
        self._closed = True
        self._let_go()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    async def drain(self, timeout: float) -> int:
        """Drain the port while the feed goes on (at most ``timeout``): the intermediaries
        route nothing more here, what arrived is proposed, applied and acknowledged, then the
        port closes. The messages left unacknowledged (the next leader gets them)."""
        port = self.port
        if port is None:
            return 0
        stop, self._stop_following = self._stop_following, None
        if stop is not None:
            await stop()
        report = await port.drain(timeout)  # acks keep flowing to it meanwhile
        left = 0 if report.complete else max(report.left_messages, self._held())
        self.port = None
        return left

    # ------------------------------------------------------------------ input -> log

    def _held(self) -> int:
        """Messages received and not acknowledged: buffered, or in entries not applied."""
        return self._buffered + sum(len(b.payloads) for _, batches in self._pending.values()
                                    for b in batches)

    def _on_batch(self, batch: DeliveredBatch) -> None:
        if self.port is None and self._task is None:  # a port being let go: not ours now
            return
        self._buffer.append(batch)
        self._buffered += len(batch.payloads)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        member = self._member
        proposed = False
        while self._buffer and not self._machine.outbox_full:
            chunk, count, size = [], 0, 0
            for batch in self._buffer:
                chunk.append(batch)
                count += len(batch.payloads)
                size += batch.size
                if count >= self.max_entry_messages or size >= self.max_entry_bytes:
                    break
            runs = [(b.producer_id, b.first_seq, b.payloads) for b in chunk]
            placed = member.propose(encode_input(runs))
            if placed is None:
                break
            term, index = placed
            del self._buffer[:len(chunk)]
            self._buffered -= count
            self._pending[index] = (term, chunk)
            self.counters["entries_proposed"] += 1
            self.counters["messages_proposed"] += count
            proposed = True
        if proposed:
            member.after_input()
        if self._buffer and not self._flush_scheduled and self.port is not None:
            self._flush_scheduled = True  # refused for now: try again shortly
            asyncio.get_running_loop().call_later(RETRY_S, self._flush)

    def on_applied(self, entries: Sequence[Entry]) -> None:
        """Entries applied: acknowledge the batches of those this leader proposed."""
        pending = self._pending
        if not pending:
            return
        done: list[DeliveredBatch] = []
        for entry in entries:
            mine = pending.pop(entry.index, None)
            if mine is None:
                continue
            term, batches = mine
            count = sum(len(b.payloads) for b in batches)
            if term != entry.term:  # another leader's entry took its place: not ours
                self.counters["messages_abandoned"] += count
                continue
            done += batches
            self.counters["messages_acked"] += count
        if done and self.port is not None:
            self.port.ack_batches(done)

    def status(self) -> dict[str, Any]:
        """What the feed holds now, and its counters."""
        return {"consuming": self.port is not None, "buffered": self._buffered,
                "pending_entries": len(self._pending),
                "pending_messages": self._held() - self._buffered, **self.counters}


async def _shut(port: InputPort, stop_following: StopFollowing | None) -> None:
    """Stop following the intermediaries, then close the port at once (what it holds
    unacknowledged goes to the next leader)."""
    if stop_following is not None:
        await stop_following()
    await port.close()
