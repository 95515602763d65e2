"""The peers of a component in a deployed network: the start barrier, and lapses.

A network deployed with ``fabric deploy`` has its members' process names under
``cluster/members/NET`` (the manager writes it). An instance the agent started knows its
network (``FABRIC_NETWORK``). ``Peers`` follows that list and the registrations under
``names/process/NET.``: ``ready`` is set once every member is registered (the start barrier:
``ComponentContext.output`` waits for it, so nothing is emitted before the whole network is
up), and a member whose registration goes away (its lease expired: it died or was cut off;
or it stopped) is reported to the listeners, and comes back the same way.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import msgpack

from fabric.errors import FabricError
from nameservice.client.mirror import Mirror

__all__ = ["MEMBERS", "Peers", "StartBarrierTimeout", "members_key"]

log = logging.getLogger(__name__)
MEMBERS = "cluster/members/"
PROCESSES = "names/process/"
DEFAULT_BARRIER_S = 60.0


def members_key(network: str) -> str:
    """``cluster/members/NET``: the process names of network NET (a msgpack list)."""
    return MEMBERS + network


class StartBarrierTimeout(FabricError):
    """Members of the network did not register in time; the message names them."""


class Peers:
    """The registration state of a network's members, followed from the name service."""

    def __init__(self, client: Any, network: str) -> None:
        self.network = network
        self.members: set[str] = set()
        self.registered: set[str] = set()
        self.ready = asyncio.Event()
        self.listeners: list[Callable[[str, bool], None]] = []
        """Called with (name, registered) when a member's registration comes or goes."""
        self._members = Mirror(client, members_key(network))
        self._names = Mirror(client, f"{PROCESSES}{network}.")
        self._task: asyncio.Task | None = None

    def start(self) -> Peers:
        """Start following (``close`` stops)."""
        self._task = asyncio.ensure_future(self._run())
        return self

    async def close(self) -> None:
        """Stop following."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def missing(self) -> list[str]:
        """Members not registered now."""
        return sorted(self.members - self.registered)

    async def wait_ready(self, timeout: float = DEFAULT_BARRIER_S) -> None:
        """The start barrier: return once every member is registered;
        :class:`StartBarrierTimeout` naming the missing ones after ``timeout`` seconds."""
        try:
            await asyncio.wait_for(self.ready.wait(), timeout)
        except asyncio.TimeoutError:
            missing = self.missing() if self.members else ["(the network's member list)"]
            raise StartBarrierTimeout(
                f"start barrier of network {self.network}: after {timeout:g} s these have "
                f"not registered: {', '.join(missing[:20])}"
                f"{f' and {len(missing) - 20} more' if len(missing) > 20 else ''}") from None

    async def _run(self) -> None:
        tasks = [asyncio.ensure_future(m.run()) for m in (self._members, self._names)]
        try:
            seen = [0, 0]
            while True:
                waits = [asyncio.ensure_future(m.wait_change(s))
                         for m, s in zip((self._members, self._names), seen)]
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                for i, wait in enumerate(waits):
                    if wait.done():
                        seen[i] = wait.result()
                    else:
                        wait.cancel()
                if self._members.loaded.is_set() and self._names.loaded.is_set():
                    self._update()
        finally:
            for task in tasks:
                task.cancel()

    def _update(self) -> None:
        found = self._members.kvs.get(members_key(self.network))
        members: set[str] = set()
        if found is not None:
            try:
                listed = msgpack.unpackb(found.value, raw=False)
                members = {m for m in listed if type(m) is str}
            except (ValueError, TypeError, msgpack.UnpackException):
                log.warning("%s does not decode: no member list", members_key(self.network))
        registered = {key[len(PROCESSES):].split("/", 1)[0] for key in self._names.kvs}
        for name in sorted((self.registered - registered) & members):
            self._tell(name, False)
        for name in sorted((registered - self.registered) & self.members):
            self._tell(name, True)
        self.members, self.registered = members, registered
        if members and members <= registered:
            self.ready.set()

    def _tell(self, name: str, present: bool) -> None:
        for listener in list(self.listeners):
            try:
                listener(name, present)
            except Exception:  # a listener's bug must not stop the others
                log.exception("a peer listener failed")
