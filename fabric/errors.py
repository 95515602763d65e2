"""Every error the project raises, in one tree.

The root and the errors shared with the name service are defined in ``nameservice.errors`` (the
bottom of the import graph: the name service may not import fabric) and re-exported here as the
same classes; the data path's own errors are defined here. ``except FabricError`` catches
anything fabric or its name service raises; ``except TimeoutError`` catches every timeout.

    FabricError                 root of everything the project raises
    ├── ConfigError             a bad argument: an endpoint, a window size, an address
    │                           (also a ValueError)
    ├── ProtocolError           a peer broke a wire protocol
    │   └── DecodeError         a frame that does not decode (bad version, type, size, shape)
    ├── ControlError            a control request that failed (no answer, bad request)
    ├── NameNotFound            no process or channel of that name is registered
    ├── MessageTooLarge         a payload that cannot fit in one batch frame
    ├── PortClosed              an operation on a port that was closed (or is draining)
    ├── PortTimeout             a port's wait (``flush``, the first endpoints) passed its
    │                           timeout (also a TimeoutError)
    └── NameServiceError        the name service (nameservice.errors)
        ├── Unavailable         no node answered in time (also a TimeoutError)
        ├── OutcomeUnknown      a retried write whose first attempt cannot be told
        ├── RequestRejected     the cluster refused the request
        │   ├── LeaseNotFound   the lease expired or was revoked
        │   └── Forbidden       the sender's key has no right to that request
        ├── KeyNotFound         no such key
        ├── Compacted           a watch asked for revisions no longer kept
        ├── KvError             the key-value machine's own (stale-write backlog)
        ├── RaftError           the Raft core to its driver (NotLeader, ProposalDropped)
        └── StorageError        the durable log (corrupt, locked, closed, ...)

A ZeroMQ error while setting up a socket becomes a :class:`ConfigError` where the ports open
their sockets (``fabric.ports.links``); the intermediary lets ``zmq.ZMQError`` from ``bind``
reach its caller (the command line turns it into one line and exit code 1). Errors of peers
never raise: they are counted and dropped.
"""
from __future__ import annotations

from nameservice.errors import (
    Compacted,
    ConfigError,
    ControlError,
    DecodeError,
    FabricError,
    Forbidden,
    KeyNotFound,
    LeaseNotFound,
    NameNotFound,
    NameServiceError,
    OutcomeUnknown,
    ProtocolError,
    RequestRejected,
    Unavailable,
)

__all__ = [
    "Compacted", "ConfigError", "ControlError", "DecodeError", "FabricError", "Forbidden",
    "KeyNotFound",
    "LeaseNotFound", "MessageTooLarge", "NameNotFound", "NameServiceError", "OutcomeUnknown",
    "PortClosed", "PortTimeout", "ProtocolError", "RequestRejected", "Unavailable",
]


class MessageTooLarge(FabricError):
    """A payload is too large to fit in one batch frame."""


class PortClosed(FabricError):
    """The port was closed; it cannot send or receive any more."""


class PortTimeout(FabricError, TimeoutError):
    """A port's wait passed its timeout: ``flush`` before everything was acknowledged, or the
    first endpoint list of a channel before the name service gave one."""
