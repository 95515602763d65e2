"""One replica of a stateful component, in this process: its identity, its group found through
the name service, its Raft member, the leader's feed and the plan of seats.

    replica = Replica(Counter(), names, name="counter", data_dir="/var/lib/counter-1")
    await replica.run(stop)            # until stop is set; a leader hands over first

Identity: a node id made once per data directory (``replica.id``, written and fsynced before
anything else), so a replica restarted with its disk is itself and one on an empty disk is a
new member (``seats.py`` tells why ids are never reused).

Finding the group (name-service keys of ``stateful/<name>/p<partition>``):

* ``.../group`` holds the group's founder and size. The first replica to create it (a CAS on
  its absence) founds the group: it starts as the only voter and leads at once. Every other
  one starts with no configuration and waits for the leader's log.
* each replica registers under the name ``stateful/<name>/p<partition>`` (its Raft address,
  its id in the meta; kept alive by a lease) and watches that name: its transport connects to
  every replica registered, and the leader plans its seats from it (``seats.plan``: learners
  added, promoted, the lost removed), one configuration change at a time.

Status (``status()``, the control socket's answer): the member's role, term, log and apply
positions; the feed's counts; the machine's counters, outbox and state digest (equal on
replicas that applied the same log), and the state itself when it is small.
"""
from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
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
from fabric.stateful.machine import ReplicaMachine
from fabric.stateful.seats import GRACE_S, Seats, plan, preferred_leader
from nameservice.names import Names
from nameservice.raft.types import NONE, ConfChange
from nameservice.server.config import NodeSettings
from nameservice.storage import DiskStorage

log = logging.getLogger(__name__)

__all__ = ["Replica", "group_name", "load_node_id"]

ID_FILE = "replica.id"
PILOT_S = 0.1
"""How often the leader compares its configuration with the replicas registered."""
RETRY_S = 0.5
"""Pause before the group watch or the pilot runs again after failing."""
WAITING_SAY_S = 30.0
"""How often a replica that no configuration includes says it is waiting."""
BALANCE_AFTER_S = 2.0
"""How long a replica leads before it hands over to its partition's preferred leader."""
SMALL_STATE = 64 << 10
"""A state whose snapshot is at most this many bytes is shown whole in the status."""


def group_name(name: str, partition: int) -> str:
    """The name-service name a replica group's members register under."""
    return f"stateful/{name}/p{partition}"


