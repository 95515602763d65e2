"""The leader's emitter: the replicated outbox sent to the output channel, exactly once in
effect.

What ``apply`` emits is in the replicated outbox, numbered and cut into batches the same way
on every replica (``machine.py``). While this replica leads, the emitter sends the outbox
through an ``OutputPort`` whose producer id is the group's own (``output_id``: the same on
every replica) and whose numbering starts at the outbox's floor, each outbox batch with
``send_batch`` so it leaves as the same batches under the same numbers, whichever replica sends
it. A new leader sends the whole outbox again; consumers drop the copies of batches they had
(a consumer remembers, per producer, the batches it received), and a stateful consumer's
machine skips any message it applied. A deposed leader can only send what was committed, under
the same numbers, until it learns of the new term and closes its port.

Acknowledgements flow back into the log: every ``ACK_EVERY_S`` the leader proposes
OUTBOX_ACKED with the port's ``acked_below`` when it moved, and the outbox shrinks on every
replica. With no output channel, emitted messages are acknowledged as soon as they are applied.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fabric.ports.output import OutputPort
from fabric.stateful.feed import StopFollowing
from fabric.stateful.group import GroupMember
from fabric.stateful.machine import ReplicaMachine, encode_outbox_acked

log = logging.getLogger(__name__)

__all__ = ["LeaderEmitter", "OpenOutput", "output_id"]

ACK_EVERY_S = 0.05
RETRY_MIN_S = 0.1
RETRY_MAX_S = 5.0
OpenOutput = Callable[[bytes, int], Awaitable[tuple[OutputPort, StopFollowing]]]
"""``open_output(producer_id, first_seq)``: an output port on the output channel, started and
following its intermediaries, and how to stop following them."""


def output_id(name: str, partition: int, nonce: str) -> bytes:
    """The producer id a replica group emits under (16 bytes, from its name and the nonce
    made when it was founded: the same on every replica, another for a group founded
    again)."""
    return hashlib.sha256(f"fabric-stateful/{name}/p{partition}/{nonce}".encode()).digest()[:16]


class LeaderEmitter:
    """Sends the outbox while this replica leads (see module docstring)."""

    def __init__(self, member: GroupMember, machine: ReplicaMachine,
                 open_output: OpenOutput | None, producer_id: bytes) -> None:
        self._member = member
        self._machine = machine
        self._open_output = open_output
        self.producer_id = producer_id
        self.port: OutputPort | None = None
        self._stop_following: StopFollowing | None = None
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._proposed_ack = -1  # the acked_below last proposed in this leadership
        self._closed = False
        self.counters = {"batches_emitted": 0, "messages_emitted": 0, "outbox_acks_proposed": 0}

    def on_role(self, is_leader: bool) -> None:
        """This replica became leader (start sending) or stopped leading (stop at once)."""
        if is_leader:
            if self._task is None and not self._closed:
                self._proposed_ack = -1
                self._task = asyncio.ensure_future(self._lead())
        else:
            task, self._task = self._task, None
            if task is not None:
                task.cancel()

    def on_applied(self) -> None:
        """Entries were applied: the outbox may have grown."""
        self._wake.set()

    async def close(self) -> None:
        """Stop sending for good (what is unacknowledged stays in the outbox for the next
        leader)."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self._let_go()

    async def _lead(self) -> None:
        """Send while leading; a failure (the port would not open, an intermediary refused)
        is logged and the sending starts again after a pause, from the outbox's floor."""
        pause = RETRY_MIN_S
        while True:
            try:
                if self._open_output is None:
                    await self._acknowledge_all()
                else:
                    await self._send_outbox(self._open_output)
            except asyncio.CancelledError:
                await self._let_go()
                raise
            except Exception as exc:
                log.warning("emitting failed, again in %.1f s: %r", pause, exc)
                await self._let_go()
                await asyncio.sleep(pause)
                pause = min(RETRY_MAX_S, pause * 2)
                continue
            await self._let_go()  # the floor moved past the port: a new port from there
            pause = RETRY_MIN_S

    async def _acknowledge_all(self) -> None:
        machine = self._machine
        while True:
            if machine.outbox_messages:
                self._propose_ack(machine.emitted)
            self._wake.clear()
            await self._wait()

    async def _send_outbox(self, open_output: OpenOutput) -> None:
        machine = self._machine
        floor = machine.outbox_floor
        self.port, self._stop_following = await open_output(self.producer_id, floor)
        port = self.port
        sent = floor  # everything below this number is sent (or acknowledged)
        while True:
            self._wake.clear()
            for first, payloads in machine.outbox_from(sent):
                if first < sent:  # cut by an acknowledgement since: send only the rest
                    payloads, first = payloads[sent - first:], sent
                if first != port.next_seq:
                    # Acknowledged past what this port sent (an earlier leader's OUTBOX_ACKED
                    # applied since): start again from the outbox's floor.
                    return
                await port.send_batch(payloads)
                sent = first + len(payloads)
                self.counters["batches_emitted"] += 1
                self.counters["messages_emitted"] += len(payloads)
            if port.acked_below > machine.outbox_floor:
                self._propose_ack(port.acked_below)
            await self._wait()

    async def _wait(self) -> None:
        try:
            await asyncio.wait_for(self._wake.wait(), ACK_EVERY_S)
        except asyncio.TimeoutError:
            pass

    def _propose_ack(self, acked_below: int) -> None:
        """Propose OUTBOX_ACKED, once per value (a proposal lost with a leadership is proposed
        again by the next leader)."""
        if acked_below <= self._proposed_ack or self._member.propose(
                encode_outbox_acked(acked_below)) is None:
            return
        self._proposed_ack = acked_below
        self.counters["outbox_acks_proposed"] += 1
        self._member.after_input()

    async def _let_go(self) -> None:
        port, self.port = self.port, None
        stop, self._stop_following = self._stop_following, None
        if stop is not None:
            await stop()
        if port is not None:
            await port.close()

    def status(self) -> dict[str, Any]:
        """Whether it sends, what its port holds unacknowledged, and its counters."""
        port = self.port
        return {"sending": port is not None, "unacked": port.unacked if port else 0,
                **self.counters}
