"""The manager: exactly one acts at a time; it places the deployed networks' instances on the
live agents and places a lost host's instances again.

Election: a candidate holds a lease and creates ``cluster/manager`` with it by CAS (expect
absent); the one that succeeds acts, and the revision of that write is its fencing token,
stamped on every placement it writes. The others watch the key and try again when it is
deleted — when the acting manager's lease ends (it died, or was cut off) or it stepped down.
The acting manager stops acting when its lease's deadline passes without a renewal (the same
deadline an agent fences its processes with), so two managers never act at once by its clock,
and every placement it writes is a CAS on the placement's revision as it read it: a write
that lands late, after another manager changed that placement, fails.

Acting: it mirrors ``cluster/`` (agents, networks, placements, what agents run), and on every
change (and every second) makes a plan (``placement.py``) and writes it. Instances that fit
nowhere are listed under ``cluster/unplaced/NET`` with the reason.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import Any

from fabric.cluster import keys
from fabric.cluster.agent import fence_margin, sleep_or
from fabric.cluster.commands import process_name
from fabric.cluster.keys import AgentInfo, Placement, Running
from fabric.cluster.network import Network, network_from_wire
from fabric.cluster.placement import plan
from fabric.errors import ConfigError
from fabric.runtime.peers import members_key
from nameservice.client.leases import LeaseKeeper
from nameservice.client.mirror import Mirror
from nameservice.errors import LeaseNotFound, NameServiceError

__all__ = ["Manager", "UNPLACED", "View"]

log = logging.getLogger(__name__)
UNPLACED = keys.UNPLACED
RETRY_S = 0.2
REPLAN_S = 1.0


class View:
    """The cluster as read from a mirror of ``cluster/``: networks, live agents, placements
    (with their mod revisions) and what the agents report. Records that do not decode are
    skipped and counted in ``bad``."""

    def __init__(self) -> None:
        self.bad = 0
        self._parsed: dict[str, tuple[int, Network | None]] = {}

    def read(self, kvs: dict[str, Any]) -> tuple[dict[str, Network], dict[str, AgentInfo],
                                                  dict, dict]:
        """(networks, agents, placements, running) from the mirror's key-values."""
        networks: dict[str, Network] = {}
        agents: dict[str, AgentInfo] = {}
        placements: dict[tuple[str, str], tuple[Placement, int]] = {}
        running: dict[tuple[str, str, str], Running] = {}
        for key, kv in kvs.items():
            if key.startswith(keys.NETWORKS):
                found = self._network(key, kv)
                if found is not None:
                    networks[found.name] = found
                continue
            if key.startswith(keys.AGENTS):
                parts = keys.split(key, keys.AGENTS, 1)
                record = keys.decode(kv.value) if parts else None
                agent = AgentInfo.from_record(parts[0], record, kv.create_revision) \
                    if parts and record else None
                if agent is not None:
                    agents[agent.host] = agent
                else:
                    self.bad += 1
            elif key.startswith(keys.PLACEMENTS):
                parts = keys.split(key, keys.PLACEMENTS, 2)
                record = keys.decode(kv.value) if parts else None
                placement = Placement.from_record(parts[0], parts[1], record) \
                    if parts and record else None
                if placement is not None:
                    placements[(placement.network, placement.id)] = (placement,
                                                                     kv.mod_revision)
                else:
                    self.bad += 1
            elif key.startswith(keys.RUNNING):
                parts = keys.split(key, keys.RUNNING, 3)
                record = keys.decode(kv.value) if parts else None
                report = Running.from_record(parts[0], parts[1], parts[2], record) \
                    if parts and record else None
                if report is not None:
                    running[(report.host, report.network, report.id)] = report
                else:
                    self.bad += 1
        return networks, agents, placements, running

    def _network(self, key: str, kv: Any) -> Network | None:
        cached = self._parsed.get(key)
        if cached is not None and cached[0] == kv.mod_revision:
            return cached[1]
        try:
            network: Network | None = network_from_wire(kv.value)
        except ConfigError as exc:
            log.error("%s cannot be used: %s", key, exc)
            self.bad += 1
            network = None
        self._parsed[key] = (kv.mod_revision, network)
        return network


