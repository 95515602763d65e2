"""``fabric keys``: CurveZMQ key pairs (docs/security.md).

Exit codes: 0 done; 2 a bad name, or a pair of that name exists already (never overwritten).
"""
from __future__ import annotations

import os

import click

from fabric.cli.common import EXIT_USAGE, FabricCommand, fail


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
def keys_generate(name: str, directory: str | None, as_json: bool) -> None:
    """Write a new key pair NAME: DIR/NAME.key (the public key, to give to the peers that
    trust you) and DIR/NAME.key_secret (mode 0600), in ZeroMQ's certificate format. Prints
    the public key."""
    import json

    from nameservice.errors import ConfigError
    from nameservice.security.keys import generate

    directory = directory or _default_dir()
    try:
        pair = generate(directory, name)
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
