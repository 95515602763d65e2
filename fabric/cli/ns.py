"""The ``fabric ns`` (run and inspect the name service) and ``fabric kv`` (use it) commands.

Exit codes (the contract in docs/operations.md): 0 done; 1 failed (unreachable, timed out, the
outcome may be unknown); 2 usage error; 3 CAS compare failed; 4 key not found. Every error is
one line on stderr, never a traceback.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from typing import Any, Awaitable, Callable

import click

EXIT_FAILED, EXIT_USAGE, EXIT_CAS_FAILED, EXIT_NOT_FOUND = 1, 2, 3, 4

_ns_option = click.option(
    "--ns", "ns", envvar="FABRIC_NS", metavar="HOST:PORT,...",
    help="Name-service nodes (default: $FABRIC_NS, else the nodes of cluster "
         "$FABRIC_NS_CLUSTER, or 'default', found with zeroconf).")
_timeout_option = click.option(
    "--timeout", type=float, default=5.0, show_default=True,
    help="Seconds before giving up (retries included).")


def _fail(message: str, code: int) -> None:
    click.echo(f"fabric: {message}", err=True)
    sys.exit(code)


def _addresses(ns: str | None) -> list[str] | None:
    """The ``--ns`` addresses, checked; None when not given (the client browses for them)."""
    from nameservice.address import parse_addresses
    from nameservice.errors import ConfigError

    if not ns:
        return None
    try:
        return parse_addresses(ns)
    except ConfigError as exc:
        _fail(str(exc), EXIT_USAGE)
    raise AssertionError("unreachable")


def _run(ns: str | None, timeout: float, action: Callable[[Any], Awaitable[Any]]) -> Any:
    """Run ``action(client)`` against the cluster; map every failure to one line + exit code."""
    from nameservice import wire
    from nameservice.client import NameServiceClient
    from nameservice.errors import (
        KeyNotFound,
        LeaseNotFound,
        NameServiceError,
        OutcomeUnknown,
        RequestRejected,
        Unavailable,
    )

    addresses = _addresses(ns)

    async def main() -> Any:
        async with NameServiceClient(addresses, timeout=timeout,
                                     attempt_timeout=min(1.0, timeout)) as client:
            return await action(client)

    try:
        return asyncio.run(main())
    except (KeyNotFound, LeaseNotFound) as exc:
        _fail(str(exc), EXIT_NOT_FOUND)
    except Unavailable as exc:
        _fail(f"name service unavailable: {exc}", EXIT_FAILED)
    except OutcomeUnknown as exc:
        _fail(str(exc), EXIT_FAILED)
    except RequestRejected as exc:
        _fail(f"request refused: {exc}",
              EXIT_USAGE if exc.code == wire.ST_BAD_REQUEST else EXIT_FAILED)
    except (NameServiceError, ValueError, TypeError) as exc:
        _fail(str(exc), EXIT_FAILED)
    except KeyboardInterrupt:
        _fail("interrupted", EXIT_FAILED)


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _write_bytes(data: bytes) -> None:
    sys.stdout.buffer.write(data + b"\n")
    sys.stdout.flush()


class _OneLineErrors(click.Group):
    """A group whose usage errors are one line on stderr (exit 2), not a usage screen."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            command = ctx.command_path
            if exc.ctx is not None:
                command = exc.ctx.command_path
            _fail(f"{command}: {exc.format_message()}", EXIT_USAGE)


# ---------------------------------------------------------------------------- fabric ns


@click.group("ns", cls=_OneLineErrors)
def ns_group() -> None:
    """Run and inspect the name service (a replicated key-value store)."""


@ns_group.command("start")
@click.option("--id", "node_id", type=int, required=True, help="This node's id (in --cluster).")
@click.option("--cluster", required=True, metavar="ID=HOST:PORT,...",
              help="Every member: id and the address it listens on.")
@click.option("--data-dir", type=click.Path(file_okay=False),
              help="Where this node keeps its log and snapshots "
                   "[default: $XDG_DATA_HOME/fabric/ns/node-ID].")
@click.option("--election-timeout", default="150-300", show_default=True, metavar="LO-HI",
              help="Election timeout range in milliseconds.")
