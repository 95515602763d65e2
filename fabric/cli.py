"""The ``fabric`` command line. Each command group lives in its own module and is added here."""
from __future__ import annotations

import click

from fabric import __version__
from fabric.cli_butterfly import butterfly
from fabric.cli_component import component_group
from fabric.cli_ns import _OneLineErrors, kv_group, ns_group


@click.group(cls=_OneLineErrors)
@click.version_option(__version__, prog_name="fabric")
def main() -> None:
    """fabric: a broker-less messaging fabric on ZeroMQ."""


main.add_command(ns_group)
main.add_command(kv_group)
main.add_command(component_group)
main.add_command(butterfly)


@main.command()
@click.option("--channel", required=True, help="Name of the channel this intermediary serves.")
@click.option("--listen", default="127.0.0.1:0", show_default=True,
              help="HOST:PORT to bind (port 0 picks a free port).")
@click.option("--name", default=None,
              help="Name of this process in the name service [default: intermediary-PID].")
@click.option("--ns", "ns", envvar="FABRIC_NS", metavar="HOST:PORT,...",
              help="Name-service nodes to register with (default: $FABRIC_NS; without "
                   "either, the intermediary runs unregistered).")
def intermediary(channel: str, listen: str, name: str | None, ns: str | None) -> None:
    """Run an intermediary of CHANNEL until SIGTERM.

    Prints ``listening ENDPOINT`` once bound; with a name service, registers the endpoint as
    ``channel/CHANNEL`` and prints ``registered {JSON}``; on SIGTERM deregisters, stops, and
    prints ``stats {JSON counters}``.
    """
    import dataclasses
    import json
    import os

    import zmq

    from fabric.cli_ns import _addresses
    from fabric.intermediary import parse_listen, run_until_signalled

    try:
        endpoint = parse_listen(listen)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    addresses = _addresses(ns) if ns else None
    name = name or f"intermediary-{os.getpid()}"
    registration = None

    def announce(bound: str) -> None:
        nonlocal registration
        click.echo(f"listening {bound}")
        if addresses:
            from fabric.registration import RegistrationThread
            from fabric.registry import channel_name

            def registered(at: float) -> None:
                click.echo("registered " + json.dumps(
                    {"name": name, "channel": channel, "endpoint": bound, "at": at}))

            registration = RegistrationThread(
                addresses, [(channel_name(channel), bound, {"name": name})],
                on_registered=registered).start()

    def before_stop() -> None:
        if registration is not None:
            registration.stop()

    try:
        run_until_signalled(channel, endpoint, announce=announce,
                            report=lambda stats: click.echo(
                                "stats " + json.dumps(dataclasses.asdict(stats))))
    except zmq.ZMQError as exc:
        click.echo(f"fabric intermediary: cannot listen on {listen}: {exc}", err=True)
        raise SystemExit(1) from None
    finally:
        before_stop()
