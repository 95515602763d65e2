"""The wire codec: one table used both ways, and nothing but DecodeError out of garbage."""
from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fabric
from fabric import protocol as p
from fabric.errors import DecodeError
from fabric.ports.monitor import DOWN, UP, MonitorEvent, link_change, parse_event
from fabric.timing import Timing

PID = bytes(range(16))
CID = bytes(range(16, 32))

TABLE = [
    (p.Heartbeat(), bytes([1, 2])),
    (p.Hello(p.ROLE_CONSUMER, CID, 4096, "orders"),
     bytes([1, 1, 2, 0]) + CID + struct.pack(">I", 4096) + b"orders"),
    (p.Batch(PID, 7, 2, b"\x92\x01\x02", skip=1, acked_below=5, redelivered=True),
     bytes([1, 3, 1, 0]) + PID + struct.pack(">QIIQ", 7, 2, 1, 5) + b"\x92\x01\x02"),
    (p.Ack(PID, CID, 10, ((7, 2), (9, 1)), hold=True),
     bytes([1, 4, 1, 0]) + PID + CID + struct.pack(">I", 10) + struct.pack(">QIQI", 7, 2, 9, 1)),
    (p.Nack((3, 4)), bytes([1, 5, 0, 0]) + struct.pack(">QQ", 3, 4)),
    (p.PeerGone(CID), bytes([1, 6, 0, 0]) + CID),
    (p.Who(), bytes([1, 7])),
    (p.Drain(), bytes([1, 8])),
    (p.Hello(p.ROLE_PRODUCER, PID, 0, "", again=True), bytes([1, 1, 1, 1]) + PID + bytes(4)),
    (p.Claim(5, PID, "tcp://127.0.0.1:5551"),
     bytes([1, 9, 0, 0]) + struct.pack(">I", 5) + PID + b"tcp://127.0.0.1:5551"),
    (p.Claimed(5, PID), bytes([1, 10, 0, 0]) + struct.pack(">I", 5) + PID),
    (p.Claimed(6, PID, unanswered=True), bytes([1, 10, 1, 0]) + struct.pack(">I", 6) + PID),
    (p.Goodbye(), bytes([1, 11])),
]


@pytest.mark.parametrize("msg,frame", TABLE, ids=lambda v: type(v).__name__)
def test_each_message_has_exactly_the_documented_bytes(msg, frame):
    assert p.encode(msg) == frame
    assert p.decode(frame) == msg


def test_the_hot_path_batch_frame_matches_the_codec():
    body = p.encode_payloads([b"raw", {"k": [1, 2]}, "text"])
    frame = p.batch_frame(PID, 11, 3, 4, body)
    assert frame == p.encode(p.Batch(PID, 11, 3, body, acked_below=4))
    assert p.decode_payloads(p.decode(frame).body, 3) == [b"raw", {"k": [1, 2]}, "text"]


def test_marking_a_batch_redelivered_sets_the_flag_and_the_skip():
    frame = p.batch_frame(PID, 0, 5, 0, p.encode_payloads([1, 2, 3, 4, 5]))
    batch = p.decode(p.mark_redelivered(frame, 3))
    assert batch.redelivered and batch.skip == 3 and batch.first_seq == 0


@pytest.mark.parametrize("frame,reason", [
    (b"", "too short"),
    (bytes([2, 2]), "version"),
    (bytes([1, 77]), "unknown frame type"),
    (bytes([1, 2, 0]), "HEARTBEAT"),
    (bytes([1, 8, 0]), "DRAIN"),
    (bytes([1, 11, 0]), "GOODBYE"),
    (bytes([1, 3]) + b"\0" * 10, "shorter than its header"),
    (p.batch_frame(PID, 0, 0, 0, b""), "count 0"),
    (bytes([1, 4]) + b"\0" * 41, "partial entry"),
    (bytes([1, 5, 0, 0]), "NACK"),
    (bytes([1, 6, 0, 0]) + b"\0" * 3, "PEER_GONE"),
    (bytes([1, 1, 9, 0]) + CID + b"\0\0\0\0", "unknown role"),
    (bytes([1, 1, 2, 0]) + CID + b"\0\0\0\0" + b"\xff\xfe", "malformed"),
    (bytes([1, 3]) + b"\0" * p.MAX_FRAME, "exceeds"),
    (bytes([1, 9, 0, 0]) + bytes(20), "CLAIM of 24"),
    (bytes([1, 9, 0, 0]) + bytes(20) + b"x" * 256, "CLAIM of"),
    (bytes([1, 10, 0, 0]) + bytes(21), "CLAIMED of 25"),
    (bytes([1, 9, 0, 0]) + bytes(20) + b"\xff", "malformed"),
])
def test_malformed_frames_raise_decode_error_with_a_reason(frame, reason):
    with pytest.raises(DecodeError, match=reason):
        p.decode(frame)


@pytest.mark.parametrize("body,count", [(b"\xc1", 1), (p.encode_payloads([1]), 2),
                                        (p.encode_payloads({"a": 1}), 1)])
def test_a_batch_body_that_is_not_an_array_of_count_payloads_is_rejected(body, count):
    with pytest.raises(DecodeError):
        p.decode_payloads(body, count)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_decoding_arbitrary_bytes_raises_only_decode_error(data):
    for frame in (data, bytes([1]) + data, bytes([1, data[0] % 13 if data else 3]) + data):
        try:
            p.decode(frame)
        except DecodeError:
            pass


def test_monitor_events_parse_and_map_to_link_changes():
    import zmq
    raw = struct.pack("=HI", zmq.EVENT_HANDSHAKE_SUCCEEDED, 9)
    event = parse_event([raw, b"tcp://127.0.0.1:1"])
    assert event == MonitorEvent(zmq.EVENT_HANDSHAKE_SUCCEEDED, 9, "tcp://127.0.0.1:1")
    assert link_change(event) == UP
    assert link_change(MonitorEvent(zmq.EVENT_DISCONNECTED, 3, "")) == DOWN
    assert link_change(MonitorEvent(zmq.EVENT_CONNECT_RETRIED, 3, "")) is None
    assert parse_event([b"short", b""]) is None
    assert parse_event([raw]) is None


def test_a_peer_is_silent_after_the_timeout_and_a_consumer_after_the_consumer_timeout():
    timing = Timing(heartbeat=0.1, misses=3, consumer_timeout=2.0)
    assert timing.is_silent(0.0, 0.31) and not timing.is_silent(0.0, 0.29)
    assert timing.is_silent(0.0, 2.01, consumer=True)
    assert not timing.is_silent(0.0, 1.99, consumer=True)


def test_the_public_names_are_exactly_all_and_each_resolves_to_a_documented_object():
    assert set(fabric.__all__) == set(fabric._EXPORTS) | {"__version__"}
    assert len(fabric.__all__) == len(set(fabric.__all__))
    for name in fabric._EXPORTS:
        value = getattr(fabric, name)
        assert value.__doc__ and value.__module__.startswith(("fabric.", "nameservice.errors"))
    assert set(fabric.__all__) <= set(dir(fabric))


def test_a_process_is_frozen_once_its_peers_may_have_declared_it_dead():
    timing = Timing(heartbeat=0.1, misses=3)
    assert not timing.frozen(0.05) and not timing.frozen(0.19)
    assert timing.frozen(0.21)
    assert Timing(heartbeat=0.1, misses=1).frozen(0.11)
