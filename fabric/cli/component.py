"""``fabric component run MODULE:FUNC``: run a component function as a fabric process.

Exit codes: 0 the function returned (or was stopped) and every port drained; 1 it failed, or
something could not be flushed within the drain timeout, or the name service is unreachable;
2 usage error (a bad MODULE:FUNC, a bad --param).
"""
from __future__ import annotations

import asyncio
import logging
import sys

import click

from fabric.cli.ns import EXIT_FAILED, EXIT_USAGE, _fail, _ns_option, _OneLineErrors


@click.group("component", cls=_OneLineErrors)
def component_group() -> None:
    """Run fabric components."""


def ns_addresses(ns: str | None) -> list[str]:
    """The name-service nodes: ``--ns``, else ``FABRIC_NS``, else found by zeroconf; a bad list
    exits 2, nothing found exits 1 (one line each)."""
    from nameservice.client.addresses import cluster_addresses
    from nameservice.errors import ConfigError, Unavailable

    try:
        return cluster_addresses(ns)
    except ConfigError as exc:
        _fail(str(exc), EXIT_USAGE)
    except Unavailable as exc:
        _fail(str(exc), EXIT_FAILED)
    raise AssertionError("unreachable")


def _params(pairs: tuple[str, ...]) -> dict[str, str]:
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            _fail(f"expected --param KEY=VALUE, got {pair!r}", EXIT_USAGE)
        params[key] = value
    return params


@component_group.command("run")
@click.argument("target", metavar="MODULE:FUNC")
@click.option("--name", default=None, help="Name of this process (default: FUNC-PID).")
@click.option("--param", "-p", "params", multiple=True, metavar="KEY=VALUE",
              help="A parameter for the function (ctx.params); repeatable.")
@click.option("--drain-timeout", type=float, default=10.0, show_default=True,
              help="Seconds the drain may take before giving up and saying what is left.")
@click.option("--control", default="127.0.0.1:0", show_default=True,
              help="HOST:PORT of the control socket (status, drain).")
@_ns_option
def component_run(target: str, name: str | None, params: tuple[str, ...], drain_timeout: float,
                  control: str, ns: str | None) -> None:
    """Run the async function FUNC of MODULE (a module or a path/to/file.py) as a component.

    It gets a context with ports by channel name; on SIGTERM it stops, drains its ports and
    exits 0.
    """
    import os

    from fabric.errors import ConfigError
    from fabric.runtime.component import load_target, run_component

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from fabric.endpoints import parse_listen

    values = _params(params)
    try:
        control_endpoint = parse_listen(control)
    except ValueError as exc:
        _fail(f"--control: {exc}", EXIT_USAGE)
    try:
        func = load_target(target)
    except ConfigError as exc:
        _fail(str(exc), EXIT_USAGE)
    addresses = ns_addresses(ns)
    name = name or f"{target.rpartition(':')[2]}-{os.getpid()}"

    async def main() -> int:
        from nameservice.client import NameServiceClient
        from nameservice.names import Names

        async with NameServiceClient(addresses) as client:
            return await run_component(func, name, Names(client), params=values,
                                       drain_timeout=drain_timeout, control=control_endpoint)

    import zmq

    from nameservice.errors import NameServiceError

    try:
        code = asyncio.run(main())
    except NameServiceError as exc:
        _fail(f"name service: {exc}", EXIT_FAILED)
    except asyncio.TimeoutError:
        _fail("no answer from the name service in time", EXIT_FAILED)
    except zmq.ZMQError as exc:
        _fail(f"cannot listen on {control}: {exc}", EXIT_FAILED)
    except KeyboardInterrupt:
        _fail("interrupted", EXIT_FAILED)
    sys.exit(code)
