"""``fabric keys``: CurveZMQ key pairs, and which keys the cluster allows (docs/security.md).

Exit codes: 0 done; 2 a bad name, key or role, or a pair of that name exists already (never
overwritten); 4 ``revoke`` of a key or identity with no rule; 1 the name service failed.
"""
from __future__ import annotations

import json
import os
from typing import Any

import click

from fabric.cli.common import EXIT_NOT_FOUND, EXIT_USAGE, FabricCommand, fail


@click.group("keys")
def keys_group() -> None:
    """Make and inspect CurveZMQ key pairs."""


def _default_dir() -> str:
    return os.environ.get("FABRIC_KEYS") or os.path.expanduser("~/.config/fabric/keys")


@keys_group.command("generate", cls=FabricCommand)
@click.argument("name")
@click.option("--dir", "directory", metavar="DIR", default=None,
              help="Where the pair is written [default: $FABRIC_KEYS, else "
                   "~/.config/fabric/keys].")
@click.option("--address", metavar="HOST:PORT", default=None,
              help="A name-service node's pair: the address it listens on, written in the "
                   "certificate (clients that trust it know which key that node must hold).")
def keys_generate(name: str, directory: str | None, address: str | None,
                  as_json: bool) -> None:
    """Write a new key pair NAME: DIR/NAME.key (the public key, to give to the peers that
    trust you) and DIR/NAME.key_secret (mode 0600), in ZeroMQ's certificate format. Prints
    the public key."""
    from nameservice.errors import ConfigError
    from nameservice.security.keys import generate

    directory = directory or _default_dir()
    try:
        pair = generate(directory, name, address)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    except OSError as exc:
        fail(f"cannot write the key pair in {directory}: {exc.strerror or exc}", EXIT_USAGE)
    public_file = os.path.join(directory, f"{name}.key")
    if as_json:
        click.echo(json.dumps({"name": name, "public_key": pair.public.decode(),
                               "public_file": public_file,
                               "secret_file": public_file + "_secret"}))
    else:
        click.echo(pair.public.decode())


_timeout_option = click.option(
    "--timeout", type=click.FloatRange(min=0, min_open=True), default=5.0, show_default=True,
    metavar="S", help="Seconds before giving up (retries included).")


def _public_key(text: str) -> bytes:
    """A public key given as 40 Z85 characters or as a certificate file; exits 2 otherwise."""
    from nameservice.errors import ConfigError
    from nameservice.security.keys import read_public

    if len(text) == 40 and not os.path.exists(text):
        return text.encode()
    try:
        return read_public(text)
    except ConfigError as exc:
        fail(f"{exc} (give a public key: 40 Z85 characters, or a NAME.key file)", EXIT_USAGE)


@keys_group.command("allow", cls=FabricCommand, ns=True)
@click.argument("identity")
@click.argument("key")
@click.option("--role", type=click.Choice(["admin", "ns-peer", "intermediary", "component"]),
              default=None, help="What the key is [default: the role of IDENTITY's other key, "
                                 "whose rights it then takes too: a rotation].")
@click.option("--produce", multiple=True, metavar="CHANNEL", help="May send on CHANNEL ('*': "
              "any); repeat for more.")
@click.option("--consume", multiple=True, metavar="CHANNEL", help="May receive from CHANNEL.")
@click.option("--serve", multiple=True, metavar="CHANNEL",
              help="May serve CHANNEL as an intermediary (and register it).")
@click.option("--read", multiple=True, metavar="PREFIX", help="May read keys under PREFIX.")
@click.option("--write", multiple=True, metavar="PREFIX", help="May write keys under PREFIX.")
@click.option("--address", default="", metavar="HOST:PORT",
              help="An ns-peer's node address (clients then know its key).")
