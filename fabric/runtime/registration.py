"""Keeping a blocking process (the intermediary) registered in the name service.

The intermediary's forwarding loop is a blocking poll, not asyncio; its registrations live in a
thread of their own running an event loop with a name-service client. The thread registers each
``(name, endpoint, meta)`` with a lease, retrying until the name service takes it, and
deregisters at once when stopped. Keeping the leases alive, registering again if one is ever
lost (the name service was unreachable for longer than the TTL), and putting an entry back that
someone else deleted or overwrote, is each ``nameservice.names.Registration``'s own job. With
keys, the thread also keeps the process's access rules as the name service has them
(``nameservice.security.follow``).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable

from fabric.runtime.registry import DEFAULT_TTL
from nameservice.security.context import current as security
from nameservice.security.follow import follow_rules

log = logging.getLogger(__name__)

RETRY_S = 0.5


class RegistrationThread:
    """Registers ``entries`` (``(name, endpoint, meta)``) while running.

    ``on_registered(began, done)`` is called (in the thread) once every entry is registered,
    with the ``time.time()`` when registering began and when it was confirmed; :attr:`registered`
    is set then. :meth:`stop` deregisters and waits for the thread.
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
        self._regs: list = []
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

    @property
    def repairs(self) -> int:
        """Entries put back after someone else deleted or overwrote them (all entries)."""
        return sum(reg.repairs for reg in list(self._regs))

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        from nameservice.client import NameServiceClient
        from nameservice.names import Names

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._ready.set()
        async with NameServiceClient(self._addresses) as client:
            regs = self._regs
            registering = asyncio.ensure_future(self._register_all(Names(client), regs))
            rules = asyncio.ensure_future(follow_rules(client, security()))
            try:
                await self._stop.wait()
            finally:
                rules.cancel()
                registering.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await registering
                self.registered.clear()
                for reg in regs:
                    with contextlib.suppress(Exception):
                        await reg.close()

    async def _register_all(self, names, regs: list) -> None:
        """Register every entry into ``regs``, each retried until the name service takes it."""
        began = time.time()
        for name, endpoint, meta in self._entries:
            while True:
                try:
                    regs.append(await names.register(name, endpoint, meta, ttl=self._ttl))
                    break
                except Exception as exc:  # unreachable name service: keep trying
                    log.warning("registering %s failed (%s); retrying", name, exc)
                    await asyncio.sleep(RETRY_S)
        self.registered.set()
        if self._on_registered is not None:
            self._on_registered(began, time.time())