@click.option("--min-lease-ttl", type=float, default=1.0, show_default=True, metavar="S",
              help="Shortest lease TTL granted, at least 0.5 (the same on every node).")
@click.option("--cluster-name", default="default", show_default=True,
              help="The cluster name advertised with zeroconf.")
@click.option("--no-advertise", is_flag=True, help="Do not advertise this node with zeroconf.")
@click.option("--name", default="", metavar="NAME",
              help="The node's process name, for fabric drain / fabric status [default: ns-ID].")
@click.option("--control", default="", metavar="HOST:PORT",
              help="Where the control socket binds, port 0 for any [default: the node's host, "
                   "any port].")
def ns_start(node_id: int, cluster: str, data_dir: str | None, election_timeout: str,
             min_lease_ttl: float, cluster_name: str, no_advertise: bool, name: str,
             control: str) -> None:
    """Run one name-service node until SIGTERM, Ctrl-C or ``fabric drain NAME``."""
    from nameservice.address import parse_cluster
    from nameservice.errors import ConfigError
    from nameservice.server.config import NodeSettings, parse_min_lease_ttl, parse_timeout_range
    from nameservice.server.daemon import serve

    if data_dir is None:
        base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
        data_dir = os.path.join(base, "fabric", "ns", f"node-{node_id}")
    try:
        settings = NodeSettings(node_id, parse_cluster(cluster), data_dir,
                                parse_timeout_range(election_timeout),
                                min_lease_ttl_ms=parse_min_lease_ttl(min_lease_ttl),
                                cluster_name=cluster_name, advertise=not no_advertise,
                                name=name, control=control)
    except ConfigError as exc:
        _fail(str(exc), EXIT_USAGE)
    sys.exit(serve(settings))


@ns_group.command("local")
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
             election_timeout: str, cluster_name: str, no_advertise: bool) -> None:
    """Run a local cluster of NODES name-service processes until Ctrl-C or SIGTERM.

    Prints ``FABRIC_NS=HOST:PORT,...`` once every node listens.
    """
    from nameservice.errors import ConfigError, NameServiceError
    from nameservice.server.config import parse_timeout_range
    from nameservice.server.local import LocalCluster

    try:
        parse_timeout_range(election_timeout)
    except ConfigError as exc:
        _fail(str(exc), EXIT_USAGE)
    if base_port and base_port + nodes - 1 > 65535:
        _fail(f"--base-port {base_port} leaves no room for {nodes} nodes", EXIT_USAGE)
    ports = [base_port + i for i in range(nodes)] if base_port else None
    temp = None if data_dir else tempfile.TemporaryDirectory(prefix="fabric-ns-")
    directory = data_dir or (temp.name if temp is not None else "")
    stop = {"signal": False}

    def on_signal(signum: int, frame: object) -> None:
        stop["signal"] = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    cluster = LocalCluster(directory, nodes, host=host, ports=ports,
                           election_timeout=election_timeout,
                           cluster_name=None if no_advertise else cluster_name)
    code = 0
    try:
        try:
            cluster.start()
        except NameServiceError as exc:
            _fail(f"{exc}", EXIT_FAILED)
        click.echo(f"FABRIC_NS={cluster.ns_arg}", nl=True)
        sys.stdout.flush()
        while not stop["signal"]:
            if not all(cluster.running(i) for i in cluster.ids):
                dead = [i for i in cluster.ids if not cluster.running(i)]
                click.echo(f"fabric: node(s) {dead} exited; stopping the cluster", err=True)
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
    sys.exit(code)


