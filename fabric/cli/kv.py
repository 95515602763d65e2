"""``fabric kv`` (the name service's key-value store) and ``fabric lease``.

Exit codes (docs/operations.md): 0 done; 1 failed (unreachable, timed out: a write's outcome
may be unknown); 2 usage error; 3 CAS compare failed; 4 key or lease not found; 130
interrupted. Values are shown as fabric/cli/values.py says: text, a decoded registry entry,
or base64. With ``--json`` each command prints one JSON object (``kv range`` and ``kv get
--prefix`` a list; ``kv watch`` and ``lease keepalive`` one object per line).
"""
from __future__ import annotations

import sys
from typing import Any

import click

from fabric.cli.common import EXIT_CAS_FAILED, EXIT_NOT_FOUND, FabricCommand, fail

_timeout_option = click.option(
    "--timeout", type=click.FloatRange(min=0, min_open=True), default=5.0, show_default=True,
    metavar="S", help="Seconds before giving up (retries included).")
_stale_read = click.option("--stale", is_flag=True,
                           help="Answer from the node asked, without a quorum round.")


def _run(ns: str | None, timeout: float, action: Any) -> Any:
    from fabric.cli.nsclient import run

    return run(ns, timeout, action)


def _echo_json(value: Any) -> None:
    import json

    click.echo(json.dumps(value))


def _line(text: str) -> None:
    """One line of text on stdout, whatever the locale (a value may be any UTF-8)."""
    sys.stdout.buffer.write(text.encode("utf-8", "surrogateescape") + b"\n")
    sys.stdout.flush()


@click.group("kv")
def kv_group() -> None:
    """Read and write keys in the name service."""


@kv_group.command("put", cls=FabricCommand, ns=True)
@click.argument("key")
@click.argument("value")
@click.option("--ttl", type=click.FloatRange(min=0, min_open=True), metavar="S",
              help="Delete KEY after S seconds: it is attached to a new lease that nobody "
                   "renews (the cluster raises S to its minimum TTL).")
@click.option("--lease", "lease_id", type=click.IntRange(min=1), metavar="ID",
              help="Attach KEY to this existing lease (fabric lease grant): it is deleted "
                   "when the lease ends (exit 4 if the lease does not exist).")
@click.option("--stale", is_flag=True,
              help="A quorum-less write: accepted by the node asked even without a quorum, "
                   "replicated when a leader is reachable (dropped if KEY changed meanwhile).")
@_timeout_option
def kv_put(key: str, value: str, ttl: float | None, lease_id: int | None, stale: bool,
           ns: str | None, as_json: bool, timeout: float) -> None:
    """Set KEY to VALUE; the new revision goes to stderr (--json: stdout)."""
    if sum((ttl is not None, lease_id is not None, stale)) > 1:
        raise click.UsageError("give at most one of --ttl, --lease and --stale (a quorum-less "
                               "write cannot attach a lease)")

    async def action(client: Any) -> tuple[Any, int]:
        if stale:
            return await client.put(key, value, consistent=False), 0
        lease = await client.lease_grant(ttl) if ttl is not None else lease_id or 0
        return await client.put(key, value, lease=lease), lease

    result, lease = _run(ns, timeout, action)
    if as_json:
        _echo_json({"revision": result.revision, "lease": lease, "replicated": not stale})
    elif stale:
        click.echo("accepted (not yet replicated)", err=True)
    else:
        if ttl is not None:
            click.echo(f"lease {lease}", err=True)
        click.echo(f"revision {result.revision}", err=True)


@kv_group.command("get", cls=FabricCommand, ns=True)
@click.argument("key")
@click.option("--prefix", is_flag=True,
              help="Every key starting with KEY, sorted (as kv range): KEY VALUE per line.")
@click.option("--limit", type=click.IntRange(0), default=0, metavar="N",
              help="With --prefix: at most N keys (0: all).")