@_timeout_option
def keys_allow(identity: str, key: str, role: str | None, produce: tuple[str, ...],
               consume: tuple[str, ...], serve: tuple[str, ...], read: tuple[str, ...],
               write: tuple[str, ...], address: str, ns: str | None, as_json: bool,
               timeout: float) -> None:
    """Allow KEY (40 Z85 characters — after '--' if it starts with '-' — or a NAME.key
    file) as IDENTITY, cluster-wide: every
    process admits it from the next change of the rules on (within a second). A second key
    for an IDENTITY, given no --role, takes the first one's role and rights: allow the new key,
    move the process to it, then revoke the old one."""
    from fabric.cli.nsclient import run
    from nameservice.errors import ConfigError
    from nameservice.security.keys import check_name
    from nameservice.security.rules import Rule, encode_rule, revoked_key, rule_fields, rule_key

    public = _public_key(key)
    try:
        check_name(identity)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)

    async def action(client: Any) -> Rule:
        rights: dict[str, Any] = {"produce": produce, "consume": consume, "serve": serve,
                                  "read": read, "write": write, "address": address}
        chosen = role
        if chosen is None:
            sibling = next((r for r in (await _stored(client))[0] if r.identity == identity), None)
            if sibling is None:
                raise ConfigError(f"{identity} has no key yet: give its --role")
            chosen = sibling.role
            if not any((produce, consume, serve, read, write, address)):
                rights = {name: getattr(sibling, name) for name in rights}
        rule = Rule(identity, public, chosen, **rights)
        await client.delete(revoked_key(public))
        await client.put(rule_key(public), encode_rule(rule))
        return rule

    rule = run(ns, timeout, action)
    if as_json:
        click.echo(json.dumps(rule_fields(rule)))
    else:
        click.echo(f"allowed {rule.key.decode()} as {rule.identity} ({rule.role})", err=True)


@keys_group.command("revoke", cls=FabricCommand, ns=True)
@click.argument("what")
@_timeout_option
def keys_revoke(what: str, ns: str | None, as_json: bool, timeout: float) -> None:
    """Revoke WHAT — a public key (or NAME.key file), or an identity (all its keys): every
    process refuses it from then on and cuts its open connections (within a second). Also
    revokes a key trusted by file (bootstrap). A key that starts with '-' goes after '--'."""
    from fabric.cli.nsclient import run
    from nameservice.security.rules import encode_rule, revoked_key, rule_key

    async def action(client: Any) -> list[bytes]:
        rules = (await _stored(client))[0]
        if len(what) == 40 or os.path.exists(what):
            keys = [_public_key(what)]
        else:
            keys = [r.key for r in rules if r.identity == what]
        by_key = {r.key: r for r in rules}
        for public in keys:
            kept = by_key.get(public)
            mark = encode_rule(kept) if kept is not None else b""
            await client.put(revoked_key(public), mark)
            await client.delete(rule_key(public))
        return keys

    keys = run(ns, timeout, action)
    if not keys:
        fail(f"no key is allowed as {what}", EXIT_NOT_FOUND)
    if as_json:
        click.echo(json.dumps({"revoked": [k.decode() for k in keys]}))
    else:
        for public in keys:
            click.echo(f"revoked {public.decode()}", err=True)


@keys_group.command("list", cls=FabricCommand, ns=True)
@_timeout_option
def keys_list(ns: str | None, as_json: bool, timeout: float) -> None:
    """The keys the cluster allows (beyond each process's bootstrap files), and those revoked:
    one line each, IDENTITY ROLE KEY RIGHTS (--json: one object)."""
    from fabric.cli.nsclient import run
    from nameservice.security.rules import rule_fields

    async def action(client: Any) -> tuple[list, list]:
        stored, revoked = await _stored(client)
        return sorted(stored, key=lambda r: (r.identity, r.key)), sorted(revoked)

    rules, revoked = run(ns, timeout, action)
    if as_json:
        click.echo(json.dumps({"allowed": [rule_fields(r) for r in rules],
                               "revoked": [k.decode() for k in revoked]}))
        return
    for rule in rules:
        rights = " ".join(f"{name}={','.join(getattr(rule, name))}"
                          for name in ("produce", "consume", "serve", "read", "write")
                          if getattr(rule, name))
        click.echo(f"{rule.identity} {rule.role} {rule.key.decode()} {rights}".rstrip())
    for public in revoked:
        click.echo(f"- revoked {public.decode()}")


async def _stored(client: Any) -> tuple[list, frozenset[bytes]]:
    """The rules the name service holds, and the keys revoked."""
    from nameservice.security.follow import ROOT, rules_from

    stored, revoked, _bad = rules_from({kv.key: kv.value for kv in await client.range(ROOT)})
    return list(stored.values()), revoked
