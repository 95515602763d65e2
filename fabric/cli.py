"""The ``fabric`` command line. Each command group lives in its own module and is added here."""
from __future__ import annotations

import click

from fabric import __version__
from fabric.cli_ns import kv_group, lease_group, ns_group


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
def intermediary(channel: str, listen: str) -> None:
    """Run an intermediary of CHANNEL until SIGTERM.

    Prints ``listening ENDPOINT`` once bound and, on SIGTERM, ``stats {JSON counters}``.
    """
    import dataclasses
    import json

    import zmq

    from fabric.intermediary import parse_listen, run_until_signalled

    try:
        endpoint = parse_listen(listen)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        run_until_signalled(channel, endpoint,
                            announce=lambda bound: click.echo(f"listening {bound}"),
                            report=lambda stats: click.echo(
                                "stats " + json.dumps(dataclasses.asdict(stats))))
    except zmq.ZMQError as exc:
        click.echo(f"fabric intermediary: cannot listen on {listen}: {exc}", err=True)
        raise SystemExit(1) from None
