"""fabric: a broker-less messaging fabric on ZeroMQ that survives the death of any one process.

The public names below are imported on first use, so ``import fabric`` (or a submodule, as the
command line does) loads nothing it does not need.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from fabric._version import __version__
from nameservice.lazy import lazy_exports

_EXPORTS = {
    "ComponentContext": "fabric.runtime.component",
    "ConfigError": "fabric.errors",
    "ControlError": "fabric.errors",
    "DecodeError": "fabric.errors",
    "DrainReport": "fabric.drain",
    "FabricError": "fabric.errors",
    "InputPort": "fabric.ports.input",
    "Intermediary": "fabric.intermediary.core",
    "Leftover": "fabric.drain",
    "Message": "fabric.ports.received",
    "MessageTooLarge": "fabric.errors",
    "NameNotFound": "fabric.errors",
    "OutputPort": "fabric.ports.output",
    "PortClosed": "fabric.errors",
    "PortTimeout": "fabric.errors",
    "ProtocolError": "fabric.errors",
    "SyncInputPort": "fabric.ports.sync",
    "SyncOutputPort": "fabric.ports.sync",
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
    from fabric.drain import DrainReport, Leftover
    from fabric.errors import (
        ConfigError,
        ControlError,
        DecodeError,
        FabricError,
        MessageTooLarge,
        NameNotFound,
        PortClosed,
        PortTimeout,
        ProtocolError,
    )
    from fabric.intermediary.core import Intermediary
    from fabric.ports.input import InputPort
    from fabric.ports.output import OutputPort
    from fabric.ports.received import Message
    from fabric.ports.sync import SyncInputPort, SyncOutputPort
    from fabric.runtime.component import ComponentContext
    from fabric.timing import Timing


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
