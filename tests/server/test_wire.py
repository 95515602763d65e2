"""The wire codec: every Raft message round-trips; anything else is one DecodeError."""
from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nameservice import wire
from nameservice.errors import DecodeError
from nameservice.raft import messages as m
from nameservice.raft.types import Entry, Snapshot, SnapshotMeta

MESSAGES = [
    m.VoteRequest(1, 2, 3, 10, 2, pre_vote=True, transfer=False),
    m.VoteRequest(1, 2, 3, 10, 2, pre_vote=False, transfer=True),
    m.VoteResponse(2, 1, 3, True, True),
    m.AppendRequest(1, 2, 3, 4, 2, (Entry(3, 5, b"a"), Entry(3, 6, b"")), 5),
    m.AppendRequest(1, 3, 3, 4, 2, (), 4),
    m.AppendResponse(2, 1, 3, 6, True, 4, 2),
    m.Heartbeat(1, 2, 3, 7, b"ctx"),
    m.HeartbeatResponse(2, 1, 3, b""),
    m.SnapshotRequest(1, 2, 3, Snapshot(SnapshotMeta(9, 2, (1, 2, 3)), b"state")),
    m.TimeoutNow(1, 2, 3),
    m.ReadIndexRequest(2, 1, 3, b"\x00\x01"),
    m.ReadIndexResponse(1, 2, 3, 8, b"\x00\x01"),
]


def test_every_message_type_is_covered():
    assert {type(x) for x in MESSAGES} == set(m.MESSAGE_TYPES)


def test_peer_frame_round_trips_every_message():
    data = wire.encode_peer_frame(MESSAGES)
    kind, body = wire.split_frame(data, wire.MAX_PEER_FRAME)
    assert kind == wire.PEER
    assert wire.decode_peer_batch(body) == MESSAGES


@pytest.mark.parametrize("data, reason", [
    (b"", "too short"),
    (b"\x02\x01\x90", "version"),
    (b"\x01\x09\x90", "kind"),
    (b"\x01\x01\xc1", "msgpack"),
    (b"\x01\x01" + msgpack.packb({"a": 1}), "array"),
    (b"\x01\x01" + b"\x90" * 100, "over the limit"),
])
def test_bad_frames_are_decode_errors(data, reason):
    with pytest.raises(DecodeError, match=reason):
        wire.split_frame(data, 64)


@pytest.mark.parametrize("w", [
    [99, 1, 2, 3],
    [0, 1, 2, 3, 10, 2, True],  # VoteRequest missing a field
    [0, 1, 2, -3, 10, 2, True, False],  # negative term
    [0, 1, 2, 3, 10, 2, 1, False],  # int where a bool belongs
    [2, 1, 2, 3, 4, 2, [[3, 5]], 5],  # entry of 2
    [2, 1, 2, 3, 4, 2, [[3, 5, "text"]], 5],  # str data
    [6, 1, 2, 3, [9, 2, "voters", b""]],  # bad snapshot
    [4, 1, 2, 3, 1 << 64, b""],  # int too large
    "not an array",
])
def test_malformed_messages_are_decode_errors(w):
    with pytest.raises(DecodeError):
        wire.message_from_wire(w)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_raise_anything_but_decode_error(data):
    try:
        kind, body = wire.split_frame(b"\x01\x01" + data, wire.MAX_PEER_FRAME)
        wire.decode_peer_batch(body)
    except DecodeError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.binary(max_size=8)
                    | st.text(max_size=4), lambda c: st.lists(c, max_size=8), max_leaves=20))
def test_random_structures_never_raise_anything_but_decode_error(w):
    for check in (wire.message_from_wire, wire.check_request, wire.reply_from_wire):
        try:
            check(w)
        except DecodeError:
            pass


def test_request_header_and_read_args():
    assert wire.check_request([7, wire.OP_GET, b"k", True]) == (7, wire.OP_GET)
    assert wire.read_args([7, wire.OP_GET, b"k", True]) == (b"k", 0, True)
    assert wire.read_args([7, wire.OP_RANGE, b"p/", 5, False]) == (b"p/", 5, False)
    with pytest.raises(DecodeError):
        wire.check_request([7, 99])
    with pytest.raises(DecodeError):
        wire.read_args([7, wire.OP_GET, "k", True])


