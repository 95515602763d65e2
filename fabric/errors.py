"""Errors raised by the fabric data path.

The whole tree::

    FabricError                 root of everything fabric raises
    ├── ProtocolError           a peer broke the wire protocol
    │   └── DecodeError         a frame that does not decode (bad version, type, size, shape)
    ├── MessageTooLarge         a payload that cannot fit in one batch frame
    ├── PortClosed              an operation on a port that was closed
    └── ConfigError             a bad argument (endpoint, window size, ...)

Errors of ZeroMQ itself are translated in one place, :func:`map_zmq_errors`.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import zmq


class FabricError(Exception):
    """Root of every error fabric raises."""


class ProtocolError(FabricError):
    """A peer sent something the wire protocol does not allow."""


class DecodeError(ProtocolError):
    """A frame could not be decoded: wrong version, unknown type, wrong size or shape."""


class MessageTooLarge(FabricError):
    """A payload is too large to fit in one batch frame."""


class PortClosed(FabricError):
    """The port was closed; it cannot send or receive any more."""


class ConfigError(FabricError):
    """An argument is invalid (an endpoint, a window size, ...)."""


@contextlib.contextmanager
def map_zmq_errors(what: str) -> Iterator[None]:
    """Translate a ``zmq.ZMQError`` raised inside the block into a :class:`ConfigError`."""
    try:
        yield
    except zmq.ZMQError as exc:
        raise ConfigError(f"{what}: {exc}") from exc
