"""The agent: one per host; runs the instances the manager places on it.

It registers ``cluster/agents/HOST`` (labels, slots, address) under a lease, follows
``cluster/placements/`` and runs every incarnation placed on its host (and, during a rolling
update, the one being replaced), each as a child process fenced by the lease (``fence.py``).
It reports each instance under ``cluster/running/HOST/NET/ID`` (same lease). A child that
exits while still placed is started again after a pause that doubles up to
``RESTART_MAX_S``.

Fencing, in the agent: when the lease's deadline (``valid_until - margin``) passes without a
renewal, the agent kills every child at once and starts nothing until it holds a lease again;
the children's own guards do the same if the agent is frozen. When the name service says the
lease is gone, the agent registers again with a new lease and reads the placements afresh
before starting anything: what was moved away while it was cut off is not started again.

An agent that finds its host already registered (its previous run's lease still alive: the
previous run's children may still live until that lease's deadline) waits until that
registration is gone. On SIGTERM it drains every child (the drain protocol), then revokes
its lease.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any

from fabric.cluster import keys
from fabric.cluster.commands import Where, instance_argv
from fabric.cluster.keys import AgentInfo, Placement, Running
from fabric.cluster.network import REPLICATED
from fabric.cluster.supervisor import Child, Ident
from nameservice.client.leases import LeaseKeeper
from nameservice.client.mirror import Mirror
from nameservice.errors import LeaseNotFound, NameServiceError

__all__ = ["Agent", "fence_margin"]

log = logging.getLogger(__name__)
TICK_S = 0.05
RESTART_MIN_S, RESTART_MAX_S = 0.5, 30.0
RETRY_S = 0.2
STARTING_S = 30.0
"""A process still starting after this long no longer holds back the next ones."""


def fence_margin(ttl: float) -> float:
    """How long before the lease's sure end the children are killed: room for clocks that
    run at slightly different rates and for the kill itself."""
    return max(0.2, ttl / 10)


class Agent:
    """An agent of one host (see the module docstring)."""

    def __init__(self, client: Any, *, host: str, address: str, ns: str,
                 labels: dict[str, str] | None = None, slots: int = 8,
                 data_dir: str | os.PathLike[str] = ".", ttl: float = 3.0,
                 workdir: str | None = None, drain_timeout: float = 10.0,
                 env: dict[str, str] | None = None, max_starting: int = 4) -> None:
        self.client = client
        self.info = AgentInfo(host, address, slots, dict(labels or {}), os.getpid())
        self.ns = ns
        self.data_dir = Path(data_dir)
        self.ttl = ttl
        self.margin = fence_margin(ttl)
        self.workdir = workdir or os.getcwd()
        self.drain_timeout = drain_timeout
        self.env = dict(env or {})
        self.max_starting = max_starting
        """At most this many processes starting at once (not yet serving their control
        socket): dozens of interpreters starting together starve everything else on the
        host, the name service's nodes and the agent's own renewals included."""
        self.children: dict[Ident, Child] = {}
        self.fenced = 0
        """How many times the agent killed its children because its lease might be gone."""
        self._lease: LeaseKeeper | None = None
        self.registered = asyncio.Event()
        """Set once the agent first registered."""
        self._wake = asyncio.Event()
        self._reported: dict[tuple[str, str], Running] = {}
        self._registration = 0
        """The create revision of this agent's key: placements stamped with another are
        not run (docs/cluster.md, "Placement")."""
        self._next_start: dict[Ident, float] = {}

    @property
    def host(self) -> str:
        """The host's name."""
        return self.info.host

    # ------------------------------------------------------------------ life

    async def run(self, stop: asyncio.Event) -> int:
        """Serve until ``stop`` is set; then drain every child and deregister. 0."""
        while not stop.is_set():
            await self._wait_previous(stop)
            if stop.is_set():
                break
            lost = await self._serve(stop)
            if not lost:
                break
            log.warning("agent %s: its lease is gone; registering again", self.host)
        return 0

    async def _wait_previous(self, stop: asyncio.Event) -> None:
        said = False
        while not stop.is_set():
            try:
                found = await self.client.get(keys.AGENTS + self.host)
            except NameServiceError as exc:
                log.info("agent %s: name service not reachable (%s)", self.host, exc)
                await sleep_or(stop, RETRY_S)
                continue
            if found is None:
                return
            if not said:
                log.warning("agent %s: the host is still registered (a previous agent's lease: "
                            "its processes may run until it ends); waiting", self.host)
                said = True
            await sleep_or(stop, RETRY_S)

    async def _serve(self, stop: asyncio.Event) -> bool:
        """One registration: True if its lease was lost, False when stopped."""
        lease = await self._grant(stop)
        if lease is None:
            return False
        self._lease = lease
        mirror = Mirror(self.client, keys.PLACEMENTS)
        fence = asyncio.ensure_future(self._fence(stop))  # until every child is gone
        tasks = [asyncio.ensure_future(mirror.run()),
                 asyncio.ensure_future(self._wake_on(mirror, stop, lease))]
        try:
            registered = await self._register(lease, stop)
            while registered and not stop.is_set() and not lease.lost.is_set():
                if mirror.loaded.is_set() and self._deadline() > time.monotonic():
                    await self._reconcile(mirror)
                await self._report(lease)
                self._wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 1.0)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        lost = lease.lost.is_set() and not stop.is_set()
        try:
            if lost:
                self._kill_all()
                await self._reap()
            else:
                await self._drain_all()
        finally:
            fence.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await fence
        self._reported.clear()
        self._next_start.clear()
        await lease.close(revoke=not lost)
        self._lease = None
        return lost

    async def _wake_on(self, mirror: Mirror, stop: asyncio.Event, lease: LeaseKeeper) -> None:
        """Wake the loop on a change of the placements, a stop or a lost lease."""
        ends = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(lease.lost.wait())]
        try:
            seen = 0
            while not any(end.done() for end in ends):
                change = asyncio.ensure_future(mirror.wait_change(seen))
                await asyncio.wait([change, *ends], return_when=asyncio.FIRST_COMPLETED)
                if change.done():
                    seen = change.result()
                else:
                    change.cancel()
                self._wake.set()
        finally:
            for end in ends:
                end.cancel()

    async def _grant(self, stop: asyncio.Event) -> LeaseKeeper | None:
        while not stop.is_set():
            lease = LeaseKeeper(self.client, self.ttl)
            try:
                return await lease.start()
            except NameServiceError as exc:
                log.info("agent %s: cannot get a lease yet (%s)", self.host, exc)
                await sleep_or(stop, RETRY_S)
        return None

    async def _register(self, lease: LeaseKeeper, stop: asyncio.Event) -> bool:
        value = keys.encode(self.info.to_record())
        while not stop.is_set() and not lease.lost.is_set():
            try:
                await self.client.put(keys.AGENTS + self.host, value, lease=lease.id)
                found = await self.client.get(keys.AGENTS + self.host)
                if found is None or found.lease != lease.id:
                    continue  # gone again at once (or another's): register again
                self._registration = found.create_revision
                log.info("agent %s registered (slots %d, labels %s)", self.host,
                         self.info.slots, self.info.labels)
                self.registered.set()
                return True
            except LeaseNotFound:
                lease.lost.set()
            except NameServiceError as exc:
                log.info("agent %s: registering failed (%s); again", self.host, exc)
                await sleep_or(stop, RETRY_S)
        return False

    # ------------------------------------------------------------------ fencing

    def _deadline(self) -> float:
        lease = self._lease
        return lease.valid_until - self.margin if lease else 0.0

    async def _fence(self, stop: asyncio.Event) -> None:
        """Every tick: give the children the lease's deadline; past it, kill them all."""
        while True:
            deadline = self._deadline()
            if time.monotonic() >= deadline:
                if any(child.alive for child in self.children.values()):
                    self.fenced += 1
                    log.error("agent %s: no renewal of its lease for %.1f s: stopping every "
                              "instance", self.host, self.ttl - self.margin)
                    self._kill_all()
            else:
                for child in self.children.values():
                    child.extend(deadline)
            await asyncio.sleep(TICK_S)

    def _kill_all(self) -> None:
        for child in self.children.values():
            child.kill_now()

    async def _reap(self) -> None:
        await asyncio.gather(*(child.kill() for child in self.children.values()))
        self.children.clear()

    async def _drain_all(self) -> None:
        await asyncio.gather(*(child.stop(self.drain_timeout)
                               for child in self.children.values()))
        self.children.clear()

    # ------------------------------------------------------------------ placements

    def _wanted(self, mirror: Mirror) -> dict[Ident, dict[str, Any]]:
        wanted: dict[Ident, dict[str, Any]] = {}
        for key, kv in mirror.kvs.items():
            parts = keys.split(key, keys.PLACEMENTS, 2)
            record = keys.decode(kv.value) if parts else None
            placement = Placement.from_record(parts[0], parts[1], record) \
                if parts and record else None
            if placement is None:
                continue
            mine = self._registration
            if placement.host == self.host and placement.registration == mine \
                    and not placement.hold:
                wanted[(placement.network, placement.id, placement.gen)] = placement.spec
            previous = placement.previous
            if previous and previous["host"] == self.host \
                    and previous.get("registration", 0) == mine:
                wanted[(placement.network, placement.id, previous["gen"])] = previous["spec"]
        return wanted

    async def _reconcile(self, mirror: Mirror) -> None:
        wanted = self._wanted(mirror)
        for ident, child in list(self.children.items()):
            if ident not in wanted:
                if child.alive and not child.stopping:
                    asyncio.ensure_future(child.stop(self.drain_timeout))
                elif not child.alive:
                    del self.children[ident]
                    self._next_start.pop(ident, None)
        now = time.monotonic()
        for ident in [i for i in self._next_start if i not in wanted]:
            del self._next_start[ident]
        starting = sum(c.alive and c.state == "starting"
                       and time.time() - c.started_at < STARTING_S
                       for c in self.children.values())
        for ident, spec in wanted.items():
            if starting >= self.max_starting:
                break  # the rest on a later turn: a host is not flooded with starts
            known = self.children.get(ident)
            if (known is not None and known.alive) or now < self._next_start.get(ident, 0):
                continue
            if spec.get("kind") in REPLICATED and self._older_alive(ident):
                continue  # a replica's new incarnation waits for the old one to stop
            await self._start(ident, spec, known)
            starting += 1

    def _older_alive(self, ident: Ident) -> bool:
        network, instance, gen = ident
        return any(c.alive for (n, i, g), c in self.children.items()
                   if n == network and i == instance and g != gen)

    async def _start(self, ident: Ident, spec: dict[str, Any], child: Child | None) -> None:
        network, instance, gen = ident
        if child is None:
            try:
                data = self.data_dir / network / instance
                data.mkdir(parents=True, exist_ok=True)
                where = Where(self.host, self.info.address, self.ns, str(data))
                argv = instance_argv(network, spec, gen, where)
            except (OSError, KeyError, TypeError, ValueError, AttributeError) as exc:
                # A spec this agent cannot run (another version wrote it?) or a directory it
                # cannot make: that instance waits, the agent and the others go on.
                if self._next_start.get(ident, 0) <= time.monotonic():
                    log.error("%s/%s gen %d cannot start here: %r", network, instance, gen,
                              exc)
                self._next_start[ident] = time.monotonic() + RESTART_MAX_S
                return
            env = {**self.env, "FABRIC_NETWORK": network, "FABRIC_INSTANCE": instance,
                   "FABRIC_GEN": str(gen), "FABRIC_HOST": self.host}
            child = Child(ident, argv, self.data_dir / "logs", cwd=self.workdir, env=env,
                          on_change=self._wake.set)
            self.children[ident] = child
        else:
            pause = min(RESTART_MAX_S, RESTART_MIN_S * 2 ** min(child.quick_exits, 10))
            self._next_start[ident] = time.monotonic() + pause
            log.warning("%s %s (%s); started again, next pause %.1f s", child.stem,
                        "exited" if child.code == 0 else "failed", child.detail, pause)
        await child.start(self._deadline())

    # ------------------------------------------------------------------ reports

    def _states(self) -> dict[tuple[str, str], Running]:
        states: dict[tuple[str, str], Running] = {}
        for (network, instance, gen), child in self.children.items():
            known = states.get((network, instance))
            if known is not None and known.gen > gen:
                continue
            states[(network, instance)] = Running(
                self.host, network, instance, gen, child.state, child.pid, child.exits,
                child.detail)
        return states

    async def _report(self, lease: LeaseKeeper) -> None:
        states = self._states()
        try:
            for key, running in states.items():
                if self._reported.get(key) != running:
                    await self.client.put(keys.running_key(self.host, *key),
                                          keys.encode(running.to_record()), lease=lease.id)
                    self._reported[key] = running
            for key in [k for k in self._reported if k not in states]:
                await self.client.delete(keys.running_key(self.host, *key))
                del self._reported[key]
        except LeaseNotFound:
            lease.lost.set()
        except NameServiceError as exc:
            log.info("agent %s: reporting failed (%s); again", self.host, exc)

    def status(self) -> dict[str, Any]:
        """What ``fabric status`` shows of the agent."""
        return {"kind": "agent", "host": self.host, "slots": self.info.slots,
                "labels": self.info.labels, "fenced": self.fenced,
                "instances": {f"{n}/{i}": {"gen": g, "state": c.state, "pid": c.pid,
                                           "exits": c.exits}
                              for (n, i, g), c in self.children.items()}}


async def sleep_or(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, or less if ``stop`` is set meanwhile."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
