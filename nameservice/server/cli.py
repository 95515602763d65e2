"""The options of one name-service node, defined once for both ways of starting it:
``fabric ns start`` (fabric/cli/ns.py) and ``python -m nameservice.server`` (its thin alias,
kept because the name service does not need fabric installed to run, and LocalCluster starts
nodes with it). A test compares the two option lists.

The node logs to stderr (:mod:`nameservice.logs`) and announces, once bound, ``listening
HOST:PORT`` and then ``control ENDPOINT`` (its control socket): as these two lines on stdout,
which LocalCluster reads, or with ``--events`` as JSON lines ``{"event": "listening",
"address": ...}`` and ``{"event": "control", "endpoint": ...}``.
"""
from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from nameservice import logs

if TYPE_CHECKING:
    from nameservice.server.config import NodeSettings

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

NODE_OPTIONS: list[Callable[[F], F]] = [
    click.option("--id", "node_id", type=int, required=True, metavar="ID",
                 help="This node's id (in --cluster)."),
    click.option("--cluster", metavar="ID=HOST:PORT[/PEERPORT],...",
                 help="Every member: id and the address it listens on, and the port its peers' "
                      "Raft messages go to when apart (with keys, open only to the members' "
                      "keys) (not with --join)."),
    click.option("--join", metavar="HOST:PORT,...",
                 help="Join a running cluster through any of these members (after `fabric ns "
                      "member add ID HOST:PORT`); needs --listen."),
    click.option("--listen", metavar="HOST:PORT[/PEERPORT]",
                 help="With --join: the address this node listens on (and its peer port)."),
    click.option("--data-dir", type=click.Path(file_okay=False),
                 help="Where this node keeps its log and snapshots "
                      "[default: $XDG_DATA_HOME/fabric/ns/node-ID]."),
    click.option("--election-timeout", default="150-300", show_default=True, metavar="LO-HI",
                 help="Election timeout range in milliseconds (the same on every node)."),
    click.option("--snapshot-threshold", type=click.IntRange(min=1), default=10_000,
                 show_default=True, metavar="N",
                 help="Snapshot the state and drop the log it covers every N entries."),
    click.option("--snapshot-bytes", type=click.IntRange(min=1), default=64 << 20,
                 show_default=True, metavar="BYTES",
                 help="... or once the entries since the last snapshot hold BYTES of data."),
    click.option("--sync-mode", type=click.Choice(("thread", "inline", "auto")), default="auto",
                 show_default=True,
                 help="Where fsync runs: auto fsyncs on the leader in a worker thread and on "
                      "followers on the loop thread."),
    click.option("--history-events", type=click.IntRange(min=0), default=10_000,
                 show_default=True, metavar="N",
                 help="Events kept for watches resuming from an older revision."),
    click.option("--history-bytes", type=click.IntRange(min=0), default=64 << 20,
                 show_default=True, metavar="BYTES",
                 help="... and at most about BYTES of their keys and values."),
    click.option("--min-lease-ttl", type=float, default=1.0, show_default=True, metavar="S",
                 help="Shortest lease TTL granted, at least 0.5 (the same on every node)."),
    click.option("--cluster-name", default="default", show_default=True,
                 help="The cluster name advertised with zeroconf."),
    click.option("--no-advertise", is_flag=True, help="Do not advertise this node with zeroconf."),
    click.option("--name", default="", metavar="NAME",
                 help="The node's process name, for fabric drain / fabric status "
                      "[default: ns-ID]."),
    click.option("--control", default="", metavar="HOST:PORT",
                 help="Where the control socket binds, port 0 for any [default: the node's "
                      "host, any port]."),
    click.option("--metrics", default=None, metavar="HOST:PORT", envvar="FABRIC_METRICS",
                 show_envvar=True,
                 help="Serve Prometheus metrics at http://HOST:PORT/metrics (port 0: any; "
                      "the address is logged) [default: none]."),
]
"""The node's own options, as click decorators, in the order --help lists them."""

NODE_PARAMS = ("node_id", "cluster", "join", "listen", "data_dir", "election_timeout",
               "snapshot_threshold", "snapshot_bytes", "sync_mode", "history_events",
               "history_bytes", "min_lease_ttl", "cluster_name", "no_advertise", "name",
               "control", "metrics")
"""The keyword arguments those options give (:func:`settings_from` takes all but ``metrics``,
which :func:`run_node` takes)."""


def node_options(func: F) -> F:
    """Add every node option to a click command."""
    for option in reversed(NODE_OPTIONS):
        func = option(func)
    return func


