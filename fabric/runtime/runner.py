"""Run a process built on ports until SIGTERM, then drain it: the component runtime's base.

:func:`run_ports_until_signalled` serves the control socket (``status``, ``drain``), waits for
SIGTERM, SIGINT, a ``drain`` request or an optional ``stop`` event, then drains every port —
producers first (everything they sent is acknowledged), then consumers (everything they
received is handled) — and returns the reports. A second signal while draining gives up at once.
With a metrics address (or ``FABRIC_METRICS``) it serves the ports' Prometheus metrics meanwhile
(:func:`serve_port_metrics`).
"""
from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from fabric.drain import DEFAULT_TIMEOUT, DrainReport
from fabric.ports.input import InputPort
from fabric.ports.output import OutputPort
from nameservice.control import DEFAULT_ENDPOINT, ControlServer
from nameservice.metrics import MetricsServer, metrics_address, start_metrics
from nameservice.security.metrics import SecurityCollector

if TYPE_CHECKING:
    from fabric.ports.metrics import PortCollector

log = logging.getLogger(__name__)

Port = OutputPort | InputPort


def serve_port_metrics(metrics: str | None, ports: Sequence[Port] = ()
                       ) -> tuple[MetricsServer, PortCollector] | None:
    """Serve the Prometheus metrics of ``ports`` (and of those added to the collector later)
    on ``metrics`` (``HOST:PORT``; None: ``FABRIC_METRICS``, if set): the server and the
    collector; None if neither says where. ConfigError if the address is bad or cannot be
    bound."""
    address = metrics_address(metrics)
    if address is None:
        return None
    from fabric.ports.metrics import PortCollector

    collector = PortCollector(ports)
    return start_metrics(address, collector, SecurityCollector()), collector


def ports_status(name: str, ports: Sequence[Port], draining: bool) -> dict:
    """The control socket's ``status`` for a process made of ``ports``."""
    each = [port.status() for port in ports]
    endpoints = sorted({e for item in each for e in item["endpoints"]})
    channels = sorted({item["channel"] for item in each})
    return {
        "kind": "component", "name": name,
        "channel": channels[0] if len(channels) == 1 else channels,
        "endpoints": endpoints, "draining": draining,
        "in_flight": {"unacked": sum(i.get("unacked", 0) for i in each),
                      "pending_batches": sum(i.get("pending_batches", 0) for i in each)},
        "ports": each,
    }


async def drain_ports(ports: Sequence[Port], timeout: float = DEFAULT_TIMEOUT) -> list[DrainReport]:
    """Drain producers first, then consumers, all within ``timeout`` seconds in total."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    producers = [port for port in ports if isinstance(port, OutputPort)]
    consumers = [port for port in ports if isinstance(port, InputPort)]
    reports = list(await asyncio.gather(
        *(port.drain(max(0.001, deadline - loop.time())) for port in producers)))
    reports += await asyncio.gather(
        *(port.drain(max(0.001, deadline - loop.time())) for port in consumers))
    return reports


async def run_ports_until_signalled(
        ports: Sequence[Port], *, name: str = "", control: str = DEFAULT_ENDPOINT,
        drain_timeout: float = DEFAULT_TIMEOUT, stop: asyncio.Event | None = None,
        announce_control: Callable[[str], None] | None = None,
        metrics: str | None = None) -> list[DrainReport]:
    """Serve a control socket for ``ports`` (already started) until SIGTERM, SIGINT, a
    ``drain`` request or ``stop`` is set; then drain them and return the drain reports.

    ``announce_control`` gets the control endpoint once bound. ``drain_timeout`` bounds the
    whole drain (a drain request may ask for another bound). A second signal closes the
    ports at once. ``metrics``: ``HOST:PORT`` where the ports' Prometheus metrics are served
    at ``/metrics`` until the drain is done (port 0: any; the bound address is logged); None:
    ``FABRIC_METRICS``, if set.
    """
    loop = asyncio.get_running_loop()
    served = serve_port_metrics(metrics, ports)
    done: list[DrainReport] = []

    async def drain(timeout: float | None) -> dict:
        done.extend(await drain_ports(ports, drain_timeout if timeout is None else timeout))
        return {"kind": "component", "name": name, "complete": all(r.complete for r in done),
                "reports": [r.to_dict() for r in done]}

    server = ControlServer(lambda: ports_status(name, ports, server.drain_requested.is_set()),
                           drain, control)
    server.start()
    signalled: list[int] = []

    def on_signal(sig: int) -> None:
        signalled.append(sig)
        if len(signalled) == 1:
            server.drain_task()
        else:
            log.warning("second signal: closing without draining")
            for port in ports:
                asyncio.ensure_future(port.close())

    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, on_signal, sig)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    if announce_control is not None:  # after the signal handlers: SIGTERM now drains
        announce_control(server.endpoint)
    waits = [asyncio.ensure_future(server.drain_requested.wait())]
    if stop is not None:
        waits.append(asyncio.ensure_future(stop.wait()))
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        await server.drain_task()
        await server.answered()  # the client that asked for the drain gets its answer
    finally:
        for task in waits:
            task.cancel()
        for sig in installed:
            loop.remove_signal_handler(sig)
        server.close()
        if served is not None:
            served[0].close()
    return done
