"""``fabric intermediary --channel NAME``: run an intermediary as a process of its own."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import click

from fabric.cli.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    FabricCommand,
    fail,
    metrics_option,
)

DEFAULT_DRAIN_TIMEOUT = 5.0  # fabric.drain.DEFAULT_TIMEOUT (a test checks), without importing it


@click.command("intermediary", cls=FabricCommand, ns=True, events=True)
@click.option("--channel", required=True, help="Name of the channel this intermediary serves.")
@click.option("--listen", default="127.0.0.1:0", show_default=True,
              help="HOST:PORT to bind (port 0 picks a free port).")
@click.option("--control", default="127.0.0.1:0", show_default=True,
              help="HOST:PORT of the control socket (status, drain).")
@click.option("--drain-timeout", default=DEFAULT_DRAIN_TIMEOUT, show_default=True,
              type=click.FloatRange(min=0, min_open=True), metavar="S",
              help="Seconds a drain may take before giving up and reporting what is left.")
@click.option("--name", default=None,
              help="Name of this process in the name service and in its status "
                   "[default: intermediary-PID].")
@metrics_option
def intermediary(channel: str, listen: str, control: str, drain_timeout: float,
                 name: str | None, metrics: str | None, ns: str | None, as_json: bool) -> None:
    """Run an intermediary of CHANNEL until SIGTERM or Ctrl-C, then drain it.

    Its events, logged and with --events written on stdout as JSON lines: ``listening``
    (its endpoint) once bound, then ``control`` (its control socket). With a name service
    (--ns, FABRIC_NS; without one it runs unregistered) it registers its endpoint as
    ``channel/CHANNEL`` and its control socket as ``process/NAME``: ``registered``. SIGTERM,
    Ctrl-C or ``fabric drain NAME`` drain it: it deregisters, its producers send it nothing
    new, it delivers what it holds and waits for the acks: ``drained`` (the report) and
    ``stats`` (its counters); exit 0 (130 after Ctrl-C). If the drain timed out it says what
    it left and exits 1. A second signal stops it at once.
    """
    import dataclasses
    import logging
    import os

    import zmq

    from fabric.endpoints import parse_listen
    from fabric.intermediary.process import run_until_signalled
    from nameservice import logs
    from nameservice.address import parse_addresses
    from nameservice.errors import ConfigError
    from nameservice.metrics import check_metrics_address

    log = logging.getLogger(__name__)
    try:
        endpoint = parse_listen(listen)
        control_endpoint = parse_listen(control)
        addresses = parse_addresses(ns) if ns else None
        metrics = check_metrics_address(metrics)
    except (ValueError, ConfigError) as exc:
        fail(str(exc), EXIT_USAGE)
    name = name or f"intermediary-{os.getpid()}"
    bound: dict[str, str] = {}
    registration = None

    def announce(data: str) -> None:
        bound["data"] = data
        logs.event(log, "listening", endpoint=data)

    def announce_control(control_bound: str) -> None:
        nonlocal registration
        logs.event(log, "control", endpoint=control_bound)
        if not addresses:
            return
        from fabric.runtime.registration import RegistrationThread
        from fabric.runtime.registry import channel_name, process_name

        def registered(began: float, at: float) -> None:
            logs.event(log, "registered", name=name, channel=channel, endpoint=bound["data"],
                       began=began, at=at)

        registration = RegistrationThread(addresses, [
            (channel_name(channel), bound["data"], {"name": name}),
            (process_name(name), control_bound, {"kind": "intermediary", "channel": channel,
                                                 "endpoint": bound["data"]}),
        ], on_registered=registered).start()

    def deregister() -> None:
        if registration is not None:
            registration.deregister()

    with signals_received() as signals:
        try:
            report = run_until_signalled(
                channel, endpoint, control=control_endpoint, drain_timeout=drain_timeout,
                name=name, announce=announce, announce_control=announce_control,
                on_drain=deregister, metrics=metrics or "",
                report=lambda stats: logs.event(log, "stats", **dataclasses.asdict(stats)))
        except zmq.ZMQError as exc:
            where = control if f"'{control_endpoint}'" in str(exc) else listen
            fail(f"cannot listen on {where}: {exc}", EXIT_FAILED)
        except ConfigError as exc:  # the metrics address cannot be served
            fail(f"--metrics: {exc}", EXIT_FAILED)
        finally:
            if registration is not None:
                registration.stop()
    if report is not None:
        logs.event(log, "drained", **report.to_dict())
    if report is None or not report.complete:
        raise SystemExit(EXIT_FAILED)
    import signal

    raise SystemExit(EXIT_INTERRUPTED if signal.SIGINT in signals else EXIT_OK)


@contextlib.contextmanager
def signals_received() -> Iterator[list[int]]:
    """The numbers of the signals this process received inside the block, whoever handled
    them: the interpreter writes each one to its wakeup fd, made a pipe here. (How an exit
    code can tell Ctrl-C from SIGTERM when the library that handles both treats them alike.)
    """
    import os
    import signal

    read, write = os.pipe()
    os.set_blocking(read, False)
    os.set_blocking(write, False)
    seen: list[int] = []
    previous = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
    try:
        yield seen
    finally:
        signal.set_wakeup_fd(previous)
        with contextlib.suppress(BlockingIOError):
            seen.extend(os.read(read, 1024))
        os.close(read)
        os.close(write)