@ns_group.command("status")
@_ns_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, one object per node.")
@_timeout_option
def ns_status(ns: str | None, as_json: bool, timeout: float) -> None:
    """Show every node: id, address, role, term, commit index, applied index, leader."""
    _addresses(ns)

    async def action(client) -> list[dict]:
        addresses[:] = client.channel.addresses

        async def one(address: str) -> dict:
            try:
                return await client.status(address, timeout=timeout)
            except Exception as exc:  # one row per node, whatever happened to it
                return {"address": address, "role": "unreachable", "error": str(exc)}

        return list(await asyncio.gather(*(one(a) for a in addresses)))

    addresses: list[str] = []
    rows = _run(ns, timeout, action)
    if as_json:
        click.echo(json.dumps(rows))
    else:
        click.echo(f"{'ID':>3} {'ADDRESS':<22} {'ROLE':<13} {'TERM':>6} {'COMMIT':>8} "
                   f"{'APPLIED':>8} LEADER")
        for r in rows:
            if r["role"] == "unreachable":
                click.echo(f"{'-':>3} {r['address']:<22} unreachable")
                continue
            click.echo(f"{r['id']:>3} {r['address']:<22} {r['role']:<13} {r['term']:>6} "
                       f"{r['commit_index']:>8} {r['applied_index']:>8} "
                       f"{r['leader_address'] or '-'}")
    if all(r["role"] == "unreachable" for r in rows):
        _fail(f"no node reachable at {', '.join(addresses)}", EXIT_FAILED)


# ---------------------------------------------------------------------------- fabric kv


@click.group("kv", cls=_OneLineErrors)
def kv_group() -> None:
    """Read and write keys in the name service."""


@kv_group.command("put")
@click.argument("key")
@click.argument("value")
@click.option("--ttl", type=click.FloatRange(min=0, min_open=True), metavar="S",
              help="Delete KEY after S seconds: it is attached to a new lease that nobody "
                   "renews (the cluster raises S to its minimum TTL).")
@click.option("--stale", is_flag=True,
              help="A quorum-less write: accepted by the node asked even without a quorum, "
                   "replicated when a leader is reachable (dropped if KEY changed meanwhile).")
@_ns_option
@_timeout_option
def kv_put(key: str, value: str, ttl: float | None, stale: bool, ns: str | None,
           timeout: float) -> None:
    """Set KEY to VALUE."""
    if ttl is not None and stale:
        raise click.UsageError("--ttl and --stale do not go together (a quorum-less write "
                               "cannot attach a lease)")

    async def action(client):
        if stale:
            return await client.put(key, value, consistent=False)
        lease = await client.lease_grant(ttl) if ttl is not None else 0
        if lease:
            click.echo(f"lease {lease}", err=True)
        return await client.put(key, value, lease=lease)

    result = _run(ns, timeout, action)
    if stale:
        click.echo("accepted (not yet replicated)", err=True)
    else:
        click.echo(f"revision {result.revision}", err=True)


@kv_group.command("get")
@click.argument("key")
@click.option("--stale", is_flag=True, help="Answer from the node asked, without a quorum round.")
@_ns_option
@_timeout_option
def kv_get(key: str, stale: bool, ns: str | None, timeout: float) -> None:
    """Print the value of KEY alone (exit 4 if it does not exist)."""
    from nameservice.errors import KeyNotFound

    async def action(client):
        kv = await client.get(key, consistent=not stale)
        if kv is None:
            raise KeyNotFound(key.encode())
        return kv

    _write_bytes(_run(ns, timeout, action).value)


@kv_group.command("del")
@click.argument("key")
@click.option("--stale", is_flag=True,
              help="A quorum-less delete (see kv put --stale); exit 4 if the node asked did "
                   "not have KEY.")
@_ns_option
@_timeout_option
def kv_del(key: str, stale: bool, ns: str | None, timeout: float) -> None:
    """Delete KEY (exit 4 if it did not exist)."""
    result = _run(ns, timeout, lambda c: c.delete(key, consistent=not stale))
    if not result.deleted:
        _fail(f"key not found: {key}", EXIT_NOT_FOUND)


@kv_group.command("cas")
@click.argument("key")
@click.option("--old", help="Swap only if KEY holds exactly this value.")
@click.option("--absent", is_flag=True, help="Swap only if KEY does not exist.")
@click.option("--new", required=True, help="The value to set.")
@_ns_option
@_timeout_option
def kv_cas(key: str, old: str | None, absent: bool, new: str, ns: str | None,
           timeout: float) -> None:
    """Compare-and-swap: set KEY to NEW if it holds OLD (exit 3 if it does not)."""
    if (old is None) == (not absent):
        raise click.UsageError("give exactly one of --old VALUE and --absent")
    if absent:
        result = _run(ns, timeout, lambda c: c.cas(key, new, expect_absent=True))
    else:
        result = _run(ns, timeout, lambda c: c.cas(key, new, expect_value=old))
    if not result.succeeded:
        found = "absent" if result.kv is None else repr(_text(result.kv.value))
        _fail(f"compare failed: {key} is {found}", EXIT_CAS_FAILED)


