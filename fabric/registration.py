"""Keeping a blocking process (the intermediary) registered in the name service.

The intermediary's forwarding loop is a blocking poll, not asyncio; its registrations live in a
thread of their own running an event loop with a name-service client. The thread registers each
``(name, endpoint, meta)`` with a lease, keeps the lease alive, registers again if the lease
is ever lost (the name service was unreachable for longer than the TTL), and deregisters at
once when stopped.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from fabric.registry import DEFAULT_TTL

log = logging.getLogger(__name__)

RETRY_S = 0.5


class RegistrationThread:
    """Registers ``entries`` (``(name, endpoint, meta)``) while running.

    ``on_registered(began, done)`` is called (in the thread) each time every entry is
    registered, with the ``time.time()`` when registering began and when it was confirmed. :meth:`stop` deregisters and waits for the thread.
    """

    def __init__(self, addresses: list[str], entries: list[tuple[str, str, dict]], *,
                 ttl: float = DEFAULT_TTL,
                 on_registered: Callable[[float, float], None] | None = None) -> None:
        self._addresses = addresses
        self._entries = entries
        self._ttl = ttl
        self._on_registered = on_registered
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self.registered = threading.Event()
        self._thread = threading.Thread(target=self._run, name="registration", daemon=True)

    def start(self) -> "RegistrationThread":
        """Start the thread (registration proceeds in the background)."""
        self._thread.start()
        self._ready.wait(5)
        return self

    def deregister(self) -> None:
        """Start deregistering every entry, without waiting (safe from any thread)."""
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                self._loop.call_soon_threadsafe(self._stop.set)

    def stop(self, timeout: float = 5.0) -> None:
        """Deregister every entry and end the thread (at most ``timeout`` seconds)."""
        self.deregister()
        self._thread.join(timeout)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        from nameservice.client import NameServiceClient
        from nameservice.names import Names

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._ready.set()
        async with NameServiceClient(self._addresses) as client:
            names = Names(client)
            while not self._stop.is_set():
                try:
                    await self._hold(names)
                except Exception as exc:  # unreachable name service: keep trying
                    log.warning("registration failed (%s); retrying", exc)
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), RETRY_S)

    async def _hold(self, names: Any) -> None:
        regs = []
        try:
            began = time.time()
            for name, endpoint, meta in self._entries:
                regs.append(await names.register(name, endpoint, meta, ttl=self._ttl))
            self.registered.set()
            if self._on_registered is not None:
                self._on_registered(began, time.time())
            waits = [asyncio.ensure_future(self._stop.wait())]
            waits += [asyncio.ensure_future(reg.lost.wait()) for reg in regs]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
            if not self._stop.is_set():
                log.warning("registration lease lost; registering again")
        finally:
            self.registered.clear()
            for reg in regs:
                with contextlib.suppress(Exception):
                    await reg.close()
