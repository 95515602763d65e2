"""``fabric agent``: run a host's agent (and a manager candidate); ``fabric deploy FILE``: store
a network description; ``fabric network status|list|rm``: what runs where, and removing a
network (docs/cluster.md).

Exit codes: 0 done; 1 failed (the name service did not answer; ``--wait`` ran out with
instances not running, or not removed); 2 usage (a bad file, label or option); 4 no such
network.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from fabric.cli.common import EXIT_FAILED, EXIT_NOT_FOUND, EXIT_USAGE, FabricCommand, fail
from fabric.cli.nsclient import run_process

_WAIT = click.option("--wait", type=click.FloatRange(min=0), default=0.0, show_default=True,
                     metavar="S", help="Wait up to S seconds for the cluster to get there "
                                       "(0: do not wait).")


def _labels(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            fail(f"--labels: expected KEY=VALUE,..., got {pair!r}", EXIT_USAGE)
        labels[key.strip()] = value.strip()
    return labels


@click.command("agent", cls=FabricCommand, ns=True, events=True)
@click.option("--name", "host", default=None, metavar="HOST",
              help="This host's name in the cluster [default: the machine's host name].")
@click.option("--labels", default="", metavar="K=V,...",
              help="Labels placement constraints match (every agent also has host=NAME).")
@click.option("--slots", type=click.IntRange(min=0), default=8, show_default=True,
              help="How many instance slots this host offers.")
@click.option("--address", default="127.0.0.1", show_default=True, metavar="HOST",
              help="The address this host's processes listen on (reachable by the others).")
@click.option("--data", "data_dir", default="fabric-agent", show_default=True, metavar="DIR",
              help="Where instances keep their data and the agent their logs.")
@click.option("--workdir", default=None, metavar="DIR",
              help="The directory instances run in (their modules are imported from it) "
                   "[default: the current directory].")
@click.option("--ttl", type=click.FloatRange(min=1.0), default=3.0, show_default=True,
              metavar="S", help="The agent's lease: a host silent this long is lost, and "
                                "its instances are placed elsewhere.")
@click.option("--manager/--no-manager", "manage", default=True, show_default=True,
              help="Stand for election as the cluster's manager.")
@click.option("--drain-timeout", type=click.FloatRange(min=0, min_open=True), default=10.0,
              show_default=True, metavar="S", help="Seconds an instance's drain may take.")
@click.option("--max-starting", type=click.IntRange(min=1), default=4, show_default=True,
              metavar="N", help="At most N instances starting at once on this host.")
@click.option("--control", default="127.0.0.1:0", show_default=True,
              help="HOST:PORT of the control socket (status, drain).")
def agent(host: str | None, labels: str, slots: int, address: str, data_dir: str,
          workdir: str | None, ttl: float, manage: bool, drain_timeout: float,
          max_starting: int, control: str, ns: str | None, as_json: bool) -> None:
    """Run this host's agent: it registers the host, runs the instances placed on it, and
    stops them all when its lease may have run out. It also stands for election as the
    manager, which places every deployed network's instances on the agents."""
    import os
    import socket

    from fabric.cli.nsclient import cluster
    from fabric.cluster.network import NAME_RE

    host = host or socket.gethostname().split(".")[0].lower()
    if not NAME_RE.match(host):
        fail(f"--name: a host name is 1-63 of a-z 0-9 _ - , got {host!r}", EXIT_USAGE)
    if address.strip("[]") in ("0.0.0.0", "::", ""):
        fail(f"--address must be an address the others can reach, not {address!r}",
             EXIT_USAGE)
    found = _labels(labels)
    if "host" in found:
        fail("--labels: host is set from --name", EXIT_USAGE)
    if workdir and not os.path.isdir(workdir):
        fail(f"--workdir: no such directory: {workdir}", EXIT_USAGE)
    data_dir = os.path.abspath(data_dir)  # the instances run in --workdir
    try:
        os.makedirs(data_dir, exist_ok=True)
    except OSError as exc:
        fail(f"--data: cannot make {data_dir}: {exc}", EXIT_USAGE)
    if not os.access(data_dir, os.W_OK | os.X_OK):
        fail(f"--data: {data_dir} is not writable", EXIT_USAGE)
    ns_arg = ",".join(cluster(ns))
    from fabric.cli.common import settings

    keys_dir = settings().keys  # the agent's keys are its instances' keys
    env = {"FABRIC_KEYS": os.path.abspath(keys_dir)} if keys_dir else {}

    async def start(names: Any, endpoint: str) -> int:
        from fabric.cluster.agent import Agent
        from fabric.cluster.process import run_agent

        made = Agent(names.client, host=host, address=address, ns=ns_arg, labels=found,
                     slots=slots, data_dir=data_dir, ttl=ttl, workdir=workdir,
                     drain_timeout=drain_timeout, env=env, max_starting=max_starting)
        return await run_agent(names, made, manage=manage, control=endpoint)

    run_process(ns, control, start)


