"""``fabric component run MODULE:FUNC``: run a component function as a fabric process.

Exit codes: 0 the function returned (or was stopped by SIGTERM or ``fabric drain``) and every
port drained; 130 the same after Ctrl-C; 1 it failed, or something could not be flushed within
the drain timeout, or the name service is unreachable; 2 usage error (a bad MODULE:FUNC, a bad
--param).
"""
from __future__ import annotations

import sys

import click

from fabric.cli.common import EXIT_FAILED, EXIT_USAGE, FabricCommand, fail, metrics_option


@click.group("component")
def component_group() -> None:
    """Run fabric components."""


def _params(pairs: tuple[str, ...]) -> dict[str, str]:
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"expected --param KEY=VALUE, got {pair!r}", EXIT_USAGE)
        params[key] = value
    return params


@component_group.command("run", cls=FabricCommand, ns=True, events=True)
@click.argument("target", metavar="MODULE:FUNC")
@click.option("--name", default=None, help="Name of this process (default: FUNC-PID).")
@click.option("--param", "-p", "params", multiple=True, metavar="KEY=VALUE",
              help="A parameter for the function (ctx.params); repeatable.")
@click.option("--drain-timeout", type=click.FloatRange(min=0, min_open=True), default=10.0,
              show_default=True, metavar="S",
              help="Seconds the drain may take before giving up and saying what is left.")
@click.option("--control", default="127.0.0.1:0", show_default=True,
              help="HOST:PORT of the control socket (status, drain).")
@metrics_option
def component_run(target: str, name: str | None, params: tuple[str, ...], drain_timeout: float,
                  control: str, metrics: str | None, ns: str | None, as_json: bool) -> None:
    """Run the async function FUNC of MODULE (a module or a path/to/file.py) as a component.

    It gets a context with ports by channel name; on SIGTERM, Ctrl-C or ``fabric drain NAME``
    it stops, drains its ports and exits. Its events (control, endpoints, connected, drained,
    and the function's own) are logged, and with --events written on stdout as JSON lines.
    """
    import asyncio
    import os

    from fabric.endpoints import parse_listen
    from fabric.errors import ConfigError
    from fabric.runtime.component import load_target, run_component

    values = _params(params)
    from nameservice.metrics import check_metrics_address

    try:
        control_endpoint = parse_listen(control)
    except ValueError as exc:
        fail(f"--control: {exc}", EXIT_USAGE)
    try:
        metrics = check_metrics_address(metrics)
    except ConfigError as exc:
        fail(f"--metrics: {exc}", EXIT_USAGE)
    try:
        func = load_target(target)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    from fabric.cli.nsclient import cluster

    addresses = cluster(ns)
    name = name or f"{target.rpartition(':')[2]}-{os.getpid()}"

    async def main() -> int:
        from nameservice.client import NameServiceClient
        from nameservice.names import Names

        async with NameServiceClient(addresses) as client:
            return await run_component(func, name, Names(client), params=values,
                                       drain_timeout=drain_timeout, control=control_endpoint,
                                       metrics=metrics or "")

    import zmq

    from nameservice.errors import NameServiceError

    try:
        code = asyncio.run(main())
    except NameServiceError as exc:
        fail(f"name service: {exc}", EXIT_FAILED)
    except ConfigError as exc:  # the metrics address cannot be served
        fail(f"--metrics: {exc}", EXIT_FAILED)
    except asyncio.TimeoutError:
        fail("no answer from the name service in time", EXIT_FAILED)
    except zmq.ZMQError as exc:
        fail(f"cannot listen on {control}: {exc}", EXIT_FAILED)
    sys.exit(code)
