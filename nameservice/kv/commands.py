"""Commands the key-value state machine applies, as frozen slotted dataclasses.

A Raft log entry holds one encoded command (see ``codec``). Client commands travel inside a
``Request`` that names the client's session ``(client_id, seq)`` so the state machine can answer
a retry with the original result; the leader's own commands (``LeaseExpire``) and
``OpenSession`` travel bare. A ``Batch`` packs many of them into one log entry; each item is
applied in order exactly as if it had its own entry.

Every constructor validates its fields (types and bounds), so a command that exists is a valid
command; decoding untrusted bytes goes through the same checks. Keys and values are ``bytes``;
``str`` is accepted at construction and stored encoded as UTF-8.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

__all__ = [
    "MAX_KEY_BYTES",
    "MAX_VALUE_BYTES",
    "MAX_BATCH_ITEMS",
    "Put",
    "Delete",
    "DeleteRange",
    "Cas",
    "StaleWrite",
    "LeaseGrant",
    "LeaseRevoke",
    "LeaseExpire",
    "OpenSession",
    "CloseSession",
    "Request",
    "Batch",
    "Command",
    "Proposal",
]

MAX_KEY_BYTES = 4096
"""Longest key accepted, in bytes."""
MAX_VALUE_BYTES = 1 << 20
"""Largest value accepted, in bytes."""
MAX_BATCH_ITEMS = 1 << 16
"""Most items one ``Batch`` may carry."""
_MAX_INT = (1 << 63) - 1
_MAX_TTL_MS = 1 << 40


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)


def _check_bytes(obj: object, name: str, limit: int, *, allow_empty: bool = False) -> None:
    value = getattr(obj, name)
    if type(value) is not bytes:
        if isinstance(value, str):
            value = value.encode("utf-8")
        elif isinstance(value, (bytearray, memoryview)):
            value = bytes(value)
        else:
            raise TypeError(f"{name} must be bytes or str, got {type(value).__name__}")
        _set(obj, name, value)
    if len(value) > limit:
        raise ValueError(f"{name} is {len(value)} bytes, more than the limit of {limit}")
    if not value and not allow_empty:
        raise ValueError(f"{name} must not be empty")


def _check_optional_value(obj: object, name: str) -> None:
    if getattr(obj, name) is not None:
        _check_bytes(obj, name, MAX_VALUE_BYTES, allow_empty=True)


def _check_int(obj: object, name: str, low: int, high: int = _MAX_INT) -> None:
    value = getattr(obj, name)
    if type(value) is not int:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")


def _check_bool(obj: object, name: str) -> None:
    if type(getattr(obj, name)) is not bool:
        raise TypeError(f"{name} must be a bool")


@dataclass(frozen=True, slots=True)
class Put:
    """Set ``key`` to ``value``. ``lease`` (0: none) attaches the key to a lease, replacing any
    lease it had; ``prev_kv`` asks for the previous key-value in the result."""

    key: bytes
    value: bytes
    lease: int = 0
    prev_kv: bool = False

    def __post_init__(self) -> None:
        key, value, lease = self.key, self.value, self.lease
        if (  # the common case in one test; the checks below explain any failure
            type(key) is bytes
            and 0 < len(key) <= MAX_KEY_BYTES
            and type(value) is bytes
            and len(value) <= MAX_VALUE_BYTES
            and type(lease) is int
            and 0 <= lease <= _MAX_INT
            and type(self.prev_kv) is bool
        ):
            return
        _check_bytes(self, "key", MAX_KEY_BYTES)
        _check_bytes(self, "value", MAX_VALUE_BYTES, allow_empty=True)
        _check_int(self, "lease", 0)
        _check_bool(self, "prev_kv")


@dataclass(frozen=True, slots=True)
class Delete:
    """Delete ``key`` (deleting a missing key changes nothing)."""

    key: bytes

    def __post_init__(self) -> None:
        _check_bytes(self, "key", MAX_KEY_BYTES)


@dataclass(frozen=True, slots=True)
class DeleteRange:
    """Delete every key that starts with ``prefix`` (the empty prefix deletes every key)."""

    prefix: bytes

    def __post_init__(self) -> None:
        _check_bytes(self, "prefix", MAX_KEY_BYTES, allow_empty=True)


@dataclass(frozen=True, slots=True)
class Cas:
    """Compare-and-swap: if the condition holds, set ``key`` to ``value`` (or delete it when
    ``value`` is None); otherwise change nothing.

    Exactly one condition: ``expect_value`` (the current value equals it), ``expect_mod_revision``
    (the key's mod_revision equals it; 0 means the key is absent) or ``expect_absent=True``.
    """

    key: bytes
    value: bytes | None
    expect_value: bytes | None = None
    expect_mod_revision: int | None = None
    expect_absent: bool = False
    lease: int = 0

    def __post_init__(self) -> None:
        _check_bytes(self, "key", MAX_KEY_BYTES)
        _check_optional_value(self, "value")
        _check_optional_value(self, "expect_value")
        if self.expect_mod_revision is not None:
            _check_int(self, "expect_mod_revision", 0)
        _check_bool(self, "expect_absent")
        _check_int(self, "lease", 0)
        conditions = (
            (self.expect_value is not None)
            + (self.expect_mod_revision is not None)
            + self.expect_absent
        )
        if conditions != 1:
            raise ValueError(
                "Cas needs exactly one of expect_value, expect_mod_revision, expect_absent"
            )
        if self.value is None and self.lease:
            raise ValueError("a Cas that deletes cannot attach a lease")


@dataclass(frozen=True, slots=True)
class StaleWrite:
    """A write a node accepted without a quorum, replayed through the log once it has one.

    Applied only if the key's mod_revision (0: absent) still equals ``base_mod_revision``, the
    revision the accepting node had applied for that key; otherwise it is a conflict and changes
    nothing. ``value`` None deletes the key. See docs/kv.md, "Quorum-less writes".
    """

    key: bytes
    value: bytes | None
    base_mod_revision: int

    def __post_init__(self) -> None:
        _check_bytes(self, "key", MAX_KEY_BYTES)
        _check_optional_value(self, "value")
        _check_int(self, "base_mod_revision", 0)


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    """Create lease ``id`` (0: the state machine picks the next free id) with ``ttl_ms``.

    The TTL is only recorded: the leader's clock decides when a lease expires and proposes
    ``LeaseExpire``. A TTL below the configured minimum is raised to it.
    """

    id: int
    ttl_ms: int

    def __post_init__(self) -> None:
        _check_int(self, "id", 0)
        _check_int(self, "ttl_ms", 1, _MAX_TTL_MS)


@dataclass(frozen=True, slots=True)
class LeaseRevoke:
    """Revoke lease ``id`` at a client's request, deleting every key attached to it."""

    id: int

    def __post_init__(self) -> None:
        _check_int(self, "id", 1)


@dataclass(frozen=True, slots=True)
class LeaseExpire:
    """Expire lease ``id`` (proposed by the leader when its deadline passed); same effect as
    ``LeaseRevoke``. Expiring a lease that is gone (revoked meanwhile) changes nothing."""

    id: int

    def __post_init__(self) -> None:
        _check_int(self, "id", 1)


@dataclass(frozen=True, slots=True)
class OpenSession:
    """Open a client session; the result carries the new ``client_id``."""


@dataclass(frozen=True, slots=True)
class CloseSession:
    """Close session ``client_id`` and drop its remembered results."""

    client_id: int

    def __post_init__(self) -> None:
        _check_int(self, "client_id", 1)


Command = Union[
    Put,
    Delete,
    DeleteRange,
    Cas,
    StaleWrite,
    LeaseGrant,
    LeaseRevoke,
    LeaseExpire,
    OpenSession,
    CloseSession,
]
"""Any single command."""

_COMMAND_TYPES = (
    Put,
    Delete,
    DeleteRange,
    Cas,
    StaleWrite,
    LeaseGrant,
    LeaseRevoke,
    LeaseExpire,
    OpenSession,
    CloseSession,
)


@dataclass(frozen=True, slots=True)
class Request:
    """``command`` sent by client ``client_id`` as its request number ``seq`` (from 1 up).

    ``ack`` tells the state machine that the client holds the results of every seq <= ack, so
    those may be forgotten; it must be below ``seq``. A retry must repeat the same seq (and
    command): it gets the original result and is never applied twice.
    """

    client_id: int
    seq: int
    command: Command
    ack: int = 0

    def __post_init__(self) -> None:
        client_id, seq, ack = self.client_id, self.seq, self.ack
        if (  # the common case in one test; the checks below explain any failure
            type(client_id) is int
            and type(seq) is int
            and type(ack) is int
            and 0 < client_id <= _MAX_INT
            and 0 <= ack < seq <= _MAX_INT
            and type(self.command) in _COMMAND_TYPES
        ):
            return
        _check_int(self, "client_id", 1)
        _check_int(self, "seq", 1)
        _check_int(self, "ack", 0, self.seq - 1)
        if not isinstance(self.command, _COMMAND_TYPES):
            raise TypeError(f"a Request carries a command, not {type(self.command).__name__}")


@dataclass(frozen=True, slots=True)
class Batch:
    """Many requests or bare commands in one log entry, applied in order; one result each."""

    items: tuple[Request | Command, ...]

    def __post_init__(self) -> None:
        items = self.items
        if type(items) is not tuple:
            items = tuple(items)
            _set(self, "items", items)
        if len(items) > MAX_BATCH_ITEMS:
            raise ValueError(f"a Batch holds at most {MAX_BATCH_ITEMS} items, got {len(items)}")
        for item in items:
            if not isinstance(item, (Request, *_COMMAND_TYPES)):
                raise TypeError(f"a Batch cannot hold {type(item).__name__}")


Proposal = Union[Command, Request, Batch]
"""What one log entry holds: a command, a request, or a batch of them."""
