"""Property-based fuzzing of every decoder that reads bytes from outside the process (issue 13):
Raft peer frames and messages, client requests and replies, key-value commands, results and
snapshots, data-path frames and batch bodies, control requests, log segments, hard-state and
snapshot files. Each must decode or raise its documented error, never anything else (no
RecursionError from input nested as deep as msgpack allows), and never hang (hypothesis'
deadline). Inputs: random bytes, random msgpack values (deeply nested ones too), and valid
encodings flipped, truncated or extended."""
from __future__ import annotations

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fabric import protocol
from fabric.errors import DecodeError as FabricDecodeError
from nameservice import wire
from nameservice.control import parse_request
from nameservice.errors import ControlError, DecodeError
from nameservice.kv import KvStateMachine, Put
from nameservice.kv.codec import (
    decode_command,
    decode_event,
    decode_result,
    encode_command,
    proposal_from_wire,
)
from nameservice.raft.types import Entry, HardState, Snapshot, SnapshotMeta
from nameservice.storage import codec as storage
from nameservice.storage.errors import CorruptFileError, CorruptLogError

FUZZ = settings(max_examples=60, deadline=2000, suppress_health_check=[HealthCheck.too_slow])


def _deep(depth: int, leaf: object = 1) -> object:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2 ** 63), 2 ** 64 - 1),
                    st.floats(allow_nan=False), st.binary(max_size=40), st.text(max_size=20))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=6), st.dictionaries(st.text(max_size=5), inner, max_size=4)),
    max_leaves=30)
# A random value, or random values in an array (where a decoder expects its fields). Deep
# nesting is tried by the table at the end, not drawn: hypothesis handles such values slowly.
shaped = st.one_of(values, st.lists(values, min_size=1, max_size=8))


def _packed(value: object) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def _mutations(valid: list[bytes]) -> st.SearchStrategy[bytes]:
    """Valid encodings with a byte flipped, cut short, or with bytes added."""
    def mutate(data: bytes, where: int, byte: int, how: int) -> bytes:
        where %= max(1, len(data))
        if how == 0:
            return data[:where] + bytes([data[where] ^ (byte or 1)]) + data[where + 1:]
        if how == 1:
            return data[:where]
        return data[:where] + bytes([byte]) * 3 + data[where:]
    return st.builds(mutate, st.sampled_from(valid), st.integers(0, 1 << 20),
                     st.integers(0, 255), st.integers(0, 2))


# --------------------------------------------------------------------- name-service frames

_PEER_VALID = [wire.frame(wire.PEER, [[0, 2, 1, 5, 9, 4, False, True]]),
               wire.frame(wire.PEER, [[2, 2, 1, 5, 3, 2, [[5, 4, b"data"]], 3]]),
               wire.frame(wire.PEER, [[6, 2, 1, 5, [9, 4, [1, 2, 3], b"snap", []]]])]
_REQUEST_VALID = [wire.frame(wire.REQUEST, [[1, wire.OP_GET, b"k", True],
                                            [2, wire.OP_RANGE, b"p/", 10, False],
                                            [3, wire.OP_WATCH, 1, b"k", True, 0]])]


def _node_decode(data: bytes) -> None:
    """What a node does with a frame before acting on it."""
    kind, body = wire.split_frame(data, wire.MAX_CLIENT_FRAME)
    if kind == wire.PEER:
        wire.decode_peer_batch(body)
        return
    for w in body:
        wire.request_id(w)
        rid, op = wire.check_request(w)
        if op in (wire.OP_GET, wire.OP_RANGE):
            wire.read_args(w)
        elif op == wire.OP_WATCH:
            wire.watch_args(w)
        elif op == wire.OP_WATCH_CANCEL:
            wire.watch_cancel_args(w)
        elif op == wire.OP_KEEPALIVE:
            wire.keepalive_args(w)
        elif op == wire.OP_STALE_WRITE:
            wire.stale_write_args(w)
        elif op == wire.OP_WRITE and len(w) == 3:
            proposal_from_wire(w[2])


@FUZZ
@given(st.one_of(st.binary(max_size=200), _mutations(_PEER_VALID + _REQUEST_VALID),
                 st.builds(lambda k, v: bytes([1, k]) + _packed(v),
                           st.sampled_from([wire.PEER, wire.REQUEST, wire.REPLY]), shaped)))
def test_name_service_frames_decode_or_raise_decode_error(data):
    try:
        _node_decode(data)
    except DecodeError:
        pass


@FUZZ
@given(shaped)
def test_raft_messages_and_replies_decode_or_raise_decode_error(w):
    for decode in (wire.message_from_wire, wire.check_request, wire.reply_from_wire):
        for value in (w, [0, *w] if isinstance(w, list) else w, [1, 2, 1, 5, w]):
            try:
                decode(value)
            except DecodeError:
                pass


# --------------------------------------------------------------------- key-value codec

_KV_VALID = [encode_command(Put(b"key", b"value"))]


@FUZZ
@given(st.one_of(st.binary(max_size=200), _mutations(_KV_VALID),
                 st.builds(lambda v: b"\x01" + _packed(v), shaped)))
def test_kv_commands_results_events_and_snapshots_decode_or_raise_decode_error(data):
    for decode in (decode_command, decode_result, decode_event):
        try:
            decode(data)
        except DecodeError:
            pass
    try:
        KvStateMachine().restore(data)
    except DecodeError:
        pass


# --------------------------------------------------------------------- data path

_DATA_VALID = [protocol.encode(protocol.Hello(protocol.ROLE_CONSUMER, b"c" * 16, 10, "ch")),
               protocol.batch_frame(b"p" * 16, 1, 2, 0, protocol.encode_payloads([1, b"x"])),
               protocol.encode(protocol.Ack(b"p" * 16, b"c" * 16, 5, ((1, 2),)))]


