"""The ``fabric`` command line. Each command group lives in its own module and is added here."""
from __future__ import annotations

import click

from fabric import __version__
from fabric.cli.butterfly import butterfly
from fabric.cli.component import component_group
from fabric.cli.ns import _OneLineErrors, kv_group, lease_group, ns_group
from fabric.cli.ops import drain, status
from fabric.drain import DEFAULT_TIMEOUT as DEFAULT_DRAIN_TIMEOUT

EXIT_DRAIN_INCOMPLETE = 1
"""Exit code of a process whose drain timed out (it reported what it could not flush)."""


@click.group(cls=_OneLineErrors)
@click.version_option(__version__, prog_name="fabric")
def main() -> None:
    """fabric: a broker-less messaging fabric on ZeroMQ."""


main.add_command(ns_group)
main.add_command(kv_group)
main.add_command(lease_group)
main.add_command(component_group)
main.add_command(butterfly)
main.add_command(drain)
main.add_command(status)


@main.command()
@click.option("--channel", required=True, help="Name of the channel this intermediary serves.")
@click.option("--listen", default="127.0.0.1:0", show_default=True,
              help="HOST:PORT to bind (port 0 picks a free port).")
@click.option("--control", default="127.0.0.1:0", show_default=True,
              help="HOST:PORT of the control socket (status, drain).")
@click.option("--drain-timeout", default=DEFAULT_DRAIN_TIMEOUT, show_default=True,
              type=click.FloatRange(min=0, min_open=True),
              help="Seconds a drain may take before giving up and reporting what is left.")
@click.option("--name", default=None,
              help="Name of this process in the name service and in its status "
                   "[default: intermediary-PID].")
@click.option("--ns", "ns", envvar="FABRIC_NS", metavar="HOST:PORT,...",
              help="Name-service nodes to register with (default: $FABRIC_NS; without "
                   "either, the intermediary runs unregistered).")
def intermediary(channel: str, listen: str, control: str, drain_timeout: float,
                 name: str | None, ns: str | None) -> None:
    """Run an intermediary of CHANNEL until SIGTERM, then drain it.

    Prints ``listening ENDPOINT`` once bound, then ``control ENDPOINT``. With a name service
    it registers its endpoint as ``channel/CHANNEL`` and its control socket as
    ``process/NAME``, and prints ``registered {JSON}``. SIGTERM (or ``fabric drain NAME``)
    drains it: it deregisters, its producers send it nothing new, it delivers what it holds and
    waits for the acks, then prints ``drained {JSON report}`` and ``stats {JSON counters}`` and
    exits 0; if the drain timed out it says what it left and exits 1. A second SIGTERM stops it
    at once.
    """
    import dataclasses
    import json
    import logging
    import os

    import zmq

    from fabric.cli.component import ns_addresses
    from fabric.endpoints import parse_listen
    from fabric.intermediary.process import run_until_signalled

    try:
        endpoint = parse_listen(listen)
        control_endpoint = parse_listen(control)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    addresses = ns_addresses(ns) if ns else None
    name = name or f"intermediary-{os.getpid()}"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    bound: dict[str, str] = {}
    registration = None

    def announce(data: str) -> None:
        bound["data"] = data
        click.echo(f"listening {data}")

    def announce_control(control_bound: str) -> None:
        nonlocal registration
        click.echo(f"control {control_bound}")
        if not addresses:
            return
        from fabric.runtime.registration import RegistrationThread
        from fabric.runtime.registry import channel_name, process_name

        def registered(began: float, at: float) -> None:
            click.echo("registered " + json.dumps(
                {"name": name, "channel": channel, "endpoint": bound["data"], "began": began,
                 "at": at}))

        registration = RegistrationThread(addresses, [
            (channel_name(channel), bound["data"], {"name": name}),
            (process_name(name), control_bound, {"kind": "intermediary", "channel": channel,
                                                 "endpoint": bound["data"]}),
        ], on_registered=registered).start()

    def deregister() -> None:
        if registration is not None:
            registration.deregister()

    try:
        report = run_until_signalled(
            channel, endpoint, control=control_endpoint, drain_timeout=drain_timeout,
            name=name, announce=announce, announce_control=announce_control,
            on_drain=deregister,
            report=lambda stats: click.echo("stats " + json.dumps(dataclasses.asdict(stats))))
    except zmq.ZMQError as exc:
        where = control if f"'{control_endpoint}'" in str(exc) else listen
        click.echo(f"fabric intermediary: cannot listen on {where}: {exc}", err=True)
        raise SystemExit(1) from None
    finally:
        if registration is not None:
            registration.stop()
    if report is not None:
        click.echo("drained " + json.dumps(report.to_dict()))
    if report is None or not report.complete:
        raise SystemExit(EXIT_DRAIN_INCOMPLETE)