@kv_group.command("range")
@click.argument("prefix", default="")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of key-values.")
@click.option("--limit", type=click.IntRange(0), default=0, help="At most this many (0: all).")
@click.option("--stale", is_flag=True, help="Answer from the node asked, without a quorum round.")
@_ns_option
@_timeout_option
def kv_range(prefix: str, as_json: bool, limit: int, stale: bool, ns: str | None,
             timeout: float) -> None:
    """List the keys under PREFIX, sorted: ``KEY VALUE`` per line."""
    kvs = _run(ns, timeout, lambda c: c.range(prefix, limit=limit, consistent=not stale))
    if as_json:
        click.echo(json.dumps([
            {"key": _text(kv.key), "value": _text(kv.value),
             "create_revision": kv.create_revision, "mod_revision": kv.mod_revision,
             "version": kv.version, "lease": kv.lease} for kv in kvs]))
        return
    for kv in kvs:
        _write_bytes(kv.key + b" " + kv.value)


@kv_group.command("watch")
@click.argument("prefix", default="")
@click.option("--from-rev", "from_rev", type=click.IntRange(1), default=None,
              help="Start with the changes from this revision on (default: from now).")
@_ns_option
@_timeout_option
def kv_watch(prefix: str, from_rev: int | None, ns: str | None, timeout: float) -> None:
    """Print every change under PREFIX as it happens, until interrupted (Ctrl-C exits 0):
    ``REVISION put KEY VALUE`` or ``REVISION delete KEY`` per line."""

    async def action(client) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        watch = client.watch(prefix, start_revision=from_rev)

        async def show() -> None:
            async for event in watch:
                line = b"%d %s %s" % (event.revision, event.kind.encode(), event.kv.key)
                if event.kind == "put":
                    line += b" " + event.kv.value
                _write_bytes(line)

        printer = asyncio.ensure_future(show())
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({printer, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            printer.cancel()
            await watch.close()
        error = printer.exception() if printer.done() and not printer.cancelled() else None
        if error is not None and not isinstance(error, BrokenPipeError):
            raise error

    _run(ns, timeout, action)


# ---------------------------------------------------------------------------- fabric lease


@click.group("lease", cls=_OneLineErrors)
def lease_group() -> None:
    """Grant, renew and revoke leases (keys attached to a lease die with it)."""


@lease_group.command("grant")
@click.argument("ttl", type=click.FloatRange(min=0, min_open=True))
@_ns_option
@_timeout_option
def lease_grant(ttl: float, ns: str | None, timeout: float) -> None:
    """Grant a lease of TTL seconds; print its id (use it with nobody renewing: it expires)."""
    click.echo(_run(ns, timeout, lambda c: c.lease_grant(ttl)))


@lease_group.command("keepalive")
@click.argument("lease_id", type=click.IntRange(min=1))
@click.option("--once", is_flag=True, help="Renew once and exit (default: until Ctrl-C).")
@_ns_option
@_timeout_option
def lease_keepalive(lease_id: int, once: bool, ns: str | None, timeout: float) -> None:
    """Renew LEASE_ID every third of its TTL until Ctrl-C or SIGTERM (then exit 0; exit 4
    once the lease is gone)."""

    async def action(client):
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        while not stop.is_set():
            ttl = await client.lease_keepalive(lease_id)
            click.echo(f"lease {lease_id} renewed, ttl {ttl:g}")
            if once:
                return
            try:
                await asyncio.wait_for(stop.wait(), ttl / 3)
            except asyncio.TimeoutError:
                pass

    _run(ns, timeout, action)


@lease_group.command("revoke")
@click.argument("lease_id", type=click.IntRange(min=1))
@_ns_option
@_timeout_option
def lease_revoke(lease_id: int, ns: str | None, timeout: float) -> None:
    """Revoke LEASE_ID, deleting its keys (exit 4 if it did not exist)."""
    if not _run(ns, timeout, lambda c: c.lease_revoke(lease_id)):
        _fail(f"lease {lease_id} not found", EXIT_NOT_FOUND)
