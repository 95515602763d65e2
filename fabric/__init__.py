"""fabric: a broker-less messaging fabric on ZeroMQ that survives the death of any one process.

The public names below are imported on first use, so ``import fabric`` (or a submodule, as the
command line does) loads nothing it does not need.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from nameservice.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "ComponentContext": "fabric.component",
    "ConfigError": "fabric.errors",
    "ControlError": "fabric.errors",
    "DecodeError": "fabric.errors",
    "DrainReport": "fabric.drain",
    "FabricError": "fabric.errors",
    "InputPort": "fabric.consumer",
    "Intermediary": "fabric.intermediary",
    "Leftover": "fabric.drain",
    "Message": "fabric.received",
    "MessageTooLarge": "fabric.errors",
    "NameNotFound": "fabric.errors",
    "OutputPort": "fabric.producer",
    "PortClosed": "fabric.errors",
    "PortTimeout": "fabric.errors",
    "ProtocolError": "fabric.errors",
    "SyncInputPort": "fabric.sync",
    "SyncOutputPort": "fabric.sync",
    "Timing": "fabric.timing",
}

__all__ = [
    "ComponentContext",
    "ConfigError",
    "ControlError",
    "DecodeError",
    "DrainReport",
    "FabricError",
    "InputPort",
    "Intermediary",
    "Leftover",
    "Message",
    "MessageTooLarge",
    "NameNotFound",
    "OutputPort",
    "PortClosed",
    "PortTimeout",
    "ProtocolError",
    "SyncInputPort",
    "SyncOutputPort",
    "Timing",
    "__version__",
]

if TYPE_CHECKING:
    from fabric.component import ComponentContext
    from fabric.consumer import InputPort
    from fabric.drain import DrainReport, Leftover
    from fabric.errors import (ConfigError, ControlError, DecodeError, FabricError,
                               MessageTooLarge, NameNotFound, PortClosed, PortTimeout,
                               ProtocolError)
    from fabric.intermediary import Intermediary
    from fabric.producer import OutputPort
    from fabric.received import Message
    from fabric.sync import SyncInputPort, SyncOutputPort
    from fabric.timing import Timing


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
