"""Pure msgpack codec for commands, results and events.

Every encoding is one version byte (``FORMAT_VERSION``) followed by one msgpack array whose first
element is a small integer tag; the layouts are listed in docs/kv.md ("Wire format") so other
languages can speak them. Decoding takes untrusted bytes and either returns a valid object or
raises ``DecodeError`` — never any other exception. Commands are checked by their own
constructors, so a decoded command obeys the same bounds as one built in code.
"""
from __future__ import annotations

from typing import Any, Callable, TypeVar

import msgpack

from ..errors import shown
from .commands import (
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
from .errors import DecodeError
from .results import (
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

__all__ = [
    "FORMAT_VERSION",
    "encode_command",
    "decode_command",
    "encode_result",
    "decode_result",
    "encode_event",
    "decode_event",
]

FORMAT_VERSION = 1
"""First byte of every encoding; bumped on any incompatible change of a layout."""
_PREFIX = bytes([FORMAT_VERSION])
_STRUCTURE_ERRORS = (TypeError, ValueError, KeyError, IndexError)

# Command tags.
_PUT, _DELETE, _DELETE_RANGE, _CAS, _STALE_WRITE = 1, 2, 3, 4, 5
_LEASE_GRANT, _LEASE_REVOKE, _LEASE_EXPIRE, _OPEN_SESSION, _CLOSE_SESSION = 6, 7, 8, 9, 10
_REQUEST, _BATCH = 16, 17
# Cas condition kinds.
_EXPECT_VALUE, _EXPECT_MOD_REVISION, _EXPECT_ABSENT = 0, 1, 2
# Result tags.
_R_PUT, _R_DELETE, _R_CAS, _R_GRANT, _R_REVOKE, _R_OPENED, _R_CLOSED, _R_REJECTED = range(1, 9)

_pack = msgpack.Packer(use_bin_type=True, autoreset=True).pack

_T = TypeVar("_T")


# --- framing --------------------------------------------------------------------------------


def _encode(wire: list[Any]) -> bytes:
    packed: bytes = _pack(wire)
    return _PREFIX + packed


def _decode(data: object, what: str, from_wire: Callable[[Any], _T]) -> _T:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError(f"{what}: expected bytes, got {type(data).__name__}")
    if len(data) < 2:
        raise DecodeError(f"{what}: {len(data)} bytes is too short")
    if data[0] != FORMAT_VERSION:
        raise DecodeError(f"{what}: unknown format version {data[0]}")
    try:
        wire = msgpack.unpackb(memoryview(data)[1:], raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises many kinds on garbage; all mean the same here
        raise DecodeError(f"{what}: not valid msgpack ({exc})") from exc
    try:
        return from_wire(wire)
    except DecodeError:
        raise
    except _STRUCTURE_ERRORS as exc:
        raise DecodeError(f"{what}: bad structure ({exc})") from exc


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise DecodeError(message)


def _int(value: object) -> int:
    if type(value) is not int or value < 0:
        raise DecodeError(f"expected a non-negative int, got {shown(value)}")
    return value


def _bytes(value: object) -> bytes:
    if type(value) is not bytes:
        raise DecodeError(f"expected bytes, got {type(value).__name__}")
    return value


def _bool(value: object) -> bool:
    if type(value) is not bool:
        raise DecodeError(f"expected a bool, got {type(value).__name__}")
    return value


# --- commands -------------------------------------------------------------------------------


def command_to_wire(cmd: Proposal) -> list[Any]:
    """The msgpack-ready array for ``cmd`` (without the version byte)."""
    if type(cmd) is Put:
        return [_PUT, cmd.key, cmd.value, cmd.lease, cmd.prev_kv]
    if type(cmd) is Request:
        return [_REQUEST, cmd.client_id, cmd.seq, cmd.ack, command_to_wire(cmd.command)]
    if type(cmd) is Batch:
        return [_BATCH, [command_to_wire(item) for item in cmd.items]]
    if type(cmd) is Delete:
        return [_DELETE, cmd.key]
    if type(cmd) is DeleteRange:
        return [_DELETE_RANGE, cmd.prefix]
    if type(cmd) is Cas:
        expect: bytes | int | None
        if cmd.expect_value is not None:
            kind, expect = _EXPECT_VALUE, cmd.expect_value
        elif cmd.expect_mod_revision is not None:
            kind, expect = _EXPECT_MOD_REVISION, cmd.expect_mod_revision
        else:
            kind, expect = _EXPECT_ABSENT, None
        return [_CAS, cmd.key, cmd.value, kind, expect, cmd.lease]
    if type(cmd) is StaleWrite:
        return [_STALE_WRITE, cmd.key, cmd.value, cmd.base_mod_revision]
    if type(cmd) is LeaseGrant:
        return [_LEASE_GRANT, cmd.id, cmd.ttl_ms]
    if type(cmd) is LeaseRevoke:
        return [_LEASE_REVOKE, cmd.id]
    if type(cmd) is LeaseExpire:
        return [_LEASE_EXPIRE, cmd.id]
    if type(cmd) is OpenSession:
        return [_OPEN_SESSION]
    if type(cmd) is CloseSession:
        return [_CLOSE_SESSION, cmd.client_id]
    raise TypeError(f"not a command: {type(cmd).__name__}")


def _cas_from_wire(w: list[Any]) -> Cas:
    _, key, value, kind, expect, lease = w
    if kind == _EXPECT_VALUE:
        return Cas(key, value, expect_value=expect, lease=lease)
    if kind == _EXPECT_MOD_REVISION:
        return Cas(key, value, expect_mod_revision=expect, lease=lease)
    _check(kind == _EXPECT_ABSENT and expect is None, f"unknown Cas condition {shown(kind)}")
    return Cas(key, value, expect_absent=True, lease=lease)


def _unpack_args(cls: type[_T], count: int) -> Callable[[list[Any]], _T]:
    def build(w: list[Any]) -> _T:
        if len(w) != count + 1:
            raise DecodeError(f"{cls.__name__}: expected {count} fields, got {len(w) - 1}")
        return cls(*w[1:])

    return build


_COMMAND_DECODERS: dict[int, Callable[[list[Any]], Command]] = {
    _PUT: _unpack_args(Put, 4),
    _DELETE: _unpack_args(Delete, 1),
    _DELETE_RANGE: _unpack_args(DeleteRange, 1),
    _CAS: _cas_from_wire,
    _STALE_WRITE: _unpack_args(StaleWrite, 3),
    _LEASE_GRANT: _unpack_args(LeaseGrant, 2),
    _LEASE_REVOKE: _unpack_args(LeaseRevoke, 1),
    _LEASE_EXPIRE: _unpack_args(LeaseExpire, 1),
    _OPEN_SESSION: _unpack_args(OpenSession, 0),
    _CLOSE_SESSION: _unpack_args(CloseSession, 1),
}


def _command_from_wire(w: Any) -> Command:
    if type(w) is not list or not w:
        raise DecodeError("a command must be a non-empty array")
    tag = w[0]
    if tag == _PUT and type(tag) is int and len(w) == 5:  # the hot path, without the lookup
        return Put(w[1], w[2], w[3], w[4])
    decoder = _COMMAND_DECODERS.get(tag) if type(tag) is int else None
    if decoder is None:
        raise DecodeError(f"unknown command tag {shown(tag)}")
    return decoder(w)


def _item_from_wire(w: Any) -> Request | Command:
    if type(w) is list and len(w) == 5 and type(w[0]) is int and w[0] == _REQUEST:
        _, client_id, seq, ack, command = w
        return Request(client_id, seq, _command_from_wire(command), ack)
    return _command_from_wire(w)


def proposal_from_wire(w: Any) -> Proposal:
    """The command, request or batch a decoded msgpack array stands for."""
    if type(w) is list and len(w) == 2 and type(w[0]) is int and w[0] == _BATCH:
        _check(type(w[1]) is list, "a Batch holds an array of items")
        return Batch(tuple(_item_from_wire(item) for item in w[1]))
    return _item_from_wire(w)


def encode_command(cmd: Proposal) -> bytes:
    """Encode a command, request or batch as the bytes of one log entry."""
    return _encode(command_to_wire(cmd))


def decode_command(data: bytes) -> Proposal:
    """Decode what ``encode_command`` made; raise ``DecodeError`` on anything else."""
    return _decode(data, "command", proposal_from_wire)


# --- key-values, results, events ------------------------------------------------------------


def kv_to_wire(kv: KeyValue) -> list[Any]:
    """The msgpack-ready array for a key-value."""
    return [kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease]


def kv_from_wire(w: Any) -> KeyValue:
    """Check and rebuild a key-value from its array."""
    _check(type(w) is list and len(w) == 6, "a key-value is an array of 6")
    key, value, create, mod, version, lease = w
    return KeyValue(_bytes(key), _bytes(value), _int(create), _int(mod), _int(version), _int(lease))


def _optional_kv_to_wire(kv: KeyValue | None) -> list[Any] | None:
    return None if kv is None else kv_to_wire(kv)


def _optional_kv_from_wire(w: Any) -> KeyValue | None:
    return None if w is None else kv_from_wire(w)


def result_to_wire(r: Result) -> list[Any]:
    """The msgpack-ready array for a result."""
    if type(r) is PutResult:
        return [_R_PUT, r.revision, _optional_kv_to_wire(r.prev)]
    if type(r) is CasResult:
        return [_R_CAS, r.succeeded, r.revision, _optional_kv_to_wire(r.kv)]
    if type(r) is DeleteResult:
        return [_R_DELETE, r.revision, r.deleted]
    if type(r) is LeaseGrantResult:
        return [_R_GRANT, r.id, r.ttl_ms, r.revision]
    if type(r) is LeaseRevokeResult:
        return [_R_REVOKE, r.found, r.deleted, r.revision]
    if type(r) is SessionOpened:
        return [_R_OPENED, r.client_id]
    if type(r) is SessionClosed:
        return [_R_CLOSED, r.found]
    if type(r) is Rejected:
        return [_R_REJECTED, int(r.code), r.message]
    raise TypeError(f"not a result: {type(r).__name__}")


def result_from_wire(w: Any) -> Result:
    """Check and rebuild a result from its array."""
    _check(type(w) is list and len(w) > 0, "a result must be a non-empty array")
    tag = w[0]
    if tag == _R_PUT and len(w) == 3:
        return PutResult(_int(w[1]), _optional_kv_from_wire(w[2]))
    if tag == _R_CAS and len(w) == 4:
        return CasResult(_bool(w[1]), _int(w[2]), _optional_kv_from_wire(w[3]))
    if tag == _R_DELETE and len(w) == 3:
        return DeleteResult(_int(w[1]), _int(w[2]))
    if tag == _R_GRANT and len(w) == 4:
        return LeaseGrantResult(_int(w[1]), _int(w[2]), _int(w[3]))
    if tag == _R_REVOKE and len(w) == 4:
        return LeaseRevokeResult(_bool(w[1]), _int(w[2]), _int(w[3]))
    if tag == _R_OPENED and len(w) == 2:
        return SessionOpened(_int(w[1]))
    if tag == _R_CLOSED and len(w) == 2:
        return SessionClosed(_bool(w[1]))
    if tag == _R_REJECTED and len(w) == 3:
        _check(type(w[2]) is str, "a rejection message is a string")
        return Rejected(RejectCode(_int(w[1])), w[2])
    raise DecodeError(f"unknown result tag {shown(tag)} or wrong length {len(w)}")


def encode_result(result: Result) -> bytes:
    """Encode a result (for the reply to a client)."""
    return _encode(result_to_wire(result))


def decode_result(data: bytes) -> Result:
    """Decode what ``encode_result`` made; raise ``DecodeError`` on anything else."""
    return _decode(data, "result", result_from_wire)


def event_to_wire(event: Event) -> list[Any]:
    """The msgpack-ready array for an event."""
    return [int(event.type), kv_to_wire(event.kv), _optional_kv_to_wire(event.prev)]


def event_from_wire(w: Any) -> Event:
    """Check and rebuild an event from its array."""
    _check(type(w) is list and len(w) == 3, "an event is an array of 3")
    return Event(EventType(_int(w[0])), kv_from_wire(w[1]), _optional_kv_from_wire(w[2]))


def encode_event(event: Event) -> bytes:
    """Encode an event (for the push to a watcher)."""
    return _encode(event_to_wire(event))


def decode_event(data: bytes) -> Event:
    """Decode what ``encode_event`` made; raise ``DecodeError`` on anything else."""
    return _decode(data, "event", event_from_wire)
