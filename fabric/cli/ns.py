"""``fabric ns``: run and inspect the name service (``start`` one node, ``local`` a cluster on
this host, ``status`` of every node). The key-value commands are in kv.py.

Exit codes (docs/operations.md): 0 done; 1 failed; 2 usage error; 130 interrupted.
"""
from __future__ import annotations

import sys
from typing import Any

import click

from fabric.cli.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    FabricCommand,
    fail,
    settings,
)
from fabric.cli.members import member_group
from nameservice.server.cli import node_options


@click.group("ns")
def ns_group() -> None:
    """Run and inspect the name service (a replicated key-value store)."""


ns_group.add_command(member_group)


@ns_group.command("start", cls=FabricCommand, events=True, keys=True)
@node_options
def ns_start(as_json: bool, **options: Any) -> None:
    """Run one name-service node until SIGTERM, Ctrl-C or ``fabric drain NAME``.

    Once bound it prints ``listening HOST:PORT`` and ``control ENDPOINT`` (--events: as JSON
    lines). ``python -m nameservice.server`` takes the same options.
    """
    from nameservice.errors import ConfigError, NameServiceError
    from nameservice.metrics import check_metrics_address
    from nameservice.server.cli import run_node, settings_from

    try:
        metrics = check_metrics_address(options.pop("metrics"))
        node = settings_from(**options)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    except NameServiceError as exc:  # --join: no member answered
        fail(str(exc), EXIT_FAILED)
    sys.exit(run_node(node, events=settings().events, metrics=metrics))


@ns_group.command("local", cls=FabricCommand, events=True)
@click.option("--nodes", type=click.IntRange(1, 9), default=3, show_default=True)
@click.option("--base-port", type=click.IntRange(0, 65535), default=7401, show_default=True,
              help="Node i listens on BASE+i-1; 0 picks free ports.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--data-dir", type=click.Path(file_okay=False),
              help="Keep the nodes' data here (kept at exit) [default: a temporary directory, "
                   "deleted at exit].")
@click.option("--election-timeout", default="150-300", show_default=True, metavar="LO-HI")
@click.option("--cluster-name", default="default", show_default=True,
              help="The cluster name advertised with zeroconf.")
@click.option("--no-advertise", is_flag=True, help="Do not advertise the nodes with zeroconf.")
def ns_local(nodes: int, base_port: int, host: str, data_dir: str | None,
             election_timeout: str, cluster_name: str, no_advertise: bool,
             as_json: bool) -> None:
    """Run a local cluster of NODES name-service processes until SIGTERM (exit 0) or Ctrl-C
    (exit 130).

    Prints ``FABRIC_NS=HOST:PORT,...`` once every node listens (--events: the event
    ``ready`` with ``ns`` and each node's address). Each node logs to DATA_DIR/node-ID.log.
    """
    import logging
    import signal
    import tempfile
    import time

    from nameservice import logs
    from nameservice.errors import ConfigError, NameServiceError
    from nameservice.server.config import parse_timeout_range
    from nameservice.server.local import LocalCluster

    try:
        parse_timeout_range(election_timeout)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    if base_port and base_port + nodes - 1 > 65535:
        fail(f"--base-port {base_port} leaves no room for {nodes} nodes", EXIT_USAGE)
    ports = [base_port + i for i in range(nodes)] if base_port else None
    temp = None if data_dir else tempfile.TemporaryDirectory(prefix="fabric-ns-")
    directory = data_dir or (temp.name if temp is not None else "")
    signalled: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        signalled.append(signum)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    found = settings()
    cluster = LocalCluster(directory, nodes, host=host, ports=ports,
                           election_timeout=election_timeout,
                           cluster_name=None if no_advertise else cluster_name,
                           extra_args=["--log-level", found.log_level,
                                       "--log-format", found.log_format])
    code = 0
    try:
        try:
            cluster.start()
        except NameServiceError as exc:
            fail(f"{exc}", EXIT_FAILED)
        logs.event(logging.getLogger(__name__), "ready", ns=cluster.ns_arg,
                   nodes={str(i): a for i, a in cluster.addresses.items()},
                   data_dir=str(cluster.data_dir))
        if not found.events:
            click.echo(f"FABRIC_NS={cluster.ns_arg}")
            sys.stdout.flush()
        while not signalled:
            if not all(cluster.running(i) for i in cluster.ids):
                dead = [i for i in cluster.ids if not cluster.running(i)]
                click.echo(f"{click.get_current_context().command_path}: node(s) {dead} "
                           f"exited; stopping the cluster", err=True)
                code = EXIT_FAILED
                break
            time.sleep(0.2)  # a signal's handler runs during the sleep
    finally:
        cluster.stop()
        cluster.close()
        for s, handler in old.items():
            signal.signal(s, handler)
        if temp is not None:
            temp.cleanup()
    sys.exit(EXIT_INTERRUPTED if code == 0 and signal.SIGINT in signalled else code)


@ns_group.command("status", cls=FabricCommand, ns=True)
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=5.0,
              show_default=True, metavar="S", help="Seconds before giving up on a node.")
def ns_status(ns: str | None, as_json: bool, timeout: float) -> None:
    """Show every node: id, address, role, whether it votes (MEMBER) and how far it is
    behind the leader (LAG), term, commit index, applied index, leader (--json: a list, one
    object per node, with every counter). Members that joined are found by asking the
    cluster."""
    import asyncio
    import json

    from fabric.cli.nsclient import given, run

    given(ns)
    addresses: list[str] = []

    async def action(client: Any) -> list[dict]:
        try:  # every member, those that joined since the list given included
            await client.members(timeout=min(timeout, 2.0))
        except Exception:
            pass  # no leader or an older node: the nodes given are shown
        addresses[:] = client.channel.addresses

        async def one(address: str) -> dict:
            try:
                return await client.status(address, timeout=timeout)
            except Exception as exc:  # one row per node, whatever happened to it
                return {"address": address, "role": "unreachable", "error": str(exc)}

        return list(await asyncio.gather(*(one(a) for a in addresses)))

    rows = run(ns, timeout, action)
    if as_json:
        click.echo(json.dumps(rows, default=str))
    else:
        lag: dict[str, int] = {}
        for r in rows:
            lag.update(r.get("lag") or {})
        click.echo(f"{'ID':>3} {'ADDRESS':<22} {'ROLE':<13} {'MEMBER':<8} {'LAG':>6} "
                   f"{'TERM':>6} {'COMMIT':>8} {'APPLIED':>8} LEADER")
        for r in rows:
            if r["role"] == "unreachable":
                click.echo(f"{'-':>3} {r['address']:<22} unreachable")
                continue
            node = r["id"]
            member = ("voter" if node in r.get("voters", ()) else
                      "learner" if node in r.get("learners", ()) else "none")
            click.echo(f"{node:>3} {r['address']:<22} {r['role']:<13} {member:<8} "
                       f"{lag.get(str(node), '-')!s:>6} {r['term']:>6} {r['commit_index']:>8} "
                       f"{r['applied_index']:>8} {r['leader_address'] or '-'}")
    if all(r["role"] == "unreachable" for r in rows):
        fail(f"no node reachable at {', '.join(addresses)}", EXIT_FAILED)
