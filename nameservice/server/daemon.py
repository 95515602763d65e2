"""Running a node as a process: logging, signals, a one-line error for what users get wrong."""
from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import signal
import sys
from typing import Callable

import zmq

from nameservice.address import parse_address
from nameservice.errors import ConfigError, NameServiceError
from nameservice.metrics import metrics_address, start_metrics
from nameservice.security.metrics import SecurityCollector
from nameservice.server.config import NodeSettings
from nameservice.server.node import Node
from nameservice.server.presence import NodePresence
from nameservice.storage import StorageError

log = logging.getLogger(__name__)


EXIT_INTERRUPTED = 130
"""The exit code after a clean stop asked for with SIGINT (Ctrl-C), as shells expect."""
MMAP_THRESHOLD = 128 << 10
"""Allocations from this size up get pages of their own, given back when freed."""
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number


def return_large_frees() -> bool:
    """Make glibc give large blocks back to the system as soon as they are freed.

    glibc raises its mmap threshold each time a large block is freed (up to 32 MiB), after
    which blocks of that size come from the heap, whose free space it rarely returns: a node
    that stored and deleted many 1 MiB values kept hundreds of MB it no longer used (issue
    13). A fixed threshold turns the dynamic one off. False where there is no glibc.
    """
    name = ctypes.util.find_library("c")
    if not sys.platform.startswith("linux") or name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):
        return False


async def _serve(settings: NodeSettings, announce: Callable[[str], None],
                 metrics: str | None) -> bool:
    """Serve until stopped; True if SIGINT asked for the stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    return_large_frees()
    node = Node(settings)
    served = None
    if metrics is not None:
        from nameservice.server.metrics import NodeCollector

        served = start_metrics(metrics, NodeCollector(node), SecurityCollector())
    # SIGTERM, SIGINT and ``fabric drain NAME`` all start the same clean stop.
    presence = NodePresence(node, stop)
    presence.start()
    signals: list[int] = []

    def on_signal(sig: int) -> None:
        signals.append(sig)
        presence.drain_task()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    # The state recovered at start (keys, sessions, the log) is long-lived: keep the cyclic
    # garbage collector from rescanning it, and let it run less often under load (requests
    # make many short-lived containers but almost no cycles).
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    advertising = None

    def listening(address: str) -> None:
        nonlocal advertising
        announce(f"listening {address}")
        announce(f"control {presence.endpoint}")
        presence.register()
        if settings.advertise:
            advertising = asyncio.ensure_future(_advertise(settings, stop))

    try:
        await node.run(stop, on_listening=listening)
    finally:
        await presence.close()
        if advertising is not None:
            await advertising
        if served is not None:
            served.close()
    return signal.SIGINT in signals


async def _advertise(settings: NodeSettings, stop: asyncio.Event) -> None:
    """Advertise the node with zeroconf until ``stop``; a failure is logged, never fatal.

    Zeroconf's own calls block (probing takes about a second), so they run in a thread: the
    node serves meanwhile.
    """
    from nameservice.discovery import Advertiser

    host, port = parse_address(settings.client_address)
    advertiser = Advertiser(settings.id, host, port, settings.cluster_name,
                            size=len(settings.cluster))
    try:
        await asyncio.to_thread(advertiser.start)
        log.info("advertised with zeroconf as cluster %r", settings.cluster_name)
    except Exception as exc:  # zeroconf and the OS raise many kinds; discovery is optional
        log.warning("could not advertise with zeroconf: %s", exc)
        return
    try:
        await stop.wait()
    finally:
        try:
            await asyncio.to_thread(advertiser.close)
        except Exception as exc:
            log.warning("zeroconf goodbye failed: %s", exc)


def serve(settings: NodeSettings, announce: Callable[[str], None] | None = None,
          metrics: str | None = None) -> int:
    """Run one node until SIGTERM, SIGINT or ``fabric drain NAME``; the process exit code.

    Prints ``listening HOST:PORT`` once the port is bound, then ``control ENDPOINT`` (the
    control socket, registered as ``process/NAME``; see ``presence.py``). ``metrics``:
    ``HOST:PORT`` where ``/metrics`` is served (port 0: any; the bound address is logged);
    None: ``FABRIC_METRICS``, if set. Errors an operator must act on (address in use, a data
    directory that is locked or damaged) print one line on stderr and give exit code 1.
    """
    if not logging.getLogger().handlers:  # the entry points set logging up; a caller may not
        from nameservice import logs

        logs.setup()
    if announce is None:
        def announce(line: str) -> None:
            print(line, flush=True)
    try:
        interrupted = asyncio.run(_serve(settings, announce, metrics_address(metrics)))
    except zmq.ZMQError as exc:
        print(f"fabric ns: cannot listen on {settings.address}: {exc}", file=sys.stderr)
        return 1
    except (StorageError, NameServiceError, ConfigError, OSError) as exc:
        print(f"fabric ns: node {settings.id}: {exc}", file=sys.stderr)
        return 1
    return EXIT_INTERRUPTED if interrupted else 0
