"""Key pairs in ZeroMQ's certificate format, and the key directory a process is given.

A key directory (``--keys DIR`` / ``FABRIC_KEYS``) holds the process's own pair — exactly one
``NAME.key_secret`` (mode 0600: refused if others may read it) with its ``NAME.key`` — and, in
``DIR/trusted/``, the public keys it trusts to bootstrap (``*.key``). The files are ZeroMQ's
certificate format (``zmq.auth.load_certificate`` reads them; so does every other ZeroMQ
binding's ``zcert``):

    metadata
        name = "NAME"
        address = "HOST:PORT"                  (a name-service node's, optional)
    curve
        public-key = "<40 Z85 characters>"
        secret-key = "<40 Z85 characters>"     (the secret file only)

A trusted certificate with an ``address`` is a name-service node's: it says which key the
node listening there must prove it holds, as ``known_hosts`` does for ssh. The keys trusted
beyond the bootstrap live in the name service (docs/security.md); files are only where a
process starts from.
"""
from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

import zmq
import zmq.auth

from nameservice.address import parse_address
from nameservice.errors import ConfigError

__all__ = ["KeyPair", "Keys", "generate", "load_keys", "check_name", "read_public"]

_BANNER = ("#   ZeroMQ CURVE {kind} certificate, made by fabric keys generate\n"
           "#   {warning}\n\n")


@dataclass(frozen=True)
class KeyPair:
    """A CURVE key pair, both keys Z85-encoded (40 ASCII bytes each)."""

    name: str
    public: bytes
    secret: bytes = field(repr=False)


@dataclass(frozen=True)
class Keys:
    """What a process was given: its own pair and the public keys it trusts (name -> key)."""

    own: KeyPair
    trusted: dict[str, bytes]
    nodes: dict[str, bytes] = field(default_factory=dict)
    """Name-service nodes' keys by the ``HOST:PORT`` they listen on (trusted certificates
    with an ``address``)."""


def check_name(name: str) -> str:
    """A key name: 1 to 64 letters, digits, '-', '_' or '.' (not starting with '.')."""
    if not 0 < len(name) <= 64 or name.startswith(".") or not all(
            c.isalnum() or c in "-_." for c in name):
        raise ConfigError(f"bad key name {name!r}: use 1 to 64 letters, digits, '-', '_' or "
                          f"'.', not starting with '.'")
    return name


def _certificate(kind: str, warning: str, name: str, public: bytes,
                 secret: bytes | None, address: str | None) -> bytes:
    lines = [_BANNER.format(kind=kind, warning=warning), "metadata\n", f'    name = "{name}"\n']
    if address is not None:
        lines.append(f'    address = "{address}"\n')
    lines += ["curve\n", f'    public-key = "{public.decode()}"\n']
    if secret is not None:
        lines.append(f'    secret-key = "{secret.decode()}"\n')
    return "".join(lines).encode()


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode`` (never wider, whatever the umask) and ``data``, durably;
    FileExistsError if it exists."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def generate(directory: str | os.PathLike[str], name: str,
             address: str | None = None) -> KeyPair:
    """Make a new key pair ``NAME`` in ``directory`` (created 0700 if missing): ``NAME.key``
    (public, 0644) and ``NAME.key_secret`` (0600). ``address`` (``HOST:PORT``) marks a
    name-service node's pair with where it listens. ConfigError if either file exists."""
    check_name(name)
    if address is not None:
        parse_address(address)
    path = Path(directory)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    public_file, secret_file = path / f"{name}.key", path / f"{name}.key_secret"
    for existing in (public_file, secret_file):
        if existing.exists():
            raise ConfigError(f"{existing} exists: a key pair is never overwritten")
    public, secret = zmq.curve_keypair()
    _write_new(secret_file, _certificate("**Secret**", "keep it to yourself: mode 0600",
                                         name, public, secret, address), 0o600)
    _write_new(public_file, _certificate("Public", "give this file to the peers that trust "
                                         "you", name, public, None, address), 0o644)
    return KeyPair(name, public, secret)


_ADDRESS = re.compile(r'^\s+address\s*=\s*"([^"]*)"\s*$', re.MULTILINE)


def _address(path: Path) -> str | None:
    """The ``address`` in a certificate's metadata (None: none); ConfigError if malformed."""
    found = _ADDRESS.search(path.read_text(errors="replace"))
    if found is None:
        return None
    try:
        parse_address(found.group(1))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return found.group(1)


def _load(path: Path, want_secret: bool) -> tuple[bytes, bytes | None]:
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the key file {path}: {exc}") from None
    if len(public) != 40 or (want_secret and (secret is None or len(secret) != 40)):
        raise ConfigError(f"{path} is not a CURVE certificate (Z85 keys of 40 characters)")
    return public, secret


def read_public(path: str | os.PathLike[str]) -> bytes:
    """The public key (Z85) of a certificate file; ConfigError if it is not one."""
    return _load(Path(path), False)[0]


def load_keys(directory: str | os.PathLike[str]) -> Keys:
    """The key directory's own pair and trusted keys; ConfigError, in one line, for anything
    wrong (no directory, no or several secret keys, a secret key others may read, a file
    that is not a certificate)."""
    path = Path(directory)
    if not path.is_dir():
        raise ConfigError(f"key directory {path} does not exist (make one with "
                          f"`fabric keys generate NAME --dir {path}`)")
    secrets = sorted(path.glob("*.key_secret"))
    if len(secrets) != 1:
        raise ConfigError(f"key directory {path} must hold exactly one *.key_secret file, "
                          f"found {len(secrets)}")
    secret_file = secrets[0]
    mode = stat.S_IMODE(secret_file.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(f"{secret_file} may be read by others (mode {mode:04o}): "
                          f"chmod 600 {secret_file}")
    public, secret = _load(secret_file, True)
    assert secret is not None  # checked by _load
    own = KeyPair(secret_file.name[:-len(".key_secret")], public, secret)
    trusted: dict[str, bytes] = {}
    nodes: dict[str, bytes] = {}
    own_address = _address(secret_file)
    if own_address is not None:
        nodes[own_address] = public
    trusted_dir = path / "trusted"
    if trusted_dir.is_dir():
        for key_file in sorted(trusted_dir.glob("*.key")):
            trusted[key_file.name[:-len(".key")]] = key = _load(key_file, False)[0]
            address = _address(key_file)
            if address is not None:
                if nodes.get(address, key) != key:
                    raise ConfigError(f"two different keys for the name-service node at "
                                      f"{address} in {path}")
                nodes[address] = key
    return Keys(own, trusted, nodes)
