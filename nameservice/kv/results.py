"""What applying a command produces: key-values, results, events.

All are frozen slotted dataclasses and are shared, never copied: the ``KeyValue`` a result or an
event refers to is the very object the store holds (it is immutable, so that is safe).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Sequence, Union

__all__ = [
    "KeyValue",
    "PutResult",
    "DeleteResult",
    "CasResult",
    "LeaseGrantResult",
    "LeaseRevokeResult",
    "SessionOpened",
    "SessionClosed",
    "RejectCode",
    "Rejected",
    "Result",
    "EventType",
    "Event",
    "Applied",
]


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One key as stored.

    ``create_revision``: the revision that created it; ``mod_revision``: the revision of its
    latest change; ``version``: number of puts since it was created (1 after the creating put);
    ``lease``: the lease it is attached to, 0 for none.
    """

    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0


@dataclass(frozen=True, slots=True)
class PutResult:
    """A put succeeded; ``revision`` is the store revision after it (the key's mod_revision).
    ``prev`` is the previous key-value when the put asked for it and the key existed."""

    revision: int
    prev: KeyValue | None = None


@dataclass(frozen=True, slots=True)
class DeleteResult:
    """``deleted`` keys were removed; ``revision`` is the store revision after the command."""

    revision: int
    deleted: int


@dataclass(frozen=True, slots=True)
class CasResult:
    """Outcome of ``Cas`` or ``StaleWrite``.

    ``succeeded``: the condition held and the write was made. ``kv`` is the key as it stands
    after the command: the new key-value on success (None if the swap deleted it), the current
    key-value the condition was checked against on failure (None if absent).
    """

    succeeded: bool
    revision: int
    kv: KeyValue | None


@dataclass(frozen=True, slots=True)
class LeaseGrantResult:
    """Lease ``id`` now exists with ``ttl_ms`` (possibly raised to the minimum TTL)."""

    id: int
    ttl_ms: int
    revision: int


@dataclass(frozen=True, slots=True)
class LeaseRevokeResult:
    """``found``: the lease existed and is now gone, with its ``deleted`` keys."""

    found: bool
    deleted: int
    revision: int


@dataclass(frozen=True, slots=True)
class SessionOpened:
    """A new session; the client numbers its requests from 1 under ``client_id``."""

    client_id: int


@dataclass(frozen=True, slots=True)
class SessionClosed:
    """``found``: the session existed and is now forgotten."""

    found: bool


class RejectCode(enum.IntEnum):
    """Why a command changed nothing. Values are part of the wire format."""

    LEASE_NOT_FOUND = 1
    """A put or CAS named a lease that does not exist."""
    LEASE_EXISTS = 2
    """A grant named a lease id already in use."""
    TOO_MANY_KEYS = 3
    """Creating the key would exceed the configured key quota."""
    TOO_MANY_LEASES = 4
    """Granting would exceed the configured lease quota."""
    SESSION_EXPIRED = 5
    """The client's session is unknown (expired or never opened): the command was NOT applied
    now, and whether an earlier attempt of it was applied cannot be told. Open a new session."""
    SEQ_TOO_OLD = 6
    """The seq is at or below the session's floor (its result was already forgotten): the
    command was NOT applied now; an earlier attempt may have been."""
    MALFORMED = 7
    """The log entry did not decode; nothing was applied."""


@dataclass(frozen=True, slots=True)
class Rejected:
    """The command was rejected and changed nothing; ``message`` says why, for people."""

    code: RejectCode
    message: str = ""


Result = Union[
    PutResult,
    DeleteResult,
    CasResult,
    LeaseGrantResult,
    LeaseRevokeResult,
    SessionOpened,
    SessionClosed,
    Rejected,
]
"""Any result of applying one command."""


class EventType(enum.IntEnum):
    """Kind of change. Values are part of the wire format."""

    PUT = 0
    DELETE = 1


@dataclass(frozen=True, slots=True)
class Event:
    """One changed key, for watchers.

    ``kv`` is the key after the change; for DELETE it holds only the key and the deleting
    revision (empty value, zero create_revision and version). ``prev`` is the key before the
    change (None when a PUT created it). Each event has its own revision: revisions of events
    are consecutive integers, one per changed key.
    """

    type: EventType
    kv: KeyValue
    prev: KeyValue | None = None

    @property
    def key(self) -> bytes:
        """The changed key."""
        return self.kv.key

    @property
    def value(self) -> bytes:
        """The new value (empty for DELETE)."""
        return self.kv.value

    @property
    def mod_revision(self) -> int:
        """The revision of this change."""
        return self.kv.mod_revision

    @property
    def prev_value(self) -> bytes | None:
        """The value before the change, None if the key did not exist."""
        return None if self.prev is None else self.prev.value


@dataclass(frozen=True, slots=True)
class Applied:
    """What applying one log entry produced.

    ``results``: one per item of the entry (one for a bare command or request, one per batch
    item), in order. ``events``: every change the entry made, in revision order — the list to
    push to watchers. Empty for a Raft no-op, for an entry already applied, or for a rejected
    or duplicate command.
    """

    index: int
    results: Sequence[Result]
    events: Sequence[Event]