@click.command("deploy", cls=FabricCommand, ns=True)
@click.argument("file", type=click.Path(dir_okay=False))
@_WAIT
def deploy(file: str, wait: float, ns: str | None, as_json: bool) -> None:
    """Deploy the network described in FILE (TOML; docs/cluster.md), or apply a changed one:
    the manager places what is new, moves what must move, updates what changed one instance
    at a time, and drains what is gone."""
    from fabric.cli.nsclient import run
    from fabric.cluster import keys
    from fabric.cluster.network import network_to_wire, parse_network
    from fabric.errors import ConfigError

    path = Path(file)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {file}: {exc}", EXIT_USAGE)
    try:
        network = parse_network(text, name=path.stem.lower())
    except ConfigError as exc:
        fail(f"{file}: {exc}", EXIT_USAGE)

    async def action(client: Any) -> dict[str, Any]:
        result = await client.put(keys.NETWORKS + network.name, network_to_wire(network))
        report = {"network": network.name, "revision": result.revision,
                  "instances": len(network.instances)}
        if wait:
            report["status"] = await _wait_until(client, network.name, wait, settled=True)
        return report

    report = run(ns, 10.0 + wait, action)
    _print_report(report, as_json)
    if wait and not report["status"]["settled"]:
        sys.exit(EXIT_FAILED)


@click.group("network")
def network_group() -> None:
    """Deployed networks: status, list, remove."""


@network_group.command("status", cls=FabricCommand, ns=True)
@click.argument("name")
@click.option("--watch", is_flag=True, help="Print the status again on every change, until "
                                             "Ctrl-C.")
def network_status(name: str, watch: bool, ns: str | None, as_json: bool) -> None:
    """What network NAME asks for against what runs: each instance's host, incarnation
    (gen) and state, and why an instance has no host."""
    from fabric.cli.nsclient import run
    from fabric.cluster.status import network_status as read_status

    async def action(client: Any) -> None:
        if not watch:
            found = await read_status(client, name)
            if found is None:
                fail(f"no network {name!r}", EXIT_NOT_FOUND)
            _print_status(found, as_json)
            return
        from fabric.cluster import keys
        from fabric.cluster.status import status_from_view
        from nameservice.client.mirror import Mirror

        mirror = Mirror(client, keys.ROOT)
        import asyncio

        follow = asyncio.ensure_future(mirror.run())
        try:
            seen, shown = 0, None
            while True:
                seen = await mirror.wait_change(seen)
                found = status_from_view(mirror.kvs, name) or {
                    "network": name, "deployed": False, "instances": [], "running": 0,
                    "settled": False}
                if found != shown:
                    _print_status(found, as_json)
                    shown = found
        finally:
            follow.cancel()

    run(ns, 10.0, action)


@network_group.command("list", cls=FabricCommand, ns=True)
def network_list(ns: str | None, as_json: bool) -> None:
    """Every deployed network, with how many of its instances run."""
    from fabric.cli.nsclient import run
    from fabric.cluster.status import list_networks

    found = run(ns, 10.0, list_networks)
    if as_json:
        click.echo(json.dumps(found))
        return
    for row in found:
        click.echo(f"{row['network']:<24} {row['running']}/{row['instances']} running"
                   f"{'' if row['settled'] else '  (changing)'}")


@network_group.command("rm", cls=FabricCommand, ns=True)
@click.argument("name")
@_WAIT
def network_rm(name: str, wait: float, ns: str | None, as_json: bool) -> None:
    """Remove network NAME: its instances are drained (the drain protocol) and stopped."""
    from fabric.cli.nsclient import run
    from fabric.cluster import keys

    async def action(client: Any) -> dict[str, Any]:
        result = await client.delete(keys.NETWORKS + name)
        if not result.deleted:
            fail(f"no network {name!r}", EXIT_NOT_FOUND)
        report: dict[str, Any] = {"network": name, "removed": True}
        if wait:
            report["status"] = await _wait_until(client, name, wait, settled=False)
        return report

    report = run(ns, 10.0 + wait, action)
    left = report.get("status", {}).get("instances", [])
    if as_json:
        click.echo(json.dumps(report))
    else:
        click.echo(f"network {name} removed" + (f"; {len(left)} instances still stopping"
                                                  if left else ""))
    if wait and left:
        sys.exit(EXIT_FAILED)


async def _wait_until(client: Any, name: str, timeout: float, *, settled: bool
                      ) -> dict[str, Any]:
    """Wait until the network runs as asked (``settled``), or until nothing of it is left;
    the last status read."""
    import asyncio

    from fabric.cluster.status import network_status as read_status

    deadline = time.monotonic() + timeout
    while True:
        found = await read_status(client, name, removed_ok=True)
        assert found is not None  # removed_ok: an empty status for a network gone
        done = found["settled"] if settled else not found["instances"]
        if done or time.monotonic() >= deadline:
            return found
        await asyncio.sleep(0.2)


def _print_report(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(report))
        return
    click.echo(f"network {report['network']} deployed at revision {report['revision']} "
               f"({report['instances']} instances)")
    if "status" in report:
        _print_status(report["status"], False)


def _print_status(found: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(found))
        return
    click.echo(f"network {found['network']}: {found['running']}/{len(found['instances'])} "
               f"running{'' if found['settled'] else ' (changing)'}")
    click.echo(f"  {'INSTANCE':<22} {'HOST':<12} {'GEN':>4}  {'STATE':<10} NOTE")
    for row in found["instances"]:
        click.echo(f"  {row['id']:<22} {row['host'] or '-':<12} {row['gen'] or '-':>4}  "
                   f"{row['state']:<10} {row['note']}")
