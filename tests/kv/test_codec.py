"""The msgpack codec: every command, result and event round-trips; bad bytes give DecodeError."""
from __future__ import annotations

import msgpack
import pytest

from nameservice.kv import (
    Batch,
    Cas,
    CasResult,
    CloseSession,
    DecodeError,
    Delete,
    DeleteRange,
    DeleteResult,
    Event,
    EventType,
    KeyValue,
    LeaseExpire,
    LeaseGrant,
    LeaseGrantResult,
    LeaseRevoke,
    LeaseRevokeResult,
    OpenSession,
    Put,
    PutResult,
    RejectCode,
    Rejected,
    Request,
    SessionClosed,
    SessionOpened,
    StaleWrite,
    decode_command,
    decode_event,
    decode_result,
    encode_command,
    encode_event,
    encode_result,
)

KV = KeyValue(b"k", b"v", 1, 2, 2, 7)

COMMANDS = [
    Put(b"k", b"v"),
    Put(b"k", b"", lease=3, prev_kv=True),
    Delete(b"k"),
    DeleteRange(b""),
    DeleteRange(b"p/"),
    Cas(b"k", b"v", expect_value=b""),
    Cas(b"k", None, expect_mod_revision=0),
    Cas(b"k", b"v", expect_absent=True, lease=9),
    StaleWrite(b"k", b"v", 12),
    StaleWrite(b"k", None, 0),
    LeaseGrant(0, 1000),
    LeaseGrant(5, 1 << 40),
    LeaseRevoke(5),
    LeaseExpire(5),
    OpenSession(),
    CloseSession(3),
    Request(1, 1, Put(b"k", b"v")),
    Request(2, 10, Cas(b"k", b"v", expect_value=b"w"), ack=9),
    Batch(()),
    Batch((Put(b"a", b"1"), Request(1, 2, Delete(b"a"), ack=1), LeaseExpire(2))),
]

RESULTS = [
    PutResult(3),
    PutResult(3, KV),
    DeleteResult(4, 0),
    CasResult(True, 5, KV),
    CasResult(False, 5, None),
    LeaseGrantResult(1, 1000, 0),
    LeaseRevokeResult(True, 3, 9),
    SessionOpened(4),
    SessionClosed(False),
    Rejected(RejectCode.SESSION_EXPIRED, "session 4 is unknown or expired"),
]

EVENTS = [
    Event(EventType.PUT, KV, None),
    Event(EventType.PUT, KV, KeyValue(b"k", b"old", 1, 1, 1, 0)),
    Event(EventType.DELETE, KeyValue(b"k", b"", 0, 3, 0, 0), KV),
]


@pytest.mark.parametrize("cmd", COMMANDS, ids=repr)
def test_command_round_trip(cmd) -> None:
    data = encode_command(cmd)
    assert data[0] == 1
    assert decode_command(data) == cmd


@pytest.mark.parametrize("result", RESULTS, ids=repr)
def test_result_round_trip(result) -> None:
    assert decode_result(encode_result(result)) == result


@pytest.mark.parametrize("event", EVENTS, ids=repr)
def test_event_round_trip(event) -> None:
    assert decode_event(encode_event(event)) == event


def _framed(obj) -> bytes:
    return b"\x01" + msgpack.packb(obj, use_bin_type=True)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x01",
        b"\x02" + msgpack.packb([1, b"k", b"v", 0, False]),  # unknown version
        _framed([1, b"k", b"v", 0, False]) + b"\x00",  # trailing bytes
        _framed([1, b"k", b"v", 0]),  # missing field
        _framed([1, b"k", b"v", 0, False, 1]),  # extra field
        _framed([1, b"", b"v", 0, False]),  # empty key
        _framed([1, b"k", b"v", -1, False]),  # negative lease
        _framed([1, b"k", b"v", 0, 0]),  # prev_kv not a bool
        _framed([1, b"k", 5, 0, False]),  # value not bytes
        _framed([99]),  # unknown tag
        _framed([]),
        _framed({"tag": 1}),
        _framed([[1], b"k"]),  # unhashable tag
        _framed(3),
        _framed(None),
        _framed([4, b"k", b"v", 7, None, 0]),  # unknown Cas condition
        _framed([4, b"k", b"v", 0, None, 0]),  # value condition without a value
        _framed([16, 1, 1, 0, [16, 1, 1, 0, [9]]]),  # nested request
        _framed([16, 1, 1, 0, [17, []]]),  # batch inside a request
        _framed([17, [[17, []]]]),  # nested batch
        _framed([17, "items"]),
        _framed([6, 1, 2**64 - 1]),  # ttl out of range
        b"\x01\xc1",  # never-used msgpack byte
        b"\x01\xdd\xff\xff\xff\xff",  # array claiming 4G items
        b"\x01" + b"\x91" * 5000,  # deep nesting
        b"\x01\xa2\xff\xfe",  # invalid utf-8 string
        b"\x01\xd7\xff" + b"\x00" * 8,  # timestamp extension
    ],
)
def test_malformed_commands_raise_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_command(data)


def test_non_bytes_input_raises_decode_error() -> None:
    for value in (None, "text", 5, [1]):
        with pytest.raises(DecodeError):
            decode_command(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "wire",
    [[1, -1, None], [3, 1, 5, None], [8, 99, "x"], [8, 1, b"bytes"], [1, 3, [b"k"]], [2, 1], []],
)
def test_malformed_results_raise_decode_error(wire) -> None:
    with pytest.raises(DecodeError):
        decode_result(_framed(wire))


@pytest.mark.parametrize("wire", [[5, [b"k", b"", 0, 1, 0, 0], None], [0, [b"k"], None], [0]])
def test_malformed_events_raise_decode_error(wire) -> None:
    with pytest.raises(DecodeError):
        decode_event(_framed(wire))


def test_str_on_the_wire_is_accepted_for_keys_and_values() -> None:
    assert decode_command(_framed([1, "k", "v", 0, False])) == Put(b"k", b"v")
