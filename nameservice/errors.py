"""Errors the name service raises to its users (client library, CLI, daemon).

The whole tree::

    NameServiceError            root of everything the name service raises to users
    ├── ConfigError             a bad argument: an address, a cluster list, a timeout range
    ├── ProtocolError           a frame that does not follow the wire protocol
    │   └── DecodeError         it does not decode: bad version, kind, size, type or shape
    ├── Unavailable             no node answered, or no leader could be found, in time: the
    │                           operation FAILED, and a write's outcome is unknown
    ├── OutcomeUnknown          a write was not applied now, and whether an earlier attempt of
    │                           it was applied cannot be told (its client session expired)
    ├── RequestRejected         the cluster refused the request (bad key, missing lease, ...)
    │   └── LeaseNotFound       the lease named does not exist (expired or revoked)
    ├── KeyNotFound             a key that was asked for does not exist
    └── Compacted               a watch asked for revisions no node keeps any more: reload
                                with a range and watch from its revision

The Raft core (``nameservice.raft.errors``), the storage (``nameservice.storage.errors``) and
the key-value machine (``nameservice.kv.errors``) keep their own trees for their own callers;
the server and the client translate what a user must see into these.
"""
from __future__ import annotations


class NameServiceError(Exception):
    """Root of the errors the name service raises to its users."""


class ConfigError(NameServiceError, ValueError):
    """A bad argument: an address, a cluster list, a timeout range."""


class ProtocolError(NameServiceError):
    """A peer or client sent something the wire protocol does not allow."""


class DecodeError(ProtocolError):
    """A frame could not be decoded: wrong version or kind, too large, wrong types or shape."""


class Unavailable(NameServiceError):
    """No node answered, or no leader was found, before the deadline.

    The operation failed; for a write, whether it was applied is unknown (a retry with the same
    client session would tell).
    """


class OutcomeUnknown(NameServiceError):
    """A write was not applied now, and whether an earlier attempt was cannot be told."""


class RequestRejected(NameServiceError):
    """The cluster refused the request; ``code`` says why (see ``nameservice.server.wire``)."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


class LeaseNotFound(RequestRejected):
    """The lease named does not exist: it expired (no keepalive for a whole TTL) or was
    revoked."""

    def __init__(self, lease_id: int, code: int = 1) -> None:
        super().__init__(f"lease {lease_id} not found (expired or revoked)", code)
        self.lease_id = lease_id


class KeyNotFound(NameServiceError):
    """The key asked for does not exist."""

    def __init__(self, key: bytes) -> None:
        super().__init__(f"key not found: {key.decode('utf-8', 'replace')}")
        self.key = key


class Compacted(NameServiceError):
    """A watch cannot resume: no node's event history reaches back to the revision it needs.

    ``oldest`` is the oldest revision the last node asked still had. Reload the state with a
    range and watch again from the range's revision + 1 (``nameservice.names`` does this).
    """

    def __init__(self, revision: int, oldest: int) -> None:
        super().__init__(f"events from revision {revision} are compacted (oldest kept: "
                         f"{oldest}); reload with a range and watch from its revision")
        self.revision = revision
        self.oldest = oldest
