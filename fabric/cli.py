"""The ``fabric`` command line. Each command group lives in its own module and is added here."""
from __future__ import annotations

import click

from fabric import __version__
from fabric.cli_ns import kv_group, lease_group, ns_group
from fabric.drain import DEFAULT_TIMEOUT as DEFAULT_DRAIN_TIMEOUT

EXIT_DRAIN_INCOMPLETE = 3
"""Exit code of a process whose drain timed out (it reported what it could not flush)."""


@click.group()
@click.version_option(__version__, prog_name="fabric")
def main() -> None:
    """fabric: a broker-less messaging fabric on ZeroMQ."""


main.add_command(ns_group)
main.add_command(kv_group)
main.add_command(lease_group)


@main.command()
@click.option("--channel", required=True, help="Name of the channel this intermediary serves.")
@click.option("--listen", default="127.0.0.1:0", show_default=True,
              help="HOST:PORT to bind (port 0 picks a free port).")
@click.option("--control", default="127.0.0.1:0", show_default=True,
              help="HOST:PORT of the control socket (status, drain).")
@click.option("--drain-timeout", default=DEFAULT_DRAIN_TIMEOUT, show_default=True,
              type=click.FloatRange(min=0, min_open=True),
              help="Seconds a drain may take before giving up and reporting what is left.")
@click.option("--name", default="", help="Process name shown by status (default: "
              "intermediary-PID).")
def intermediary(channel: str, listen: str, control: str, drain_timeout: float,
                 name: str) -> None:
    """Run an intermediary of CHANNEL until SIGTERM, then drain it.

    Prints ``listening ENDPOINT`` once bound, then ``control ENDPOINT``. SIGTERM (or a drain
    request on the control socket) drains it: its producers send it nothing new, it delivers
    what it holds and waits for the acks, then prints ``drained {JSON report}`` and
    ``stats {JSON counters}`` and exits 0; if the drain timed out it says what it left and
    exits 3. A second SIGTERM stops it at once.
    """
    import dataclasses
    import json
    import logging
    import os

    import zmq

    from fabric.intermediary import parse_listen, run_until_signalled

    try:
        endpoint = parse_listen(listen)
        control_endpoint = parse_listen(control)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        report = run_until_signalled(
            channel, endpoint, control=control_endpoint, drain_timeout=drain_timeout,
            name=name or f"intermediary-{os.getpid()}",
            announce=lambda bound: click.echo(f"listening {bound}"),
            announce_control=lambda bound: click.echo(f"control {bound}"),
            report=lambda stats: click.echo("stats " + json.dumps(dataclasses.asdict(stats))))
    except zmq.ZMQError as exc:
        where = control if f"'{control_endpoint}'" in str(exc) else listen
        click.echo(f"fabric intermediary: cannot listen on {where}: {exc}", err=True)
        raise SystemExit(1) from None
    if report is not None:
        click.echo("drained " + json.dumps(report.to_dict()))
    if report is None or not report.complete:
        raise SystemExit(EXIT_DRAIN_INCOMPLETE)