def settings_from(*, node_id: int, cluster: str | None, join: str | None, listen: str | None,
                  data_dir: str | None, election_timeout: str, snapshot_threshold: int,
                  snapshot_bytes: int, sync_mode: str, history_events: int, history_bytes: int,
                  min_lease_ttl: float, cluster_name: str, no_advertise: bool, name: str,
                  control: str) -> NodeSettings:
    """The node's settings from its options; ``ConfigError`` for a bad value. With ``join``
    the members are asked who they are (``Unavailable`` if none answers)."""
    from nameservice.address import parse_cluster, parse_member
    from nameservice.errors import ConfigError
    from nameservice.server.config import NodeSettings, parse_min_lease_ttl, parse_timeout_range
    from nameservice.server.joining import members_to_join

    if data_dir is None:
        base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
        data_dir = os.path.join(base, "fabric", "ns", f"node-{node_id}")
    learners: tuple[int, ...] = ()
    if join:
        if cluster or not listen:
            raise ConfigError("--join takes --listen HOST:PORT and no --cluster")
        parse_member(listen)
        members, learners = members_to_join(join, node_id, listen)
    elif cluster:
        if listen:
            raise ConfigError("--listen goes with --join (with --cluster the node listens at "
                              "its own entry)")
        members = parse_cluster(cluster)
    else:
        raise ConfigError("give --cluster ID=HOST:PORT,... (every member), or --join with "
                          "--listen")
    return NodeSettings(node_id, members, data_dir, parse_timeout_range(election_timeout),
                        learners=learners,
                        snapshot_threshold=snapshot_threshold,
                        snapshot_bytes=snapshot_bytes, sync_mode=sync_mode,
                        min_lease_ttl_ms=parse_min_lease_ttl(min_lease_ttl),
                        cluster_name=cluster_name, advertise=not no_advertise,
                        history_events=history_events, history_bytes=history_bytes,
                        name=name, control=control)


def run_node(settings: NodeSettings, *, events: bool = False,
             metrics: str | None = None) -> int:
    """Run the node until SIGTERM, SIGINT or ``fabric drain NAME``; the exit code. Logging
    must be set up already (:func:`nameservice.logs.setup`). ``metrics``: where ``/metrics``
    is served (None: nowhere)."""
    from nameservice.server.daemon import serve

    def announce(line: str) -> None:
        kind, _, value = line.partition(" ")
        fields: dict[str, Any] = {"address" if kind == "listening" else "endpoint": value}
        logs.event(log, kind, **fields)
        if not events:
            print(line, flush=True)  # the readiness lines LocalCluster reads

    return serve(settings, announce, metrics=metrics or "")


@click.command(context_settings={"auto_envvar_prefix": "FABRIC_NS_START",
                                 "help_option_names": ["-h", "--help"],
                                 "max_content_width": 100})
@node_options
@click.option("--events", is_flag=True,
              help="Announce listening and control as JSON lines on stdout.")
@click.option("--log-level", type=click.Choice(logs.LEVELS, case_sensitive=False),
              default="info", show_default=True, envvar="FABRIC_LOG_LEVEL", show_envvar=True,
              help="Log records at this level and above go to stderr.")
@click.option("--log-format", type=click.Choice(logs.FORMATS), default="text",
              show_default=True, envvar="FABRIC_LOG_FORMAT", show_envvar=True,
              help="Logs as text lines or as JSON objects, one per line.")
@click.option("--keys", metavar="DIR", envvar="FABRIC_KEYS", show_envvar=True,
              help="This process's key pair and the keys it trusts (docs/security.md): CURVE "
                   "on every socket [default: none, insecure mode].")
def node_command(events: bool, log_level: str, log_format: str, keys: str | None,
                 **options: Any) -> None:
    """Run one name-service node (the same as ``fabric ns start``; docs/operations.md)."""
    from nameservice.errors import ConfigError, NameServiceError
    from nameservice.metrics import check_metrics_address
    from nameservice.security.context import configure

    logs.setup(log_level.lower(), log_format, events=events)
    try:
        configure(keys or None)
        metrics = check_metrics_address(options.pop("metrics"))
        settings = settings_from(**options)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    except NameServiceError as exc:  # --join: no member answered
        raise click.ClickException(str(exc)) from None
    sys.exit(run_node(settings, events=events, metrics=metrics))


def main(argv: list[str] | None = None) -> int:
    """``python -m nameservice.server``: errors are one line on stderr (exit 2 for usage)."""
    prog = "python -m nameservice.server"
    try:
        node_command.main(argv, prog_name=prog, standalone_mode=False)
    except click.ClickException as exc:
        click.echo(f"{prog}: {exc.format_message()}", err=True)
        return exc.exit_code
    except click.exceptions.Abort:
        return 130
    return 0
