"""Who may do what: the access rules, kept in the name service and checked by every server.

One rule per allowed public key, under ``security/keys/<key as 64 hex digits>`` → msgpack
``{"identity", "key", "role", "produce", "consume", "serve", "read", "write"}``:

* ``identity``: who holds the key. Two keys of one identity are both allowed (key rotation:
  allow the new key, move the process to it, revoke the old one — no gap in service).
* ``role``: ``admin`` (everything: keys, rules, members, draining any process), ``ns-peer`` (a
  name-service node: the Raft peer messages, and the whole store), ``intermediary`` or
  ``component``.
* ``produce``, ``consume``, ``serve``: the channels the key may send to, receive from, and
  serve as an intermediary (``*``: any).
* ``read``, ``write``: key-value prefixes it may read and write (``""``: every key).

Beyond its rule, every key may read the registry (``names/``), the channels' partition counts
(``partitions/``) and the rules themselves (``security/``: public keys and rights, which every
server needs to admit its peers), register processes (``names/process/``), keep leases and ask
for status; serving a channel implies writing its registry entries (``names/channel/C/``), and
serving or consuming it, declaring its partitions (``partitions/C``). A right on channel C
covers its partitions, ``C/p0``, ``C/p1``, ... Only ``admin`` and ``ns-peer`` keys write
``security/``. The user id a ZAP handler gives a connection is its public key (Z85),
so a server finds the rule of every message's sender.

The bootstrap: keys trusted by file (``DIR/trusted/``) are ``admin``, or ``ns-peer`` when their
certificate names a node address; the rules in the name service add to them. A revoked key
leaves a mark, ``security/revoked/<hex>``, that outweighs even the bootstrap.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgpack
from zmq.utils import z85

from nameservice.errors import ConfigError

__all__ = ["PREFIX", "REVOKED_PREFIX", "ROLES", "Rule", "Rules", "rule_key", "revoked_key",
           "decode_rule", "encode_rule", "key_of", "rule_fields"]

PREFIX = b"security/keys/"
REVOKED_PREFIX = b"security/revoked/"
ROLES = ("admin", "ns-peer", "intermediary", "component")
MAX_ITEMS = 256
"""Channels or prefixes one rule may list."""
_LISTS = ("produce", "consume", "serve", "read", "write")
_REGISTRY = b"names/"
_RULES = b"security/"
_PROCESSES = b"names/process/"
_CHANNELS = "names/channel/"
_PARTITIONS = "partitions/"
_PRIVILEGED = ("admin", "ns-peer")


@dataclass(frozen=True)
class Rule:
    """What one public key (Z85) may do."""

    identity: str
    key: bytes
    role: str
    produce: tuple[str, ...] = ()
    consume: tuple[str, ...] = ()
    serve: tuple[str, ...] = ()
    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()
    address: str = ""

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ConfigError(f"bad role {self.role!r}: one of {', '.join(ROLES)}")
        if len(self.key) != 40:
            raise ConfigError("a public key is 40 Z85 characters")
        for name in _LISTS:
            if len(getattr(self, name)) > MAX_ITEMS:
                raise ConfigError(f"more than {MAX_ITEMS} {name} items in one rule")

    @property
    def privileged(self) -> bool:
        """admin or ns-peer: the whole store."""
        return self.role in _PRIVILEGED

    def may_channel(self, action: str, channel: str) -> bool:
        """``action`` (produce, consume, serve) on ``channel``."""
        if self.role == "admin":
            return True
        allowed: tuple[str, ...] = getattr(self, action)
        if "*" in allowed or channel in allowed:
            return True
        # A right on channel C covers its partitions, C/p0, C/p1, ...
        base, sep, number = channel.rpartition("/p")
        return bool(sep) and number.isdigit() and base in allowed

    def may_read(self, key: bytes) -> bool:
        """Read ``key`` (or the keys from ``key``, for a prefix)."""
        if self.privileged or key.startswith(_REGISTRY) or key.startswith(_RULES) \
                or key.startswith(_PARTITIONS.encode()):
            return True
        return _under(key, self.read)

    def may_write(self, key: bytes) -> bool:
        """Write (put, delete) ``key`` (or the keys from ``key``, for a prefix)."""
        if self.privileged or key.startswith(_PROCESSES):
            return True
        if key.startswith(_RULES) or _RULES.startswith(key):
            return False  # the rules themselves: whatever prefix was granted
        if key.startswith(_CHANNELS.encode()):
            channel = key[len(_CHANNELS):].rpartition(b"/")[0].decode(errors="replace")
            if self.may_channel("serve", channel):
                return True
        if key.startswith(_PARTITIONS.encode()):  # declaring a channel's partitions
            channel = key[len(_PARTITIONS):].decode(errors="replace")
            if self.may_channel("consume", channel) or self.may_channel("serve", channel):
                return True
        return _under(key, self.write)


def _under(key: bytes, prefixes: tuple[str, ...]) -> bool:
    return any(key.startswith(prefix.encode()) for prefix in prefixes)


def rule_key(public: bytes) -> bytes:
    """Where the rule of ``public`` (Z85) is kept."""
    return PREFIX + z85.decode(public).hex().encode()


def revoked_key(public: bytes) -> bytes:
    """Where the revocation mark of ``public`` (Z85) is kept."""
    return REVOKED_PREFIX + z85.decode(public).hex().encode()


def key_of(stored_key: bytes) -> bytes | None:
    """The public key (Z85) a rule's or a mark's key-value key names; None if malformed."""
    hexed = stored_key.rpartition(b"/")[2]
    try:
        raw = bytes.fromhex(hexed.decode())
    except (UnicodeDecodeError, ValueError):
        return None
    return z85.encode(raw) if len(raw) == 32 else None


def rule_fields(rule: Rule) -> dict[str, Any]:
    """A rule as plain fields (what is stored, and what ``fabric keys list --json`` shows)."""
    fields: dict[str, Any] = {"identity": rule.identity, "key": rule.key.decode(),
                              "role": rule.role, "address": rule.address}
    for name in _LISTS:
        fields[name] = list(getattr(rule, name))
    return fields


def encode_rule(rule: Rule) -> bytes:
    """The stored form of a rule."""
    return msgpack.packb(rule_fields(rule), use_bin_type=True)


def decode_rule(value: bytes) -> Rule:
    """A stored rule; ConfigError if it is not one (written by hand, or damaged)."""
    try:
        fields = msgpack.unpackb(value, raw=False, max_array_len=MAX_ITEMS,
                                 max_map_len=16, max_str_len=4096)
    except Exception as exc:  # msgpack raises many kinds on garbage
        raise ConfigError(f"not a rule: {exc}") from None
    if not isinstance(fields, dict) or not all(
            isinstance(fields.get(name), str) for name in ("identity", "key", "role")):
        raise ConfigError("not a rule: identity, key and role must be strings")
    lists: dict[str, tuple[str, ...]] = {}
    for name in _LISTS:
        items = fields.get(name, [])
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise ConfigError(f"not a rule: {name} must be a list of strings")
        lists[name] = tuple(items)
    address = fields.get("address", "")
    return Rule(fields["identity"], fields["key"].encode(), fields["role"],
                address=address if isinstance(address, str) else "", **lists)


@dataclass
class Rules:
    """The rules in force: the bootstrap's, then the name service's (by public key, Z85)."""

    bootstrap: dict[bytes, Rule] = field(default_factory=dict)
    stored: dict[bytes, Rule] = field(default_factory=dict)
    revoked: frozenset[bytes] = frozenset()

    def rule(self, public: bytes) -> Rule | None:
        """The rule of a key (None: not allowed)."""
        if public in self.revoked:
            return None
        return self.stored.get(public) or self.bootstrap.get(public)

    def peers(self) -> dict[bytes, str]:
        """The allowed ns-peer keys → their ZAP user ids (a peer port admits only these)."""
        return {key: key.decode() for key in self.allowed()
                if (rule := self.rule(key)) is not None and rule.role == "ns-peer"}

    def allowed(self) -> dict[bytes, str]:
        """Every allowed key → its ZAP user id (the key itself)."""
        return {key: key.decode() for key in {*self.bootstrap, *self.stored} - self.revoked}
