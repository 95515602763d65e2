"""The ``fabric`` command: the group, ``fabric version``, and the other commands, each in a
module of its own imported only when one of its commands runs (``COMMANDS``)."""
from __future__ import annotations

from typing import Any

import click

from fabric.cli.common import FabricCommand, FabricGroup

COMMANDS = {
    "agent": "fabric.cli.cluster:agent",
    "butterfly": "fabric.cli.butterfly:butterfly",
    "component": "fabric.cli.component:component_group",
    "deploy": "fabric.cli.cluster:deploy",
    "drain": "fabric.cli.ops:drain",
    "intermediary": "fabric.cli.intermediary:intermediary",
    "keys": "fabric.cli.keys:keys_group",
    "kv": "fabric.cli.kv:kv_group",
    "lease": "fabric.cli.kv:lease_group",
    "network": "fabric.cli.cluster:network_group",
    "ns": "fabric.cli.ns:ns_group",
    "queue": "fabric.cli.tasks:queue_group",
    "status": "fabric.cli.ops:status",
    "task": "fabric.cli.tasks:task_group",
    "worker": "fabric.cli.tasks:worker_group",
}
"""Every command but ``version``: name -> ``module:attribute``."""


@click.group("fabric", cls=FabricGroup, lazy=COMMANDS, invoke_without_command=True)
@click.option("--version", "show_version", is_flag=True, allow_from_autoenv=False,
              help="Print the version of fabric and of its protocols, and exit.")
@click.pass_context
def main(ctx: click.Context, show_version: bool, **_group_options: Any) -> None:
    """fabric: a broker-less messaging fabric on ZeroMQ.

    The group's options may also be given to any command, after it (the command's wins).
    Each option reads FABRIC_<OPTION> (FABRIC_NS, FABRIC_JSON=1, ...); a command's own read
    FABRIC_<COMMAND>_<OPTION> (FABRIC_KV_GET_TIMEOUT). Exit codes: 0 done; 1 failed; 2 usage;
    3 compare failed; 4 not found; 130 interrupted.
    """
    if show_version:
        _print_version(bool(ctx.params.get("as_json")))
        ctx.exit()
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())
        ctx.exit()


@main.command("version", cls=FabricCommand)
def version(as_json: bool) -> None:
    """Print the version of fabric and of its protocols (what two processes must share)."""
    _print_version(as_json)


def versions() -> dict[str, Any]:
    """The package version, the wire protocols' version numbers, and Python's."""
    import platform

    from fabric import __version__
    from fabric.protocol import VERSION as DATA_PATH_VERSION
    from nameservice.kv.codec import FORMAT_VERSION
    from nameservice.wire import VERSION as WIRE_VERSION

    return {"fabric": __version__, "data_path_protocol": DATA_PATH_VERSION,
            "nameservice_wire": WIRE_VERSION, "kv_format": FORMAT_VERSION,
            "python": platform.python_version()}


def _print_version(as_json: bool) -> None:
    found = versions()
    if as_json:
        import json

        click.echo(json.dumps(found))
        return
    click.echo(f"fabric {found['fabric']}\n"
               f"  data-path protocol  {found['data_path_protocol']}  (fabric.protocol)\n"
               f"  name-service wire   {found['nameservice_wire']}  (nameservice.wire)\n"
               f"  kv format           {found['kv_format']}  (nameservice.kv.codec)\n"
               f"  python              {found['python']}")

