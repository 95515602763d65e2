"""One replica of a Raft group found through the name service: its identity, its group's
record, its registration, the plan of seats, and what its leader does with the leadership
(``LeaderWork``: a stateful component's feed and emitter, the task queue's front).

    replica = GroupReplica(machine, names, group="stateful/counter/p0", data_dir=...,
                           work=lambda member, record: MyWork(member))
    await replica.run(stop)            # until stop is set; a leader hands over first

Identity: a node id made once per data directory (``replica.id``, written and fsynced before
anything else), so a replica restarted with its disk is itself and one on an empty disk is a
new member (``seats.py`` tells why ids are never reused).

Finding the group (name-service keys under the group's name, ``group``):

* ``<group>/group`` holds the group's founder and size. The first replica to create it (a CAS
  on its absence) founds the group: it starts as the only voter and leads at once. Every other
  one starts with no configuration and waits for the leader's log.
* each replica registers under the name ``<group>`` (its Raft address; its id, its process and
  ``meta`` in the meta; kept alive by a lease) and watches that name: its transport connects to
  every replica registered, and the leader plans its seats from it (``seats.plan``: learners
  added, promoted, the lost removed), one configuration change at a time.

The leader's work is told of its role (``on_role(is_leader, quorum)``: ``quorum`` once the
configuration has a majority of the group's size as voters — before that, an entry committed
could be on fewer disks than the group promises) and of every entry applied.
"""
from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import msgpack

from fabric.errors import ConfigError
from fabric.stateful.group import GroupMachine, GroupMember
from fabric.stateful.seats import GRACE_S, Seats, plan, preferred_leader
from nameservice.names import Names
from nameservice.raft.types import NONE, ConfChange, Entry
from nameservice.server.config import NodeSettings
from nameservice.storage import DiskStorage

log = logging.getLogger(__name__)

__all__ = ["GroupRecord", "GroupReplica", "LeaderWork", "group_name", "listen_address",
           "load_node_id"]

ID_FILE = "replica.id"
PILOT_S = 0.1
"""How often the leader compares its configuration with the replicas registered."""
RETRY_S = 0.5
"""Pause before the group watch or the pilot runs again after failing."""
WAITING_SAY_S = 30.0
"""How often a replica that no configuration includes says it is waiting."""
BALANCE_AFTER_S = 2.0
"""How long a replica leads before it hands over to its partition's preferred leader."""


def group_name(name: str, partition: int) -> str:
    """The name-service name a stateful component's replica group registers under."""
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


class LeaderWork(Protocol):
    """What a group's leader does with its leadership (see module docstring)."""

    def on_role(self, is_leader: bool, quorum: bool) -> None:
        """This replica leads (and its configuration has a quorum of the group's size), or
        not; called again whenever either may have changed."""

    def on_applied(self, entries: Sequence[Entry]) -> None:
        """Entries were applied to the machine."""

    async def drain(self, timeout: float) -> int:
        """The replica stops: finish what the leader took in (at most ``timeout``); what is
        left for the next leader."""

    async def close(self) -> None:
        """Stop for good."""

    def status(self) -> dict[str, Any]:
        """What the work holds now, and its counters."""


MakeWork = Callable[[GroupMember, GroupRecord], LeaderWork]