def test_keepalive_and_stale_write_args():
    assert wire.check_request([1, wire.OP_KEEPALIVE, 3]) == (1, wire.OP_KEEPALIVE)
    assert wire.keepalive_args([1, wire.OP_KEEPALIVE, 3]) == 3
    assert wire.stale_write_args([1, wire.OP_STALE_WRITE, b"k", b"v"]) == (b"k", b"v")
    assert wire.stale_write_args([1, wire.OP_STALE_WRITE, b"k", None]) == (b"k", None)
    for w in ([1, 8], [1, 8, 0], [1, 8, -1], [1, 8, "3"], [1, 8, 3, 4]):
        with pytest.raises(DecodeError):
            wire.keepalive_args(w)
    for w in ([1, 9, b"k"], [1, 9, "k", b"v"], [1, 9, b"k", 5], [1, 9, b"k", b"v", 1]):
        with pytest.raises(DecodeError):
            wire.stale_write_args(w)
    for op in (5, 6, 7, 14):  # unassigned (10, 11: the watch ops; 12, 13: membership)
        with pytest.raises(DecodeError):
            wire.check_request([1, op])


def test_watch_args():
    assert wire.check_request([1, wire.OP_WATCH]) == (1, wire.OP_WATCH)
    assert wire.watch_args([1, 10, 7, b"k/", True, 0]) == (7, b"k/", True, 0)
    assert wire.watch_cancel_args([1, 11, 7]) == 7
    for w in ([1, 10, 7, b"k", True], [1, 10, -1, b"k", True, 0], [1, 10, 7, "k", True, 0],
              [1, 10, 7, b"k", 1, 0], [1, 10, 7, b"k", True, -5]):
        with pytest.raises(DecodeError):
            wire.watch_args(w)
    for w in ([1, 11], [1, 11, "7"], [1, 11, 7, 8]):
        with pytest.raises(DecodeError):
            wire.watch_cancel_args(w)
    kind, body = wire.split_frame(wire.frame(wire.EVENT, [[[1], 0, 1, 2, []]]), 1 << 20)
    assert (kind, body) == (wire.EVENT, [[[1], 0, 1, 2, []]])


SNAP_MESSAGES = [
    wire.SnapOffer(1, 2, 3, 50, 2, (1, 2, 3), (4,), 100 << 20, 0xDEADBEEF, 1 << 20),
    wire.SnapChunk(1, 2, 3, 50, 1 << 20, 0x1234, b"chunk bytes"),
    wire.SnapAck(2, 1, 3, 50, wire.ACK_REWIND, 1 << 20),
    wire.SnapAck(2, 1, 3, 50, wire.ACK_DONE, 100 << 20),
]


def test_snap_frame_round_trips_every_stream_message():
    data = wire.encode_snap_frame(SNAP_MESSAGES)
    assert data[:2] == bytes([wire.VERSION, wire.SNAP])
    kind, body = wire.split_frame(data, wire.MAX_SNAP_FRAME)
    assert kind == wire.SNAP
    assert wire.decode_snap_batch(body) == SNAP_MESSAGES


def test_a_chunk_is_byte_exact_as_documented():
    # [1, frm, to, term, index, offset, crc, data] in a SNAP frame (docs/nameservice.md)
    data = wire.encode_snap_frame([wire.SnapChunk(1, 2, 3, 50, 0, 7, memoryview(b"ab"))])
    assert data == bytes.fromhex("0105" "91" "98" "01" "01" "02" "03" "32" "00" "07"
                                 "c402") + b"ab"


@pytest.mark.parametrize("w", [
    [3, 1, 2, 3],  # unknown tag
    [True, 1, 2, 3, 4, 5, 6, b""],  # a bool is not a tag
    [1, 1, 2, 3, 4, 5, 6],  # chunk without data
    [1, 1, 2, 3, 4, 5, 1 << 32, b""],  # CRC over 32 bits
    [1, 1, 2, 3, 4, -5, 6, b""],  # negative offset
    [1, 1, 2, 3, 4, 5, 6, "text"],  # str data
    [2, 1, 2, 3, 4, 9, 0],  # unknown ack status
    [0, 1, 2, 3, 4, 5, [1], [], 10, 7, 0],  # chunk size 0
    [0, 1, 2, 3, 4, 5, [1], [], 10, 7, wire.MAX_SNAP_CHUNK + 1],  # chunk size too large
    [0, 1, 2, 3, 4, 5, "voters", [], 10, 7, 16],
    [],
    "not an array",
])
def test_malformed_stream_messages_are_decode_errors(w):
    with pytest.raises(DecodeError):
        wire.snap_from_wire(w)


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.binary(max_size=8)
                    | st.text(max_size=4), lambda c: st.lists(c, max_size=11), max_leaves=20))
def test_random_structures_never_raise_anything_but_decode_error_as_stream_messages(w):
    try:
        wire.snap_from_wire(w)
    except DecodeError:
        pass
