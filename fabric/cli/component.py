"""``fabric component run MODULE:FUNC``: run a component function as a fabric process;
``fabric component run MODULE:CLASS --replicas N --data DIR``: run a replica of a stateful
component (a ``fabric.stateful.Stateful`` class).

Exit codes: 0 the function returned (or was stopped by SIGTERM or ``fabric drain``) and every
port drained; 130 the same after Ctrl-C; 1 it failed, or something could not be flushed within
the drain timeout, or the name service is unreachable; 2 usage error (a bad MODULE:FUNC, a bad
--param, a stateful class without --data).
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
@click.option("--replicas", type=click.IntRange(min=1), default=3, show_default=True,
              help="Stateful: the size of each replica group.")
@click.option("--data", "data_dir", default=None, metavar="DIR",
              help="Stateful: where this replica keeps its log and snapshots (required).")
@click.option("--partitions", type=click.IntRange(min=1), default=1, show_default=True,
              help="Stateful: how many partitions (groups) the component has.")
@click.option("--partition", "only", type=click.IntRange(min=0), multiple=True,
              help="Stateful: run a replica of this partition only (repeatable; default: "
                   "every partition).")
@click.option("--input", "input_channel", default=None, metavar="CHANNEL",
              help="Stateful: the channel to consume (default: the class's input).")
@click.option("--output", "output_channel", default=None, metavar="CHANNEL",
              help="Stateful: the channel to emit to (default: the class's output).")
@click.option("--listen-host", default="127.0.0.1", show_default=True, metavar="HOST",
              help="Stateful: the address the replicas' Raft ports bind (any free port).")
@click.option("--replace-after", type=click.FloatRange(min=0, min_open=True), default=10.0,
              show_default=True, metavar="S",
              help="Stateful: seconds a replica may be gone before a new one takes its seat.")
@click.option("--snapshot-entries", type=click.IntRange(min=1), default=10_000,
              show_default=True, metavar="N",
              help="Stateful: snapshot the state and compact the log every N entries.")
def component_run(target: str, name: str | None, params: tuple[str, ...], drain_timeout: float,
                  control: str, metrics: str | None, replicas: int, data_dir: str | None,
                  partitions: int, only: tuple[int, ...], input_channel: str | None,
                  output_channel: str | None, listen_host: str, replace_after: float,
                  snapshot_entries: int, ns: str | None, as_json: bool) -> None:
    """Run the async function FUNC of MODULE (a module or a path/to/file.py) as a component,
    or a replica of the stateful component CLASS.

    A function gets a context with ports by channel name; on SIGTERM, Ctrl-C or ``fabric
    drain NAME`` it stops, drains its ports and exits. Its events (control, endpoints,
    connected, drained, and the function's own) are logged, and with --events written on
    stdout as JSON lines. A stateful class runs as one replica of each partition, whose group
    its peers find through the name service (docs/stateful.md).
    """
    import asyncio
    import os

    from fabric.endpoints import parse_listen
    from fabric.errors import ConfigError
    from fabric.runtime.component import load_object, load_target, run_component
    from fabric.stateful.component import Stateful

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
        found = load_object(target)
        stateful = isinstance(found, type) and issubclass(found, Stateful)
        func = None if stateful else load_target(target)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    if stateful and not data_dir:
        fail(f"{target} is a stateful component: give --data DIR", EXIT_USAGE)
    if stateful and not name:
        fail(f"{target} is a stateful component: give --name NAME (its replicas find each "
             f"other by it)", EXIT_USAGE)
    if stateful and listen_host.strip("[]") in ("0.0.0.0", "::", ""):
        fail("--listen-host must be an address the other replicas can reach, not "
             f"{listen_host!r}", EXIT_USAGE)
    if any(p >= partitions for p in only):
        fail(f"--partition must be below --partitions ({partitions})", EXIT_USAGE)
    only = tuple(sorted(set(only)))
    from fabric.cli.nsclient import cluster

    addresses = cluster(ns)
    name = name or f"{target.rpartition(':')[2]}-{os.getpid()}"

    async def main() -> int:
        from nameservice.client import NameServiceClient
        from nameservice.names import Names

        async with NameServiceClient(addresses) as client:
            if stateful:
                from fabric.stateful.process import run_replicas

                assert data_dir is not None
                return await run_replicas(
                    found, Names(client), name=name, data_dir=data_dir, size=replicas,
                    partitions=list(only or range(partitions)),
                    total_partitions=partitions, listen_host=listen_host,
                    input=input_channel, output=output_channel, control=control_endpoint,
                    drain_timeout=drain_timeout, grace_s=replace_after,
                    snapshot_threshold=snapshot_entries)
            assert func is not None
            return await run_component(func, name, Names(client), params=values,
                                       drain_timeout=drain_timeout, control=control_endpoint,
                                       metrics=metrics or "")

    import zmq

    from nameservice.errors import NameServiceError
    from nameservice.storage import StorageError

    try:
        code = asyncio.run(main())
    except StorageError as exc:  # a replica's data directory
        fail(f"--data {data_dir}: {exc}", EXIT_FAILED)
    except (OSError, ValueError) as exc:
        if not stateful:
            raise
        fail(f"{type(exc).__name__}: {exc}", EXIT_FAILED)  # a directory, an address, a name
    except NameServiceError as exc:
        fail(f"name service: {exc}", EXIT_FAILED)
    except ConfigError as exc:  # the metrics address cannot be served, a partition count
        fail(str(exc) if stateful else f"--metrics: {exc}", EXIT_FAILED)
    except asyncio.TimeoutError:
        fail("no answer from the name service in time", EXIT_FAILED)
    except zmq.ZMQError as exc:
        fail(f"cannot listen on {control}: {exc}", EXIT_FAILED)
    sys.exit(code)