@_stale_read
@_timeout_option
def kv_get(key: str, prefix: bool, limit: int, stale: bool, ns: str | None, as_json: bool,
           timeout: float) -> None:
    """Print the value of KEY alone (exit 4 if it does not exist).

    --json prints the key-value with its revisions; --prefix lists keys as kv range does.
    """
    if prefix:
        _print_range(_run(ns, timeout, lambda c: c.range(key, limit=limit,
                                                         consistent=not stale)), as_json)
        return
    from fabric.cli.values import kv_json, value_text

    async def action(client: Any) -> Any:
        kv = await client.get(key, consistent=not stale)
        if kv is None:
            from nameservice.errors import KeyNotFound

            raise KeyNotFound(key.encode())
        return kv

    kv = _run(ns, timeout, action)
    if as_json:
        _echo_json(kv_json(kv))
    else:
        _line(value_text(kv))


@kv_group.command("del", cls=FabricCommand, ns=True)
@click.argument("key")
@click.option("--prefix", is_flag=True,
              help="Delete every key starting with KEY (which must not be empty).")
@click.option("--stale", is_flag=True,
              help="A quorum-less delete of KEY (see kv put --stale); exit 4 if the node asked "
                   "did not have it.")
@_timeout_option
def kv_del(key: str, prefix: bool, stale: bool, ns: str | None, as_json: bool,
           timeout: float) -> None:
    """Delete KEY (exit 4 if nothing was deleted); how many, and the revision, go to stderr
    (--json: stdout)."""
    if prefix and stale:
        raise click.UsageError("--prefix and --stale do not go together (a quorum-less "
                               "delete is of one key)")
    if prefix and not key:
        raise click.UsageError("--prefix needs a non-empty prefix (it would delete every key)")
    if prefix:
        result = _run(ns, timeout, lambda c: c.delete_prefix(key))
    else:
        result = _run(ns, timeout, lambda c: c.delete(key, consistent=not stale))
    if as_json:
        _echo_json({"deleted": result.deleted, "revision": result.revision})
    if not result.deleted:
        fail(f"key not found: {key}{' (prefix)' if prefix else ''}", EXIT_NOT_FOUND)
    if not as_json:
        click.echo(f"deleted {result.deleted}" + (f", revision {result.revision}"
                                                  if result.revision else ""), err=True)


@kv_group.command("cas", cls=FabricCommand, ns=True)
@click.argument("key")
@click.option("--old", help="Swap only if KEY holds exactly this value.")
@click.option("--absent", is_flag=True, help="Swap only if KEY does not exist.")
@click.option("--new", required=True, help="The value to set.")
@_timeout_option
def kv_cas(key: str, old: str | None, absent: bool, new: str, ns: str | None, as_json: bool,
           timeout: float) -> None:
    """Compare-and-swap: set KEY to NEW if it holds OLD (exit 3 if it does not)."""
    from fabric.cli.values import kv_json, value_text

    if (old is None) == (not absent):
        raise click.UsageError("give exactly one of --old VALUE and --absent")
    if absent:
        result = _run(ns, timeout, lambda c: c.cas(key, new, expect_absent=True))
    else:
        result = _run(ns, timeout, lambda c: c.cas(key, new, expect_value=old))
    if as_json:
        _echo_json({"succeeded": result.succeeded, "revision": result.revision,
                    "current": None if result.kv is None else kv_json(result.kv)})
    if not result.succeeded:
        found = "absent" if result.kv is None else repr(value_text(result.kv))
        fail(f"compare failed: {key} is {found}", EXIT_CAS_FAILED)
    if not as_json:
        click.echo(f"revision {result.revision}", err=True)


@kv_group.command("range", cls=FabricCommand, ns=True)
@click.argument("prefix", default="")
@click.option("--limit", type=click.IntRange(0), default=0, metavar="N",
              help="At most N keys (0: all).")
@_stale_read
@_timeout_option
def kv_range(prefix: str, limit: int, stale: bool, ns: str | None, as_json: bool,
             timeout: float) -> None:
    """List the keys under PREFIX, sorted: ``KEY VALUE`` per line (--json: a list)."""
    _print_range(_run(ns, timeout, lambda c: c.range(prefix, limit=limit,
                                                     consistent=not stale)), as_json)


def _print_range(kvs: list[Any], as_json: bool) -> None:
    from fabric.cli.values import key_text, kv_json, value_text

    if as_json:
        _echo_json([kv_json(kv) for kv in kvs])
        return
    for kv in kvs:
        _line(f"{key_text(kv.key)} {value_text(kv)}")