class Manager:
    """A manager candidate that acts when elected (see the module docstring)."""

    def __init__(self, client: Any, host: str, *, ttl: float = 3.0) -> None:
        self.client = client
        self.host = host
        self.ttl = ttl
        self.margin = fence_margin(ttl)
        self.acting = False
        self.token = 0
        self.terms = 0
        """How many times this candidate became the acting manager."""
        self.writes = 0
        self.conflicts = 0
        """Placement writes that failed their CAS (another writer got there first)."""
        self.view = View()
        self._unplaced: dict[str, dict[str, str]] = {}
        self._members: dict[str, list[str]] = {}

    async def run(self, stop: asyncio.Event) -> None:
        """Campaign and act until ``stop`` is set."""
        while not stop.is_set():
            lease = LeaseKeeper(self.client, self.ttl)
            try:
                await lease.start()
            except NameServiceError as exc:
                log.debug("manager candidate %s: no lease (%s)", self.host, exc)
                await sleep_or(stop, RETRY_S)
                continue
            try:
                if await self._campaign(lease, stop):
                    await self._act(lease, stop)
            finally:
                self.acting = False
                await lease.close()

    async def _campaign(self, lease: LeaseKeeper, stop: asyncio.Event) -> bool:
        record = keys.encode({"host": self.host, "pid": os.getpid()})
        while not stop.is_set() and not lease.lost.is_set():
            try:
                result = await self.client.cas(keys.MANAGER, record, expect_absent=True,
                                               lease=lease.id)
                if result.succeeded:
                    self.token = result.revision
                    return True
                current = result.kv
                if current is not None:
                    await self._await_vacancy(current.mod_revision, stop, lease)
            except LeaseNotFound:
                return False
            except NameServiceError as exc:
                log.debug("manager candidate %s: %s", self.host, exc)
                await sleep_or(stop, RETRY_S)
        return False

    async def _await_vacancy(self, revision: int, stop: asyncio.Event,
                             lease: LeaseKeeper) -> None:
        watch = self.client.watch(keys.MANAGER, prefix=False, start_revision=revision + 1)
        ended = asyncio.ensure_future(_first(stop.wait(), lease.lost.wait()))
        try:
            while not ended.done():
                event = asyncio.ensure_future(watch.__anext__())
                await asyncio.wait([event, ended], return_when=asyncio.FIRST_COMPLETED)
                if not event.done():
                    event.cancel()
                    break
                if event.result().kind == "delete":
                    break
        finally:
            ended.cancel()
            await watch.close()

    def _deadline(self, lease: LeaseKeeper) -> float:
        return lease.valid_until - self.margin

    async def _act(self, lease: LeaseKeeper, stop: asyncio.Event) -> None:
        self.acting = True
        self.terms += 1
        log.info("manager: %s acts (token %d)", self.host, self.token)
        mirror = Mirror(self.client, keys.ROOT)
        follow = asyncio.ensure_future(mirror.run())
        try:
            await mirror.loaded.wait()
            seen = mirror.version
            while not stop.is_set() and not lease.lost.is_set():
                left = self._deadline(lease) - time.monotonic()
                if left <= 0:
                    log.warning("manager: %s's lease may have ended: stepping down", self.host)
                    return
                mine = mirror.kvs.get(keys.MANAGER)
                if mine is None or mine.mod_revision != self.token:
                    log.warning("manager: %s is no longer the manager", self.host)
                    return
                await self._round(mirror, lease)
                seen = await mirror.wait_change(seen, timeout=min(REPLAN_S, max(left, 0.01)))
        finally:
            follow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follow

    async def _round(self, mirror: Mirror, lease: LeaseKeeper) -> None:
        networks, agents, placements, running = self.view.read(mirror.kvs)
        made = plan(networks, agents, placements, running, self.token)
        for network, ident, placement, revision in made.writes:
            if time.monotonic() >= self._deadline(lease):
                return
            key = keys.placement_key(network, ident)
            value = None if placement is None else keys.encode(placement.to_record())
            try:
                if revision:
                    result = await self.client.cas(key, value, expect_mod_revision=revision)
                else:
                    result = await self.client.cas(key, value, expect_absent=True)
            except NameServiceError as exc:
                log.info("manager: writing %s failed (%s)", key, exc)
                return
            if result.succeeded:
                self.writes += 1
                if placement is not None:
                    log.info("manager: %s/%s -> %s (gen %d)%s", network, ident,
                             placement.host, placement.gen,
                             " replacing gen %d on %s" % (placement.previous["gen"],
                                                          placement.previous["host"])
                             if placement.previous else "")
            else:
                self.conflicts += 1
        await self._publish_unplaced(networks, made.unplaced)
        await self._publish_members(networks)

    async def _publish_members(self, networks: dict[str, Network]) -> None:
        """``cluster/members/NET``: the process names of each network (its start barrier)."""
        for name in set(networks) | set(self._members):
            network = networks.get(name)
            members = sorted({found for spec in network.instances
                              if (found := process_name(name, spec.to_wire()))}) \
                if network else None
            if self._members.get(name) == members:
                continue
            try:
                if members is not None:
                    await self.client.put(members_key(name), keys.encode_list(members))
                else:
                    await self.client.delete(members_key(name))
            except NameServiceError:
                return
            if members is None:
                self._members.pop(name, None)
            else:
                self._members[name] = members

    async def _publish_unplaced(self, networks: dict[str, Network],
                                unplaced: dict[tuple[str, str], str]) -> None:
        by_network: dict[str, dict[str, str]] = {name: {} for name in networks}
        for (network, ident), reason in unplaced.items():
            by_network.setdefault(network, {})[ident] = reason
        for network in set(by_network) | set(self._unplaced):
            now = by_network.get(network, {})
            if self._unplaced.get(network, {}) == now:
                continue
            try:
                if now:
                    await self.client.put(UNPLACED + network, keys.encode(now))
                else:
                    await self.client.delete(UNPLACED + network)
            except NameServiceError:
                return
            self._unplaced[network] = now

    def status(self) -> dict[str, Any]:
        """What ``fabric status`` shows of the manager."""
        return {"acting": self.acting, "token": self.token, "terms": self.terms,
                "writes": self.writes, "conflicts": self.conflicts, "bad_records": self.view.bad}


async def _first(*waits: Any) -> None:
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