@FUZZ
@given(st.one_of(st.binary(max_size=200), _mutations(_DATA_VALID)))
def test_data_path_frames_decode_or_raise_decode_error(data):
    try:
        protocol.decode(data)
    except FabricDecodeError:
        pass


@FUZZ
@given(st.one_of(st.binary(max_size=200), st.builds(_packed, shaped)), st.integers(0, 10))
def test_data_path_batch_bodies_decode_or_raise_decode_error(body, count):
    try:
        protocol.decode_payloads(body, count)
    except FabricDecodeError:
        pass


# --------------------------------------------------------------------- control requests

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=20)


@FUZZ
@given(st.one_of(
    st.binary(max_size=200),
    st.builds(lambda v: __import__("json").dumps(v).encode(), json_values),
    st.builds(lambda n, cmd: b"[" * n + cmd + b"]" * n, st.integers(0, 3000),
              st.sampled_from([b"", b'{"command": "status"}'])),
    st.builds(lambda t: b'{"command": "drain", "timeout": ' + t + b"}",
              st.sampled_from([b"NaN", b"Infinity", b"-1", b"true", b"1e999", b"2.5",
                               b"9" * 5000, b'"3"', b"null"]))))
def test_control_requests_parse_or_raise_control_error(frame):
    try:
        parse_request(frame)
    except ControlError:
        pass


# --------------------------------------------------------------------- files on disk

_SEGMENT = (storage.segment_header()
            + storage.frame_ops([storage.pack_entries_op([Entry(1, 1, b"a"), Entry(1, 2, b"b")])])
            + storage.frame_ops([storage.pack_commit_op(2)]))
_HARD_STATE = storage.encode_hard_state(HardState(3, 1, 2))
_SNAPSHOT = storage.encode_snapshot(Snapshot(SnapshotMeta(5, 2, (1, 2, 3), ()), b"state"))


@FUZZ
@given(st.one_of(st.binary(max_size=200), _mutations([_SEGMENT]),
                 st.builds(lambda v: _SEGMENT + storage.frame((_packed(v),)), shaped)),
       st.booleans())
def test_log_segments_decode_or_raise_corrupt_log_error(data, last):
    try:
        storage.scan_segment(data, "fuzz.log", last)
    except CorruptLogError:
        pass


@FUZZ
@given(st.one_of(st.binary(max_size=200), _mutations([_HARD_STATE, _SNAPSHOT]),
                 st.builds(lambda magic, v: _SNAPSHOT[:4] + _SNAPSHOT[4:8] + storage.frame(
                     (_packed(v),)) if magic else _HARD_STATE[:8] + storage.frame((_packed(v),)),
                     st.booleans(), shaped)))
def test_hard_state_and_snapshot_files_decode_or_raise_corrupt_file_error(data):
    for decode in (storage.decode_hard_state, storage.decode_snapshot):
        try:
            decode(data, "fuzz")
        except CorruptFileError:
            pass


@pytest.mark.parametrize("depth", [900, 1020, 1024, 1025, 10_000, 100_000])
def test_msgpack_nesting_at_every_depth_is_refused_or_harmless(depth):
    """msgpack's unpacker refuses more than 1,024 levels (StackError, a ValueError): every
    decoder turns that into its own error; up to 1,024 levels the value decodes and the shape
    checks refuse it without recursing."""
    data = b"\x91" * depth + b"\xc0"
    deep = _deep(min(depth, 1020) - 2)
    frames = [b"\x01\x02\x91" + data, b"\x01\x01\x91" + data]
    if depth <= 1020:
        frames += [wire.frame(kind, body) for kind in (wire.PEER, wire.REQUEST) for body in (
            [deep], [[deep]], [[1, deep]], [[0, deep, 1, 2]], [[0, 2, 1, 5, deep, 4, 1, 1]],
            [[2, 2, 1, 5, 3, 2, [deep], 3]], [[1, wire.OP_WRITE, deep]],
            [[1, wire.OP_GET, deep, True]], [[1, wire.OP_WATCH, 1, b"k", deep, 0]])]
    for frame in frames:
        with pytest.raises(DecodeError):
            _node_decode(frame)
    for w in ([deep], [0, deep, 1, 2], [1, 2, deep]):
        for decode in (wire.message_from_wire, wire.check_request, wire.reply_from_wire,
                       proposal_from_wire):
            try:
                decode(w)  # a reply's payload, a request's arguments are checked later
            except DecodeError:
                pass
    for decode in (decode_command, decode_result, decode_event, KvStateMachine().restore):
        with pytest.raises(DecodeError):
            decode(b"\x01" + data)
        with pytest.raises(DecodeError):
            decode(b"\x01\x92\x01" + data)
    with pytest.raises(FabricDecodeError):
        protocol.decode_payloads(b"\x91" + data, 2)
    with pytest.raises(CorruptLogError):
        storage.scan_segment(_SEGMENT + storage.frame((b"\x91" + data,)), "deep.log", False)
    with pytest.raises(CorruptLogError):
        storage.scan_segment(_SEGMENT + storage.frame((b"\x91\x92\x01" + data,)), "d.log", True)
    for good in (_HARD_STATE, _SNAPSHOT):
        with pytest.raises(CorruptFileError):
            storage.decode_snapshot(good[:8] + storage.frame((b"\x95" + data + b"\x01" * 4,)),
                                    "deep")
        with pytest.raises(CorruptFileError):
            storage.decode_hard_state(good[:8] + storage.frame((b"\x93" + data + b"\x01\x01",)),
                                      "deep")
