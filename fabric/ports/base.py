"""What an OutputPort and an InputPort share: the channel, the links to its intermediaries, the
life cycle (start, close, drain on leaving ``async with``) and the endpoint set a resolver drives.

A port that closes says GOODBYE on every live connection first, so that its intermediaries
forget it at once instead of declaring it dead a timeout later (an input port only when it
leaves nothing unhandled, see :meth:`Port._goodbye`).

Leaving ``async with port:`` normally drains the port — it waits, at most ``drain_timeout``
seconds, until everything it sent is acknowledged (an output) or everything it received is
handled and acknowledged (an input) — and keeps the :class:`~fabric.drain.DrainReport` in
``drain_report``, which lists what was left if the timeout passed. Leaving with an exception
closes the port at once, as :meth:`Port.close` does: what is unacknowledged is abandoned.
"""
from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

from fabric import protocol as p
from fabric.drain import DEFAULT_TIMEOUT, DrainReport
from fabric.ports.links import LinkSet

log = logging.getLogger(__name__)

P = TypeVar("P", bound="Port")


class Port(ABC):
    """The shared part of a port; :class:`~fabric.ports.output.OutputPort` and
    :class:`~fabric.ports.input.InputPort` add sending, receiving and their own drain."""

    kind = "port"

    def __init__(self, channel: str, endpoints: list[str] | tuple[str, ...], links: LinkSet,
                 drain_timeout: float = DEFAULT_TIMEOUT) -> None:
        self.channel = channel
        self.drain_timeout = drain_timeout
        self.drain_report: DrainReport | None = None
        self._links = links
        self._initial = list(endpoints)
        self._closed = False
        self._draining = False
        self._tasks: list[asyncio.Task[None]] = []

    # -- life cycle ---------------------------------------------------------------------------

    def _background(self) -> list[Coroutine[Any, Any, None]]:
        """The loops the port runs while open (started by :meth:`start`)."""
        return []

    async def start(self: P) -> P:
        """Connect to the intermediaries and start the port's loops."""
        for endpoint in self._initial:
            self._links.add(endpoint)
        self._tasks = [asyncio.ensure_future(loop) for loop in self._background()]
        return self

    async def __aenter__(self: P) -> P:
        return await self.start()

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        """Drain (bounded by ``drain_timeout``) when the block ended normally; close at once,
        abandoning what is unacknowledged, when it raised."""
        if exc_type is None and not self._closed:
            self.drain_report = await self.drain(self.drain_timeout)
        else:
            await self.close()

    @abstractmethod
    async def drain(self, timeout: float = DEFAULT_TIMEOUT) -> DrainReport:
        """Leave the channel cleanly within ``timeout`` seconds, then close."""

    async def close(self) -> None:
        """Close the sockets at once and stop the port's loops; nothing is waited for."""
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        self._links.close(self._goodbye())

    def _goodbye(self) -> bytes | None:
        """The frame to send on every live link as the port closes (None: leave silently, to
        be declared dead by the intermediaries after their timeout)."""
        return p.goodbye_frame()

    @property
    def closed(self) -> bool:
        """True once the port is closed (by :meth:`close` or at the end of a drain)."""
        return self._closed

    # -- endpoints ----------------------------------------------------------------------------

    def add_endpoint(self, endpoint: str) -> None:
        """Start using one more intermediary."""
        self._links.add(endpoint)

    @abstractmethod
    def remove_endpoint(self, endpoint: str) -> None:
        """Stop using an intermediary (each port says how it lets go of what is in flight)."""

    @property
    def endpoints(self) -> list[str]:
        """The intermediaries in use."""
        return self._links.endpoints

    @property
    def connected(self) -> list[str]:
        """The intermediaries whose connection is up (handshake done, HELLO sent)."""
        return [link.endpoint for link in self._links.up()]