def load_node_id(data_dir: str) -> tuple[int, bool]:
    """This data directory's replica id, and whether it was made now (random, 1..2^53,
    fsynced) rather than read."""
    os.makedirs(data_dir, exist_ok=True)
    path = os.path.join(data_dir, ID_FILE)
    try:
        with open(path, encoding="ascii") as f:
            text = f.read().strip()
    except FileNotFoundError:
        node_id = secrets.randbelow((1 << 53) - 1) + 1
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="ascii") as f:
            f.write(f"{node_id}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(data_dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return node_id, True
    if not text.isdigit() or not 0 < int(text) < 1 << 63:
        raise ConfigError(f"{path} holds no replica id ({text[:40]!r})")
    return int(text), False


@dataclass(frozen=True, slots=True)
class GroupRecord:
    """What the name service keeps of a group (``.../group``): its founder, its size, and a
    nonce made at its founding (so a group founded again under the same name emits under a
    new producer id, and its consumers do not take its messages for old ones)."""

    founder: int
    size: int
    nonce: str

    @classmethod
    def decode(cls, key: str, value: bytes) -> GroupRecord:
        """The record stored at ``key``; ConfigError if it is not one."""
        try:
            got = msgpack.unpackb(value, raw=False)
            return cls(int(got["founder"]), int(got["size"]), str(got["nonce"]))
        except (ValueError, TypeError, KeyError, msgpack.UnpackException) as exc:
            raise ConfigError(f"{key} in the name service is not a replica group's record "
                              f"({exc!r}); delete it to found the group again") from None


def listen_address(listen: str) -> str:
    """``HOST:PORT`` to bind; port 0 picks a free port now."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"expected HOST:PORT, got {listen!r}")
    if int(port):
        return listen
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host.strip("[]"), 0))
        return f"{host}:{probe.getsockname()[1]}"


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
        if size < 1:
            raise ConfigError("a replica group needs at least one replica")
        self.component = component
        self.names = names
        self.name = name
        self.partition = partition
        self.size = size
        self.data_dir = data_dir
        self.listen = listen
        self.channel = input or component.input
        if open_port is None and not self.channel:
            raise ConfigError(f"{type(component).__name__} names no input channel")
        self._open_port = open_port or self._follow_channel
        self.output = output or component.output
        self._open_output = open_output or (self._follow_output if self.output else None)
        self.election_timeout_ms = election_timeout_ms
        self.snapshot_threshold = snapshot_threshold
        self.sync_mode = sync_mode
        self.grace_s = grace_s
        self.prefetch = prefetch
        self.process = process or secrets.token_hex(8)
        """The token of the process this replica runs in (leaders are spread by it)."""
        self.balance = balance
        self.processes: dict[int, str] = {}  # replica id -> its process's token
        self._leading_since = 0.0
        self.machine = ReplicaMachine(component)
        self.member: GroupMember | None = None
        self.feed: LeaderFeed | None = None
        self.emitter: LeaderEmitter | None = None
        self.address = ""
        self.node_id = 0
        self.registered: dict[int, str] = {}  # id -> address, as the name service lists them
        self._last_seen: dict[int, float] = {}
        self._addresses: dict[int, str] = {}  # members' and registered replicas' addresses
        self._started = 0.0
        self._stopping = False
        self._said_waiting = 0.0
        self.ready = asyncio.Event()
        """Set once the replica is registered and its member runs."""
        self.left_unacknowledged = 0
        """Messages the leader held unacknowledged when it stopped (the next leader gets
        them from the intermediaries)."""

    # ------------------------------------------------------------------ running

    async def run(self, stop: asyncio.Event, *, drain_timeout: float = 10.0) -> None:
        """Serve until ``stop`` is set; then a leader finishes what it received (at most
        ``drain_timeout``) and hands its leadership over before deregistering."""
        self.node_id, created = load_node_id(self.data_dir)
        self.address = listen_address(self.listen)
        group = await self._join()
        self.size = group.size
        settings = NodeSettings(id=self.node_id, cluster={self.node_id: self.address},
                                data_dir=self.data_dir,
                                election_timeout_ms=self.election_timeout_ms,
                                snapshot_threshold=self.snapshot_threshold,
                                sync_mode=self.sync_mode, advertise=False)
        storage = DiskStorage(self.data_dir, snapshot_threshold=self.snapshot_threshold)
        hard_state, snapshot, entries = storage.initial_state()
        empty = not hard_state.term and not snapshot.meta.index and not entries
        if group.founder == self.node_id and empty and not created:
            storage.close()
            raise ConfigError(
                f"this replica founded {group_name(self.name, self.partition)} but its log "
                f"is gone from {self.data_dir}: start it with an empty directory (it joins as "
                f"a new member) or restore the whole directory")
        member = self.member = GroupMember(
            settings, self.machine, on_applied=self._on_applied, on_role=self._on_role,
            voters=(self.node_id,) if group.founder == self.node_id else (), storage=storage)
        self.feed = LeaderFeed(member, self.machine, self._open_port)
        self.emitter = LeaderEmitter(member, self.machine, self._open_output,
                                     output_id(self.name, self.partition, group.nonce))
        member_stop = asyncio.Event()
        member_task = asyncio.ensure_future(member.run(member_stop))
        registration = None
        tasks: list[asyncio.Future] = []
        try:
            registration = await self.names.register(
                group_name(self.name, self.partition), self.address,
                {"id": self.node_id, "process": self.process})
            self._started = time.monotonic()
            tasks = [asyncio.ensure_future(self._supervised(self._watch_group)),
                     asyncio.ensure_future(self._supervised(self._pilot))]
            log.info("replica %d of %s p%d at %s (%s)", self.node_id, self.name,
                     self.partition, self.address,
                     "founder" if group.founder == self.node_id else "member")
            self.ready.set()
            stopped = asyncio.ensure_future(stop.wait())
            tasks.append(stopped)
            await asyncio.wait({member_task, stopped}, return_when=asyncio.FIRST_COMPLETED)
            self._stopping = True  # the pilot neither gives nor plans seats from now on
            if not member_task.done():
                self.left_unacknowledged = await self.feed.drain(drain_timeout)
            member_stop.set()  # a leader hands over while still registered
            await asyncio.wait({member_task})
        finally:
            self._stopping = True
            for task in tasks:
                task.cancel()
            await self.feed.close()
            await self.emitter.close()
            if registration is not None:
                try:
                    await registration.close()
                except Exception as exc:  # the lease expires by itself
                    log.warning("could not deregister: %s", exc)
            member_stop.set()
            await member_task  # raises a storage failure

    async def _join(self) -> GroupRecord:
        """The group's record: made now, with this replica as its founder, if the group has
        none yet. The group's size is the one it was founded with."""
        client = self.names.client
        key = f"{group_name(self.name, self.partition)}/group"
        mine = GroupRecord(self.node_id, self.size, secrets.token_hex(8))
        for _ in range(3):  # deleted between the CAS and the read: try again
            value = msgpack.packb({"founder": mine.founder, "size": mine.size,
                                   "nonce": mine.nonce})
            if (await client.cas(key, value, expect_absent=True)).succeeded:
                log.info("founded the replica group %s", group_name(self.name, self.partition))
                return mine
            current = await client.get(key)
            if current is not None:
                group = GroupRecord.decode(key, current.value)
                if group.size != self.size:
                    log.warning("the group was founded with %d replicas; this one was told "
                                "%d: it keeps %d", group.size, self.size, group.size)
                return group
        raise ConfigError(f"{key} keeps changing in the name service")

    async def _supervised(self, loop: Callable[[], Awaitable[None]]) -> None:
        """Run ``loop`` again, after a pause, whenever it fails (a watch cut off, a name
        service busy): the replica must keep following its group."""
        while True:
            try:
                await loop()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("%s failed, again in %.1f s: %r", loop.__name__, RETRY_S, exc)
            await asyncio.sleep(RETRY_S)

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

    # ------------------------------------------------------------------ the group

    async def _watch_group(self) -> None:
        async for endpoints in self.names.watch_name(group_name(self.name, self.partition)):
            registered, processes = {}, {}
            for item in endpoints:
                node = item.meta.get("id")
                if isinstance(node, int) and node > 0:
                    registered[node] = item.endpoint
                    processes[node] = str(item.meta.get("process", ""))
            now = time.monotonic()
            for node in registered:
                self._last_seen[node] = now
            for node in self.registered.keys() - registered.keys():
                self._last_seen[node] = now  # gone from now on
            self.registered = registered
            self.processes = processes
            self._follow_members()

    async def _pilot(self) -> None:
        while True:
            await asyncio.sleep(PILOT_S)
            if self._stopping:
                continue
            self._consume_if_ready()
            self._follow_members()
            change = self.next_change()
            if change is not None:
                self._propose_change(change)
            elif self.balance:
                self._hand_to_preferred()
            self._say_if_waiting()

    def _quorum_of_size(self) -> bool:
        """Whether the configuration has a majority of the group's size as voters: before
        that, a message committed could be on fewer disks than the group promises."""
        member = self.member
        return member is not None and len(member.core.conf_state.voters) > self.size // 2

    def _consume_if_ready(self) -> None:
        """The leader consumes once its group has a majority of its size as voters."""
        member, feed = self.member, self.feed
        if member is not None and feed is not None and member.is_leader \
                and self._quorum_of_size():
            feed.on_role(True)

    def _follow_members(self) -> None:
        """Keep the Raft connections to the configuration's members at their last known
        address, registered or not (a lease lost with the name service does not cut a member
        off its group); connect to every replica registered."""
        member = self.member
        if member is None:
            return
        conf = member.core.conf_state
        members = set(conf.voters) | set(conf.learners)
        for node in list(self._addresses):
            if node not in members and node not in self.registered:
                del self._addresses[node]
        self._addresses.update(self.registered)
        member.set_peers(dict(self._addresses))

    def _say_if_waiting(self) -> None:
        """A replica that is no member of its group's configuration says so now and then
        (it waits for the leader to add it; a group whose members are all gone never will)."""
        member = self.member
        if member is None:
            return
        conf = member.core.conf_state
        now = time.monotonic()
        if self.node_id in conf.voters or self.node_id in conf.learners \
                or now - self._started < WAITING_SAY_S or now - self._said_waiting < WAITING_SAY_S:
            return
        self._said_waiting = now
        log.warning("replica %d is not a member of %s yet: waiting for its leader to add it "
                    "(if every member of the group is gone for good, delete %s/ from the "
                    "name service and the replicas' data to found it again)", self.node_id,
                    group_name(self.name, self.partition), group_name(self.name, self.partition))

    def next_change(self) -> ConfChange | None:
        """The configuration change the leader should propose now (None: none, or not the
        leader)."""
        member = self.member
        if member is None or not member.is_leader:
            return None
        core = member.core
        conf = core.conf_state
        now = time.monotonic()
        members = set(conf.voters) | set(conf.learners)
        gone_for = {node: now - self._last_seen.get(node, self._started)
                    for node in members if node not in self.registered}
        lag = core.config.max_promotion_lag
        caught_up = frozenset(node for node in conf.learners
                              if node in core.progress
                              and core.progress[node].match >= core.last_index - lag)
        return plan(Seats(me=self.node_id, size=self.size, conf=conf,
                          registered=frozenset(self.registered), gone_for=gone_for,
                          caught_up=caught_up), self.grace_s)

    def _hand_to_preferred(self) -> None:
        """A leader that has led for ``BALANCE_AFTER_S`` hands over to the partition's preferred
        leader (``seats.preferred_leader``) once that one is a caught-up voter."""
        member = self.member
        if member is None or not member.is_leader \
                or time.monotonic() - self._leading_since < BALANCE_AFTER_S:
            return
        core = member.core
        target = preferred_leader(self.partition, self.processes)
        if target is None or target == self.node_id or target not in core.conf_state.voters \
                or core.transferee != NONE:
            return
        progress = core.progress.get(target)
        if progress is None or progress.match < core.last_index - core.config.max_promotion_lag:
            return
        log.info("handing leadership of p%d to replica %d (its preferred leader)",
                 self.partition, target)
        core.transfer_leadership(target)
        member.after_input()

    def _propose_change(self, change: ConfChange) -> None:
        member = self.member
        assert member is not None
        try:
            member.core.propose_conf_change(change)
        except Exception as exc:  # not now (an uncommitted change, a transfer): next time
            log.debug("configuration change %s not proposed: %s", change, exc)
            return
        log.info("proposed %s of replica %d", change.kind.name.lower(), change.node)
        member.after_input()

    # ------------------------------------------------------------------ callbacks

    def _on_role(self, is_leader: bool) -> None:
        if is_leader:
            self._leading_since = time.monotonic()
        if self.feed is not None and self.emitter is not None and not self._stopping:
            self.feed.on_role(is_leader and self._quorum_of_size())
            self.emitter.on_role(is_leader)
        elif not is_leader and self.feed is not None and self.emitter is not None:
            self.feed.on_role(False)
            self.emitter.on_role(False)

    def _on_applied(self, entries) -> None:
        if self.feed is not None and self.emitter is not None:
            self.feed.on_applied(entries)
            self.emitter.on_applied()

    # ------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        """What the control socket answers to ``status`` (see module docstring)."""
        machine = self.machine
        out: dict[str, Any] = {
            "kind": "stateful", "name": self.name, "partition": self.partition,
            "address": self.address, "registered": sorted(self.registered),
            "outbox": machine.outbox_messages, "emitted": machine.emitted,
            "state_digest": machine.state_digest(), "counters": dict(machine.counters),
        }
        if self.member is not None:
            member = self.member.status()
            out.update(member, counters={**member["counters"], **machine.counters})
            conf = self.member.core.conf_state
            out["voters"], out["learners"] = list(conf.voters), list(conf.learners)
        if self.feed is not None and self.emitter is not None:
            out["feed"] = self.feed.status()
            out["emitter"] = self.emitter.status()
        state = self.component.snapshot()
        if len(msgpack.packb(state, use_bin_type=True)) <= SMALL_STATE:
            out["state"] = state
        return out