class GroupReplica:
    """One replica of a Raft group (see module docstring).

    ``group``: the name-service name its replicas register under; ``meta``: more to say in
    its registration (an address its leader serves on, say); ``partition`` and ``balance``:
    leaders of several groups in the same processes spread (``seats.preferred_leader``).
    """

    def __init__(self, machine: GroupMachine, names: Names, *, group: str, data_dir: str,
                 work: MakeWork, size: int = 3, listen: str = "127.0.0.1:0",
                 meta: dict[str, Any] | None = None,
                 election_timeout_ms: tuple[int, int] = (150, 300),
                 snapshot_threshold: int = 10_000, sync_mode: str = "auto",
                 grace_s: float = GRACE_S, process: str = "", partition: int = 0,
                 balance: bool = False) -> None:
        if size < 1:
            raise ConfigError("a replica group needs at least one replica")
        self.machine = machine
        self.names = names
        self.group = group
        self.size = size
        self.data_dir = data_dir
        self.listen = listen
        self.meta = dict(meta or {})
        self._make_work = work
        self.election_timeout_ms = election_timeout_ms
        self.snapshot_threshold = snapshot_threshold
        self.sync_mode = sync_mode
        self.grace_s = grace_s
        self.process = process or secrets.token_hex(8)
        """The token of the process this replica runs in (leaders are spread by it)."""
        self.partition = partition
        self.balance = balance
        self.processes: dict[int, str] = {}  # replica id -> its process's token
        self.metas: dict[int, dict[str, Any]] = {}  # replica id -> its registration's meta
        self._leading_since = 0.0
        self.member: GroupMember | None = None
        self.work: LeaderWork | None = None
        self.record: GroupRecord | None = None
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
        self.left_unfinished = 0
        """What the leader's work left for the next leader when it stopped (``drain``)."""

    # ------------------------------------------------------------------ running

    async def run(self, stop: asyncio.Event, *, drain_timeout: float = 10.0) -> None:
        """Serve until ``stop`` is set; then a leader's work drains (at most
        ``drain_timeout``) and the leader hands its leadership over before deregistering."""
        self.node_id, created = load_node_id(self.data_dir)
        self.address = listen_address(self.listen)
        group = self.record = await self._join()
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
                f"this replica founded {self.group} but its log is gone from "
                f"{self.data_dir}: start it with an empty directory (it joins as a new member) "
                f"or restore the whole directory")
        member = self.member = GroupMember(
            settings, self.machine, on_applied=self._on_applied, on_role=self._on_role,
            voters=(self.node_id,) if group.founder == self.node_id else (), storage=storage)
        work = self.work = self._make_work(member, group)
        member_stop = asyncio.Event()
        member_task = asyncio.ensure_future(member.run(member_stop))
        registration = None
        tasks: list[asyncio.Future] = []
        try:
            registration = await self.names.register(
                self.group, self.address, {**self.meta, "id": self.node_id,
                                           "process": self.process})
            self._started = time.monotonic()
            tasks = [asyncio.ensure_future(self._supervised(self._watch_group)),
                     asyncio.ensure_future(self._supervised(self._pilot))]
            log.info("replica %d of %s at %s (%s)", self.node_id, self.group, self.address,
                     "founder" if group.founder == self.node_id else "member")
            self.ready.set()
            stopped = asyncio.ensure_future(stop.wait())
            tasks.append(stopped)
            await asyncio.wait({member_task, stopped}, return_when=asyncio.FIRST_COMPLETED)
            self._stopping = True  # the pilot neither gives nor plans seats from now on
            if not member_task.done():
                self.left_unfinished = await work.drain(drain_timeout)
            member_stop.set()  # a leader hands over while still registered
            await asyncio.wait({member_task})
        finally:
            self._stopping = True
            for task in tasks:
                task.cancel()
            await work.close()
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
        key = f"{self.group}/group"
        mine = GroupRecord(self.node_id, self.size, secrets.token_hex(8))
        for _ in range(3):  # deleted between the CAS and the read: try again
            value = msgpack.packb({"founder": mine.founder, "size": mine.size,
                                   "nonce": mine.nonce})
            if (await client.cas(key, value, expect_absent=True)).succeeded:
                log.info("founded the replica group %s", self.group)
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

    # ------------------------------------------------------------------ the group

    async def _watch_group(self) -> None:
        async for endpoints in self.names.watch_name(self.group):
            registered, processes, metas = {}, {}, {}
            for item in endpoints:
                node = item.meta.get("id")
                if isinstance(node, int) and node > 0:
                    registered[node] = item.endpoint
                    processes[node] = str(item.meta.get("process", ""))
                    metas[node] = dict(item.meta)
            now = time.monotonic()
            for node in registered:
                self._last_seen[node] = now
            for node in self.registered.keys() - registered.keys():
                self._last_seen[node] = now  # gone from now on
            self.registered = registered
            self.processes = processes
            self.metas = metas
            self._follow_members()

    async def _pilot(self) -> None:
        while True:
            await asyncio.sleep(PILOT_S)
            if self._stopping:
                continue
            self._tell_role()
            self._follow_members()
            change = self.next_change()
            if change is not None:
                self._propose_change(change)
            elif self.balance:
                self._hand_to_preferred()
            self._say_if_waiting()

    def quorum_of_size(self) -> bool:
        """Whether the configuration has a majority of the group's size as voters."""
        member = self.member
        return member is not None and len(member.core.conf_state.voters) > self.size // 2

    def _tell_role(self) -> None:
        member, work = self.member, self.work
        if member is not None and work is not None and member.is_leader:
            work.on_role(True, self.quorum_of_size())
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
                    self.group, self.group)

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
        if self.work is not None and (not self._stopping or not is_leader):
            self.work.on_role(is_leader, is_leader and self.quorum_of_size())

    def _on_applied(self, entries: Sequence[Entry]) -> None:
        if self.work is not None:
            self.work.on_applied(entries)

    # ------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        """The member's role, term, log and apply positions and counters; the configuration;
        the registered replicas; the work's status (``work``)."""
        out: dict[str, Any] = {"group": self.group, "address": self.address,
                               "registered": sorted(self.registered)}
        if self.member is not None:
            out.update(self.member.status())
            conf = self.member.core.conf_state
            out["voters"], out["learners"] = list(conf.voters), list(conf.learners)
        if self.work is not None:
            out["work"] = self.work.status()
        return out
