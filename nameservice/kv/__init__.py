"""The name service's key-value state machine: a pure, deterministic module.

Keys with revisions, leases, client sessions (exactly-once results for retried requests), a
bounded watch history and snapshots; commands and results as frozen dataclasses with a msgpack
codec. No sockets, no clock, no disk, no threads. See docs/kv.md.

The names below are imported on first use: the client, which needs the commands, results
and codec, never loads the state machine.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from nameservice.lazy import lazy_exports

_EXPORTS = {
    "FORMAT_VERSION": "nameservice.kv.codec",
    "MAX_BATCH_ITEMS": "nameservice.kv.commands",
    "MAX_KEY_BYTES": "nameservice.kv.commands",
    "MAX_VALUE_BYTES": "nameservice.kv.commands",
    "Applied": "nameservice.kv.results",
    "Batch": "nameservice.kv.commands",
    "Cas": "nameservice.kv.commands",
    "CasResult": "nameservice.kv.results",
    "CloseSession": "nameservice.kv.commands",
    "Command": "nameservice.kv.commands",
    "Compacted": "nameservice.kv.errors",
    "DecodeError": "nameservice.kv.errors",
    "Delete": "nameservice.kv.commands",
    "DeleteRange": "nameservice.kv.commands",
    "DeleteResult": "nameservice.kv.results",
    "Event": "nameservice.kv.results",
    "EventType": "nameservice.kv.results",
    "KeyValue": "nameservice.kv.results",
    "KvConfig": "nameservice.kv.machine",
    "KvError": "nameservice.kv.errors",
    "KvStateMachine": "nameservice.kv.machine",
    "LeaseExpire": "nameservice.kv.commands",
    "LeaseGrant": "nameservice.kv.commands",
    "LeaseGrantResult": "nameservice.kv.results",
    "LeaseRevoke": "nameservice.kv.commands",
    "LeaseRevokeResult": "nameservice.kv.results",
    "OpenSession": "nameservice.kv.commands",
    "PendingWrite": "nameservice.kv.stale",
    "Proposal": "nameservice.kv.commands",
    "Put": "nameservice.kv.commands",
    "PutResult": "nameservice.kv.results",
    "RejectCode": "nameservice.kv.results",
    "Rejected": "nameservice.kv.results",
    "Request": "nameservice.kv.commands",
    "Result": "nameservice.kv.results",
    "SessionClosed": "nameservice.kv.results",
    "SessionOpened": "nameservice.kv.results",
    "StaleBacklogFull": "nameservice.kv.stale",
    "StaleConflict": "nameservice.kv.stale",
    "StaleOverlay": "nameservice.kv.stale",
    "StaleWrite": "nameservice.kv.commands",
    "decode_command": "nameservice.kv.codec",
    "decode_event": "nameservice.kv.codec",
    "decode_result": "nameservice.kv.codec",
    "encode_command": "nameservice.kv.codec",
    "encode_event": "nameservice.kv.codec",
    "encode_result": "nameservice.kv.codec",
}

__all__ = [
    "FORMAT_VERSION",
    "MAX_BATCH_ITEMS",
    "MAX_KEY_BYTES",
    "MAX_VALUE_BYTES",
    "Applied",
    "Batch",
    "Cas",
    "CasResult",
    "CloseSession",
    "Command",
    "Compacted",
    "DecodeError",
    "Delete",
    "DeleteRange",
    "DeleteResult",
    "Event",
    "EventType",
    "KeyValue",
    "KvConfig",
    "KvError",
    "KvStateMachine",
    "LeaseExpire",
    "LeaseGrant",
    "LeaseGrantResult",
    "LeaseRevoke",
    "LeaseRevokeResult",
    "OpenSession",
    "PendingWrite",
    "Proposal",
    "Put",
    "PutResult",
    "RejectCode",
    "Rejected",
    "Request",
    "Result",
    "SessionClosed",
    "SessionOpened",
    "StaleBacklogFull",
    "StaleConflict",
    "StaleOverlay",
    "StaleWrite",
    "decode_command",
    "decode_event",
    "decode_result",
    "encode_command",
    "encode_event",
    "encode_result",
]

if TYPE_CHECKING:
    from .codec import (
        FORMAT_VERSION,
        decode_command,
        decode_event,
        decode_result,
        encode_command,
        encode_event,
        encode_result,
    )
    from .commands import (
        MAX_BATCH_ITEMS,
        MAX_KEY_BYTES,
        MAX_VALUE_BYTES,
        Batch,
        Cas,
        CloseSession,
        Command,
        Delete,
        DeleteRange,
        LeaseExpire,
        LeaseGrant,
        LeaseRevoke,
        OpenSession,
        Proposal,
        Put,
        Request,
        StaleWrite,
    )
    from .errors import Compacted, DecodeError, KvError
    from .machine import KvConfig, KvStateMachine
    from .results import (
        Applied,
        CasResult,
        DeleteResult,
        Event,
        EventType,
        KeyValue,
        LeaseGrantResult,
        LeaseRevokeResult,
        PutResult,
        RejectCode,
        Rejected,
        Result,
        SessionClosed,
        SessionOpened,
    )
    from .stale import PendingWrite, StaleBacklogFull, StaleConflict, StaleOverlay

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
