"""``fabric ns member``: list the name service's members and change them while it serves
(docs/operations.md, "Changing the members").

A change is one server at a time: ``add`` makes the new node a learner, waits until it has
caught up, and promotes it (``--learner``: stop at the learner); ``remove`` takes a voter or a
learner out. Every command prints the configuration that results.

Exit codes: 0 done; 1 failed or timed out (the last reason is said); 2 a change that can never
be made from the configuration in force, or a usage error.
"""
from __future__ import annotations

from typing import Any

import click

from fabric.cli.common import FabricCommand

_TIMEOUT = click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=60.0,
                        show_default=True, metavar="S",
                        help="Seconds to wait, a learner's catching up included.")


@click.group("member")
def member_group() -> None:
    """List and change the name service's members (one server at a time)."""


def _show(payload: dict, as_json: bool) -> None:
    import json

    if as_json:
        click.echo(json.dumps(payload))
        return
    click.echo(f"{'ID':>3} {'ADDRESS':<22} {'ROLE':<8} {'LAG':>6}")
    for m in payload["members"]:
        lag = m.get("lag")
        leader = " (leader)" if m["id"] == payload.get("leader") else ""
        click.echo(f"{m['id']:>3} {m['address'] or '-':<22} {m['role']:<8} "
                   f"{'-' if lag is None else lag:>6}{leader}")


def _change(ns: str | None, timeout: float, kind: str, node: int, address: str = "",
            promote: bool = False) -> dict:
    from fabric.cli.nsclient import run
    from nameservice import wire

    code = {"add": wire.MEMBER_ADD_LEARNER, "promote": wire.MEMBER_PROMOTE,
            "remove": wire.MEMBER_REMOVE}[kind]

    async def action(client: Any) -> dict:
        result = await client.member_change(code, node, address, timeout=timeout)
        if promote:
            result = await client.member_change(wire.MEMBER_PROMOTE, node, timeout=timeout)
        return result

    return run(ns, timeout, action)


@member_group.command("list", cls=FabricCommand, ns=True)
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=5.0,
              show_default=True, metavar="S", help="Seconds before giving up.")
def member_list(ns: str | None, as_json: bool, timeout: float) -> None:
    """Print every member: id, address, role (voter or learner) and, from the leader, how
    many entries its log is behind (LAG)."""
    from fabric.cli.nsclient import run

    _show(run(ns, timeout, lambda client: client.members(timeout=timeout)), as_json)


@member_group.command("add", cls=FabricCommand, ns=True)
@click.argument("node_id", metavar="ID", type=click.IntRange(min=1))
@click.argument("address", metavar="HOST:PORT[/PEERPORT]")
@click.option("--learner", is_flag=True,
              help="Leave the node a learner (it receives the log, does not vote).")
@_TIMEOUT
def member_add(node_id: int, address: str, learner: bool, ns: str | None, as_json: bool,
               timeout: float) -> None:
    """Add node ID, listening at HOST:PORT: as a learner, then, once it has caught up, as a
    voter. Start the node with ``fabric ns start --id ID --listen HOST:PORT --join NODE``."""
    from nameservice.address import parse_member
    from nameservice.errors import ConfigError

    try:
        parse_member(address)
    except ConfigError as exc:
        from fabric.cli.common import EXIT_USAGE, fail

        fail(str(exc), EXIT_USAGE)
    _show(_change(ns, timeout, "add", node_id, address, promote=not learner), as_json)


@member_group.command("promote", cls=FabricCommand, ns=True)
@click.argument("node_id", metavar="ID", type=click.IntRange(min=1))
@_TIMEOUT
def member_promote(node_id: int, ns: str | None, as_json: bool, timeout: float) -> None:
    """Make learner ID a voter, once it has caught up with the leader."""
    _show(_change(ns, timeout, "promote", node_id), as_json)


@member_group.command("remove", cls=FabricCommand, ns=True)
@click.argument("node_id", metavar="ID", type=click.IntRange(min=1))
@_TIMEOUT
def member_remove(node_id: int, ns: str | None, as_json: bool, timeout: float) -> None:
    """Take node ID out of the cluster (a leader hands over first); the node stops once it
    learns it was removed."""
    _show(_change(ns, timeout, "remove", node_id), as_json)
