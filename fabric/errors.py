"""Errors raised by the fabric data path.

The whole tree::

    FabricError                 root of everything fabric raises
    ├── ProtocolError           a peer broke the wire protocol
    │   └── DecodeError         a frame that does not decode (bad version, type, size, shape)
    ├── MessageTooLarge         a payload that cannot fit in one batch frame
    ├── PortClosed              an operation on a port that was closed (or is draining)
    ├── ControlError            a control request that failed (no answer, bad request)
    ├── ConfigError             a bad argument (endpoint, window size, ...)
    └── NameNotFound            no process or channel of that name is registered

A ZeroMQ error while setting up a socket becomes a :class:`ConfigError` where the ports open
their sockets (``fabric.links``); the intermediary lets ``zmq.ZMQError`` from ``bind`` reach its
caller (the command line turns it into one line and exit code 1). Errors of peers never raise:
they are counted and dropped.
"""
from __future__ import annotations


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


class ControlError(FabricError):
    """A control request failed: no answer in time, a malformed request, or an error answer."""


class NameNotFound(FabricError):
    """No process or channel of the name asked for is registered in the name service."""
