"""Live re-resolve: keep a port connected to exactly the intermediaries a name lists.

A port (``OutputPort`` or ``InputPort``) follows a stream of endpoint lists — each item the
full current list of a channel's intermediaries, as the name service's ``watch_name`` yields
it. For every item, :func:`endpoint_changes` (pure) computes which endpoints to add and which to
remove, and :class:`Resolver` applies them to the port while it runs: an intermediary that
registers somewhere new is in use as soon as the watch reports it, with no restart; one whose
registration is gone (deregistered, or its lease expired) is let go.

An empty list never removes the last endpoints: with no intermediary registered at all (a
name-service hiccup, every intermediary restarting), keeping the old connections costs nothing
and keeps the port ready for the first one that comes back at the same place.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterable, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from fabric.errors import PortTimeout

log = logging.getLogger(__name__)

RETRY_S = 0.5


class EndpointSet(Protocol):
    """What a resolver drives: the endpoint set of a port."""

    @property
    def endpoints(self) -> list[str]:
        """The endpoints in use."""

    def add_endpoint(self, endpoint: str) -> None:
        """Start using an endpoint."""

    def remove_endpoint(self, endpoint: str) -> None:
        """Stop using an endpoint."""


def normalize(endpoint: str) -> str:
    """``HOST:PORT`` or ``tcp://HOST:PORT`` -> ``tcp://HOST:PORT`` (the ports' spelling)."""
    return endpoint if "://" in endpoint else "tcp://" + endpoint


def endpoint_changes(current: Iterable[str], wanted: Iterable[str]) -> tuple[list[str], list[str]]:
    """``(to_add, to_remove)`` taking ``current`` to ``wanted``, both sorted.

    An empty ``wanted`` removes nothing (see the module docstring)."""
    have = {normalize(e) for e in current}
    want = {normalize(e) for e in wanted}
    if not want:
        return [], []
    return sorted(want - have), sorted(have - want)


@dataclass(frozen=True, slots=True)
class Change:
    """One applied change: what was added and removed, and when (``time.time()``)."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    at: float


Updates = AsyncIterable[Iterable[str]]


class Resolver:
    """Applies a stream of endpoint lists to ``port`` until closed.

    ``updates`` is the stream, or a function making a fresh one: then a stream that fails
    (the whole name service unreachable) is made again after ``RETRY_S`` and followed on; the
    port keeps its endpoints meanwhile. ``on_change(change)`` is called after each change that
    added or removed something (for logs, status and the re-resolve measurement).
    :meth:`first` waits for the first list, so a port can start with its intermediaries known.
    """

    def __init__(self, port: EndpointSet, updates: Updates | Callable[[], Updates], *,
                 on_change: Callable[[Change], None] | None = None) -> None:
        self.port = port
        self._updates = updates
        self._on_change = on_change
        self._first = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.changes = 0

    def start(self) -> "Resolver":
        """Start following the updates in a task."""
        self._task = asyncio.ensure_future(self._run())
        return self

    async def first(self, timeout: float | None = None) -> None:
        """Wait until the first list was applied; :class:`PortTimeout` (a ``TimeoutError``)
        after ``timeout`` seconds."""
        try:
            await asyncio.wait_for(self._first.wait(), timeout)
        except asyncio.TimeoutError:
            raise PortTimeout(f"no endpoint list from the name service within "
                              f"{timeout:g} s") from None

    def apply(self, wanted: Iterable[str]) -> Change | None:
        """Apply one endpoint list now; the change made, or None if nothing changed."""
        to_add, to_remove = endpoint_changes(self.port.endpoints, wanted)
        for endpoint in to_add:
            self.port.add_endpoint(endpoint)
        for endpoint in to_remove:
            self.port.remove_endpoint(endpoint)
        if not to_add and not to_remove:
            return None
        self.changes += 1
        change = Change(tuple(to_add), tuple(to_remove), time.time())
        log.info("endpoints: +%s -%s", to_add, to_remove)
        if self._on_change is not None:
            self._on_change(change)
        return change

    async def _run(self) -> None:
        if not callable(self._updates):
            await self._follow(self._updates)
            return
        while True:
            try:
                await self._follow(self._updates())
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("endpoint updates failed (%s); retrying in %.1f s", exc, RETRY_S)
                await asyncio.sleep(RETRY_S)

    async def _follow(self, updates: Updates) -> None:
        async for wanted in updates:
            self.apply(wanted)
            self._first.set()

    async def close(self) -> None:
        """Stop following (the port keeps its current endpoints)."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            except Exception:  # the stream's own failure; nothing left to follow
                log.exception("resolver stream failed")
            self._task = None
