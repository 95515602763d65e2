"""Serving a long-lived fabric process that is not a component function (a queue replica, a
task worker, an agent): its control socket, its registration, its signals."""
from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from nameservice.logs import event

log = logging.getLogger(__name__)

__all__ = ["serve_process"]


async def serve_process(names: Any, name: str, kind: str,
                        status: Callable[[], dict[str, Any]],
                        run: Callable[[asyncio.Event], Awaitable[None]],
                        started: Callable[[], Awaitable[None]], drain_timeout: float,
                        control: str = "127.0.0.1:0") -> int:
    """Run ``run(stop)`` as a process called ``name``: a control socket (``status``,
    ``drain``) registered as ``process/<name>`` once ``started()`` returns, SIGTERM and SIGINT
    setting ``stop``; the events ``control`` and ``stopped``; the exit code (1 if ``run``
    failed)."""
    from fabric.runtime.registry import process_name
    from nameservice.control import ControlServer

    stop = asyncio.Event()
    running = asyncio.ensure_future(run(stop))

    async def drain(timeout: float | None) -> dict[str, Any]:
        stop.set()
        await asyncio.gather(running, return_exceptions=True)
        failed = running.exception() if running.done() and not running.cancelled() else None
        return {"kind": kind, "name": name, "complete": failed is None,
                "failed": [str(failed)] if failed else [], "left": []}

    server = ControlServer(lambda: {"name": name, "draining": stop.is_set(), **status()},
                           drain, control).start()
    event(log, "control", endpoint=server.endpoint)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    registration = None
    try:
        starting = asyncio.ensure_future(started())
        await asyncio.wait({starting, running}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            registration = await names.register(process_name(name), server.endpoint,
                                                {"kind": kind})
        else:
            starting.cancel()
        await asyncio.gather(running, return_exceptions=True)
    finally:
        stop.set()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        if registration is not None:
            try:
                await registration.close()
            except Exception as exc:  # the lease expires by itself
                log.warning("could not deregister %s: %s", name, exc)
        await server.answered()
        server.close()
    failed = running.exception() if not running.cancelled() else None
    if failed is not None:
        log.error("%s failed: %s", kind, failed, exc_info=failed)
    event(log, "stopped", failed=int(failed is not None))
    return 1 if failed is not None else 0