@kv_group.command("watch", cls=FabricCommand, ns=True)
@click.argument("prefix", default="")
@click.option("--from-rev", "from_rev", type=click.IntRange(1), default=None, metavar="REV",
              help="Start with the changes from this revision on (default: from now).")
@_timeout_option
def kv_watch(prefix: str, from_rev: int | None, ns: str | None, as_json: bool,
             timeout: float) -> None:
    """Print every change under PREFIX as it happens, until SIGTERM (exit 0) or Ctrl-C
    (exit 130): ``REVISION put KEY VALUE`` or ``REVISION delete KEY`` per line (--json: one
    object per line)."""
    import asyncio
    import signal

    from fabric.cli.values import key_fields, key_text, value_fields, value_text

    def show(event: Any) -> None:
        kv = event.kv
        if as_json:
            line: dict[str, Any] = {"revision": event.revision, "type": event.kind,
                                    **key_fields(kv.key)}
            if event.kind == "put":
                line.update(value_fields(kv), create_revision=kv.create_revision,
                            version=kv.version, lease=kv.lease)
            _echo_json(line)
        else:
            text = f"{event.revision} {event.kind} {key_text(kv.key)}"
            _line(text + (f" {value_text(kv)}" if event.kind == "put" else ""))

    async def action(client: Any) -> None:
        stop = asyncio.Event()
        # SIGTERM ends the watch cleanly; Ctrl-C interrupts it (KeyboardInterrupt: 130).
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        watch = client.watch(prefix, start_revision=from_rev)

        async def printer() -> None:
            async for event in watch:
                show(event)

        printing = asyncio.ensure_future(printer())
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({printing, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            printing.cancel()
            await watch.close()
        if printing.done() and not printing.cancelled() and printing.exception() is not None:
            raise printing.exception()  # type: ignore[misc]

    _run(ns, timeout, action)


# ---------------------------------------------------------------------------- fabric lease


@click.group("lease")
def lease_group() -> None:
    """Grant, renew and revoke leases (keys attached to a lease die with it)."""


@lease_group.command("grant", cls=FabricCommand, ns=True)
@click.argument("ttl", type=click.FloatRange(min=0, min_open=True))
@_timeout_option
def lease_grant(ttl: float, ns: str | None, as_json: bool, timeout: float) -> None:
    """Grant a lease of TTL seconds; print its id (use it with nobody renewing: it expires)."""
    lease_id = _run(ns, timeout, lambda c: c.lease_grant(ttl))
    if as_json:
        _echo_json({"id": lease_id, "ttl": ttl})
    else:
        click.echo(lease_id)


@lease_group.command("keepalive", cls=FabricCommand, ns=True)
@click.argument("lease_id", type=click.IntRange(min=1))
@click.option("--once", is_flag=True, help="Renew once and exit (default: until stopped).")
@_timeout_option
def lease_keepalive(lease_id: int, once: bool, ns: str | None, as_json: bool,
                    timeout: float) -> None:
    """Renew LEASE_ID every third of its TTL until SIGTERM (exit 0) or Ctrl-C (exit 130);
    exit 4 once the lease is gone."""
    import asyncio
    import signal

    async def action(client: Any) -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        while not stop.is_set():
            ttl = await client.lease_keepalive(lease_id)
            if as_json:
                _echo_json({"id": lease_id, "ttl": ttl})
            else:
                click.echo(f"lease {lease_id} renewed, ttl {ttl:g}")
            if once:
                return
            try:
                await asyncio.wait_for(stop.wait(), ttl / 3)
            except asyncio.TimeoutError:
                pass

    _run(ns, timeout, action)


@lease_group.command("revoke", cls=FabricCommand, ns=True)
@click.argument("lease_id", type=click.IntRange(min=1))
@_timeout_option
def lease_revoke(lease_id: int, ns: str | None, as_json: bool, timeout: float) -> None:
    """Revoke LEASE_ID, deleting its keys (exit 4 if it did not exist)."""
    found = _run(ns, timeout, lambda c: c.lease_revoke(lease_id))
    if as_json:
        _echo_json({"id": lease_id, "revoked": found})
    if not found:
        fail(f"lease {lease_id} not found", EXIT_NOT_FOUND)
