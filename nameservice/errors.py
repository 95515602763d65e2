"""The root of every error the project raises, the errors shared by its layers, and the name
service's own.

The root is defined here, at the bottom of the import graph, because every layer raises it and
nothing in ``nameservice`` may import ``fabric``; ``fabric.errors.FabricError`` is this very
class, and ``fabric.errors`` shows the whole tree, the data path's errors included. Each class
is defined once; the packages that raise one re-export it where their callers look for it
(``nameservice.kv.DecodeError`` is ``nameservice.errors.DecodeError``).

    FabricError                 root of everything the project raises
    ├── ConfigError             a bad argument: an address, a cluster list, a window size
    │                           (also a ValueError)
    ├── ProtocolError           a peer or client broke a wire protocol
    │   └── DecodeError         bytes that do not decode: bad version, kind, size, type, shape
    ├── ControlError            a control-socket request failed (no answer, bad request)
    ├── NameNotFound            no process or channel of that name is registered
    └── NameServiceError        raised by the name service to its users
        ├── Unavailable         no node answered, or no leader was found, in time: the
        │                       operation FAILED, and a write's outcome is unknown
        │                       (also a TimeoutError)
        ├── OutcomeUnknown      a write was not applied now, and whether an earlier attempt
        │                       of it was cannot be told (its client session expired)
        ├── RequestRejected     the cluster refused the request (bad key, missing lease, ...)
        │   ├── LeaseNotFound   the lease named does not exist (expired or revoked)
        │   └── Forbidden       the sender's key has no right to that request
        ├── KeyNotFound         a key that was asked for does not exist
        ├── Compacted           events from a revision no node (or this history) keeps any
        │                       more: reload with a range and watch from its revision
        ├── KvError             the key-value machine (nameservice.kv.errors)
        ├── RaftError           the Raft core, to its driver (nameservice.raft.errors)
        └── StorageError        the durable log (nameservice.storage.errors)

Errors of peers never raise out of a server or a data-path process: they are counted and
dropped. Lower-level errors (``zmq.ZMQError``, ``OSError``) are translated where they are met.
"""
from __future__ import annotations

__all__ = [
    "Compacted", "ConfigError", "ControlError", "DecodeError", "FabricError", "Forbidden",
    "KeyNotFound",
    "LeaseNotFound", "NameNotFound", "NameServiceError", "OutcomeUnknown", "ProtocolError",
    "RequestRejected", "Unavailable", "shown",
]


def shown(value: object, limit: int = 40) -> str:
    """``value`` for an error message about untrusted input: a scalar's repr (cut to
    ``limit``), a container's type and length only. Never recurses, so a value nested as deep as
    a decoder allows (msgpack: 1,024 levels, beyond Python's recursion limit) cannot turn a
    decode error into a RecursionError."""
    if isinstance(value, (list, tuple, dict, set)):
        return f"{type(value).__name__} of {len(value)}"
    if isinstance(value, (bytes, bytearray, str)):
        return repr(value[:limit])[:limit + 3]
    if isinstance(value, (int, float, bool)) or value is None:
        return repr(value)[:limit]
    return type(value).__name__


class FabricError(Exception):
    """Root of every error the project raises (``fabric.errors.FabricError`` is this class)."""


class ConfigError(FabricError, ValueError):
    """A bad argument: an address, a cluster list, a timeout range, a window size."""


class ProtocolError(FabricError):
    """A peer or client sent something the wire protocol does not allow."""


class DecodeError(ProtocolError):
    """Bytes that could not be decoded: wrong version or kind, too large, wrong types or shape."""


class ControlError(FabricError):
    """A control request failed: no answer in time, a malformed request, or an error answer."""


class NameNotFound(FabricError):
    """No process or channel of the name asked for is registered in the name service."""


class NameServiceError(FabricError):
    """Root of the errors the name service raises to its users."""


class Unavailable(NameServiceError, TimeoutError):
    """No node answered, or no leader was found, before the deadline.

    The operation failed; for a write, whether it was applied is unknown (a retry with the same
    client session would tell).
    """


class OutcomeUnknown(NameServiceError):
    """A write was not applied now, and whether an earlier attempt was cannot be told."""


class RequestRejected(NameServiceError):
    """The cluster refused the request; ``code`` says why (see ``nameservice.wire``)."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


class Forbidden(RequestRejected):
    """The sender's key has no right to that request (docs/security.md)."""


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
    """Events from ``revision`` on cannot be served: the history no longer reaches back to it.

    ``oldest`` is the oldest revision still kept (by the key-value machine's history, or by the
    last node a watch asked). Reload the state with a range and watch again from the range's
    revision + 1 (``nameservice.names`` does this).
    """

    def __init__(self, revision: int, oldest: int) -> None:
        super().__init__(f"events from revision {revision} are compacted (oldest kept: "
                         f"{oldest}); reload with a range and watch from its revision")
        self.revision = revision
        self.oldest = oldest
