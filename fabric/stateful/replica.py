"""One replica of a stateful component, in this process: a ``GroupReplica`` whose machine
applies the component's input and whose leader consumes and emits (``ComponentWork``: the
feed and the emitter).

    replica = Replica(Counter(), names, name="counter", data_dir="/var/lib/counter-1")
    await replica.run(stop)            # until stop is set; a leader hands over first

The group registers as ``stateful/<name>/p<partition>`` (``group_name``). Status
(``status()``, the control socket's answer): the member's role, term, log and apply positions;
the feed's and the emitter's counts; the machine's counters, outbox and state digest (equal
on replicas that applied the same log), and the state itself when it is small.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import msgpack

from fabric.errors import ConfigError
from fabric.ports.input import InputPort
from fabric.ports.output import OutputPort
from fabric.ports.received import DeliveredBatch
from fabric.stateful.component import Stateful
from fabric.stateful.emitter import LeaderEmitter, OpenOutput, output_id
from fabric.stateful.feed import LeaderFeed, OpenPort, StopFollowing
from fabric.stateful.group import GroupMember
from fabric.stateful.groupreplica import GroupRecord, GroupReplica, group_name
from fabric.stateful.machine import ReplicaMachine
from fabric.stateful.seats import GRACE_S
from nameservice.names import Names
from nameservice.raft.types import Entry

__all__ = ["ComponentWork", "Replica"]

SMALL_STATE = 64 << 10
"""A state whose snapshot is at most this many bytes is shown whole in the status."""


class ComponentWork:
    """A stateful component's leader: it consumes (once its group has a quorum of its size)
    and sends the outbox (while it leads)."""

    def __init__(self, feed: LeaderFeed, emitter: LeaderEmitter) -> None:
        self.feed = feed
        self.emitter = emitter

    def on_role(self, is_leader: bool, quorum: bool) -> None:
        """See ``LeaderWork.on_role``."""
        self.feed.on_role(is_leader and quorum)
        self.emitter.on_role(is_leader)

    def on_applied(self, entries: Sequence[Entry]) -> None:
        """See ``LeaderWork.on_applied``."""
        self.feed.on_applied(entries)
        self.emitter.on_applied()

    async def drain(self, timeout: float) -> int:
        """The messages the leader held unacknowledged when it stopped (the next leader gets
        them from the intermediaries)."""
        return await self.feed.drain(timeout)

    async def close(self) -> None:
        """Stop consuming and emitting."""
        await self.feed.close()
        await self.emitter.close()

    def status(self) -> dict[str, Any]:
        """The feed's and the emitter's status."""
        return {"feed": self.feed.status(), "emitter": self.emitter.status()}


class Replica:
    """One replica of a stateful component's group (see module docstring).

    ``open_port(handler)``: how the leader opens its input port (default: on channel
    ``input``, following the intermediaries registered for it).
    """

    def __init__(self, component: Stateful, names: Names, *, name: str, data_dir: str,
                 partition: int = 0, size: int = 3, listen: str = "127.0.0.1:0",
                 input: str | None = None, output: str | None = None,
                 open_port: OpenPort | None = None, open_output: OpenOutput | None = None,
                 election_timeout_ms: tuple[int, int] = (150, 300),
                 snapshot_threshold: int = 10_000, sync_mode: str = "auto",
                 grace_s: float = GRACE_S, prefetch: int = 8192, process: str = "",
                 balance: bool = False) -> None:
        self.component = component
        self.names = names
        self.name = name
        self.partition = partition
        self.channel = input or component.input
        if open_port is None and not self.channel:
            raise ConfigError(f"{type(component).__name__} names no input channel")
        self._open_port = open_port or self._follow_channel
        self.output = output or component.output
        self._open_output = open_output or (self._follow_output if self.output else None)
        self.prefetch = prefetch
        self.machine = ReplicaMachine(component)
        self.work: ComponentWork | None = None
        self.group = GroupReplica(
            self.machine, names, group=group_name(name, partition), data_dir=data_dir,
            work=self._make_work, size=size, listen=listen,
            election_timeout_ms=election_timeout_ms, snapshot_threshold=snapshot_threshold,
            sync_mode=sync_mode, grace_s=grace_s, process=process, partition=partition,
            balance=balance)
        self.ready = self.group.ready
        """Set once the replica is registered and its member runs."""

    @property
    def member(self) -> GroupMember | None:
        """This replica's Raft member (once it runs)."""
        return self.group.member

    @property
    def node_id(self) -> int:
        """This replica's id (once it runs)."""
        return self.group.node_id

    @property
    def address(self) -> str:
        """This replica's Raft address (once it runs)."""
        return self.group.address

    @property
    def left_unacknowledged(self) -> int:
        """Messages the leader held unacknowledged when it stopped (the next leader gets them
        from the intermediaries)."""
        return self.group.left_unfinished

    @property
    def feed(self) -> LeaderFeed | None:
        """The leader's feed (once the replica runs)."""
        return self.work.feed if self.work is not None else None

    async def run(self, stop: asyncio.Event, *, drain_timeout: float = 10.0) -> None:
        """Serve until ``stop`` is set; then a leader finishes what it received (at most
        ``drain_timeout``) and hands its leadership over before deregistering."""
        await self.group.run(stop, drain_timeout=drain_timeout)

    def _make_work(self, member: GroupMember, record: GroupRecord) -> ComponentWork:
        feed = LeaderFeed(member, self.machine, self._open_port)
        emitter = LeaderEmitter(member, self.machine, self._open_output,
                                output_id(self.name, self.partition, record.nonce))
        self.work = ComponentWork(feed, emitter)
        return self.work

    async def _follow_channel(self, handler: Callable[[DeliveredBatch], None]
                              ) -> tuple[InputPort, StopFollowing]:
        from fabric.runtime.registry import watch_channel
        from fabric.runtime.resolver import Resolver

        channel = self.channel
        assert channel is not None
        port = InputPort(channel, batch_handler=handler, auto_ack=False,
                         prefetch=self.prefetch)
        await port.start()
        resolver = Resolver(port, lambda: watch_channel(self.names, channel)).start()
        return port, resolver.close

    async def _follow_output(self, producer_id: bytes, first_seq: int
                             ) -> tuple[OutputPort, StopFollowing]:
        from fabric.runtime.registry import watch_channel
        from fabric.runtime.resolver import Resolver

        channel = self.output
        assert channel is not None
        port = OutputPort(channel, producer_id=producer_id, first_seq=first_seq)
        await port.start()
        resolver = Resolver(port, lambda: watch_channel(self.names, channel)).start()
        return port, resolver.close

    def status(self) -> dict[str, Any]:
        """What the control socket answers to ``status`` (see module docstring)."""
        machine = self.machine
        out: dict[str, Any] = {
            "kind": "stateful", "name": self.name, "partition": self.partition,
            "outbox": machine.outbox_messages, "emitted": machine.emitted,
            "state_digest": machine.state_digest(), "counters": dict(machine.counters),
        }
        group = self.group.status()
        work = group.pop("work", None)
        out.update(group, counters={**group.get("counters", {}), **machine.counters})
        if work is not None:
            out.update(work)
        state = self.component.snapshot()
        if len(msgpack.packb(state, use_bin_type=True)) <= SMALL_STATE:
            out["state"] = state
        return out
