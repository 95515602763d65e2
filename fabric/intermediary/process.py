"""Run an intermediary as a process of its own: signals, control socket, drain on SIGTERM."""
from __future__ import annotations

import zmq

from fabric.drain import DEFAULT_TIMEOUT, DrainReport
from fabric.intermediary.core import DRAIN_LINGER_MS, Intermediary
from nameservice.control import ControlSocket
from nameservice.metrics import metrics_address, start_metrics
from nameservice.security.metrics import SecurityCollector


def run_until_signalled(channel: str, endpoint: str, *, announce=print, report=None,
                        control: str | None = None, announce_control=None,
                        drain_timeout: float = DEFAULT_TIMEOUT,
                        name: str = "", on_drain=None,
                        metrics: str | None = None) -> DrainReport | None:
    """Run an intermediary in this process until SIGTERM or SIGINT, then drain it.

    ``announce`` gets the bound endpoint once bound; with ``control`` (an endpoint) a control
    socket is served too and ``announce_control`` gets its endpoint. SIGTERM, SIGINT or a
    ``drain`` control request start the drain (at most ``drain_timeout`` seconds); a second
    signal stops at once. ``report`` gets the final :class:`IntermediaryStats`. Returns the drain
    report (None if stopped at once). ``on_drain()`` is called (in the serving thread) when the
    drain starts. ``metrics``: ``HOST:PORT`` where Prometheus metrics are served at ``/metrics``
    (port 0: any; the bound address is logged); None: ``FABRIC_METRICS``, if set. Raises
    ``zmq.ZMQError`` if an endpoint cannot be bound, ``ConfigError`` if the metrics address is
    bad or cannot be bound."""
    import signal

    ctx = zmq.Context()  # terminated at the end: the last acks leave before the process exits
    node = Intermediary(channel, endpoint, ctx=ctx, name=name, drain_timeout=drain_timeout)
    node.on_drain = on_drain
    served = None
    address = metrics_address(metrics)
    if address is not None:  # first: a bad address fails before anything is bound
        from fabric.intermediary.metrics import IntermediaryCollector

        served = start_metrics(address, IntermediaryCollector(node), SecurityCollector())
    announce(node.bind())
    if control is not None:
        node.control = ControlSocket(control, ctx)
        if announce_control is not None:
            announce_control(node.control.endpoint)

    def on_signal(*_):
        if node.draining:
            node.stop()
        else:
            node.request_drain()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    try:
        node.serve()
    finally:
        if node.control is not None:
            node.control.close(linger=DRAIN_LINGER_MS)
        if served is not None:
            served.close()
        ctx.term()
    if report is not None:
        report(node.stats)
    return node.drain_report
