"""fabric: a broker-less messaging fabric on ZeroMQ that survives the death of any one process."""

from fabric._version import __version__

from fabric.component import ComponentContext
from fabric.consumer import InputPort
from fabric.received import Message
from fabric.drain import DrainReport, Leftover
from fabric.errors import (ConfigError, ControlError, DecodeError, FabricError, MessageTooLarge,
                           NameNotFound, PortClosed, ProtocolError)
from fabric.intermediary import Intermediary
from fabric.producer import OutputPort
from fabric.sync import SyncInputPort, SyncOutputPort
from fabric.timing import Timing

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
    "ProtocolError",
    "SyncInputPort",
    "SyncOutputPort",
    "Timing",
    "__version__",
]
