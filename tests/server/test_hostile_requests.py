"""Hostile client requests at the intake, alone (issue 13): every request with an id gets a
reply, nesting as deep as msgpack allows breaks nothing, and replies are bounded in bytes."""
from __future__ import annotations

import msgpack

from nameservice import wire
from nameservice.kv import Batch, Put
from nameservice.raft.types import ReadState
from nameservice.server.seam import Outbox
from tests.server.test_intake import CLIENT, Setup, get

MIB = 1 << 20
DEEP = msgpack.unpackb(b"\x91" * 1020 + b"\xc0")  # as deep as msgpack decodes (it refuses 1,025)


def test_an_unknown_op_gets_a_bad_request_reply():
    s = Setup()
    s.send([7, 99, b"x"], [8, "op"], [9, DEEP])
    assert s.statuses() == [(7, wire.ST_BAD_REQUEST), (8, wire.ST_BAD_REQUEST),
                            (9, wire.ST_BAD_REQUEST)]
    assert "unknown op" in s.replies[0][3] and s.intake.counters["bad_requests"] == 3


def test_a_batch_over_the_limit_gets_a_reply_for_every_request_in_frames_a_client_takes():
    s = Setup()
    s.core.lead()
    requests = [[rid, wire.OP_STATUS] for rid in range(wire.MAX_BATCH + 1)]
    s.intake.handle_frames([[CLIENT, wire.frame(wire.REQUEST, requests + [["no id"]])]])
    assert [rid for rid, _ in s.statuses()] == list(range(wire.MAX_BATCH + 1))
    assert {status for _, status in s.statuses()} == {wire.ST_BAD_REQUEST}
    assert "at most 65,536 items" in s.replies[0][3]
    assert s.intake.counters["bad_client_frames"] == 1
    outbox = Outbox()
    for identity, rid, status, payload in s.replies:
        outbox.queue_reply(identity, rid, status, payload)
    frames = outbox.reply_frames()
    assert len(frames) == 2
    answered = [w[0] for _, data in frames
                for w in wire.split_frame(data, wire.MAX_CLIENT_FRAME)[1]]
    assert answered == list(range(wire.MAX_BATCH + 1))


def test_requests_nested_as_deep_as_msgpack_allows_are_answered_or_counted_never_raised():
    s = Setup()
    s.core.lead()
    shapes = [DEEP, [DEEP], [DEEP, 1], [1, DEEP], [2, wire.OP_GET, DEEP, True],
              [3, wire.OP_RANGE, b"", DEEP, True], [4, wire.OP_WRITE, DEEP],
              [5, wire.OP_WRITE, [16, DEEP]], [6, wire.OP_KEEPALIVE, DEEP],
              [7, wire.OP_STALE_WRITE, b"k", DEEP], [8, wire.OP_WATCH, DEEP, b"k", True, 0],
              [9, wire.OP_WATCH_CANCEL, DEEP]]
    for shape in shapes:
        s.send(shape)
    assert [rid for rid, _ in s.statuses()] == list(range(1, 10))
    assert {status for _, status in s.statuses()} == {wire.ST_BAD_REQUEST}
    # A Raft message nested deep is a bad peer frame.
    for w in ([DEEP, 1, 2, 3], [0, DEEP, 2, 3, 1, 1, False, False]):
        s.intake.handle_frames([[b"peer", wire.frame(wire.PEER, [w])]])
    assert s.intake.counters["bad_peer_frames"] == 2 and not s.core.stepped


def _with_values(s: Setup, count: int, size: int = MIB) -> None:
    for i in range(count):
        put = Put(b"big/%03d" % i, bytes([i % 256]) * size)
        s.machine.apply(s.machine.applied_index + 1, Batch((put,)))


def test_many_gets_of_large_values_in_one_frame_share_one_reply_budget():
    """Issue 13: 4.5 KB of stale GETs of a 1 MiB value made a 268 MB reply."""
    for consistent in (False, True):
        s = Setup()
        s.core.lead()
        _with_values(s, 1)
        s.send(*[get(rid, b"big/000", consistent) for rid in range(1, 269)])
        if consistent:
            s.reads.start()
            s.reads.on_read_states([ReadState(s.machine.applied_index, s.core.read_indexes[0])])
            s.reads.release()
        statuses = [status for _, status in s.statuses()]
        served = wire.MAX_REPLY_BYTES // (MIB + 64)
        assert statuses == [wire.ST_OK] * served + [wire.ST_BUSY] * (268 - served)
        assert s.reads.counters["replies_over_budget"] == 268 - served
        assert "retry" in s.replies[-1][3]
        outbox = Outbox()
        for reply in s.replies:
            outbox.queue_reply(*reply)
        assert all(len(data) <= wire.MAX_CLIENT_FRAME for _, data in outbox.reply_frames())
        # The next frame has a budget of its own: a client's retry is served.
        s.replies.clear()
        s.send(get(1000, b"big/000", False))
        assert s.statuses() == [(1000, wire.ST_OK)]


def test_a_range_whose_reply_is_over_the_limit_is_refused_with_a_clear_error():
    s = Setup()
    s.core.lead()
    _with_values(s, 10)
    s.send([1, wire.OP_RANGE, b"big/", 0, False], [2, wire.OP_RANGE, b"big/", 3, False])
    (_, _, status1, message), (_, _, status2, payload) = s.replies
    assert status1 == wire.ST_BAD_REQUEST and message.startswith("reply too large: ")
    assert f"limit {wire.MAX_REPLY_BYTES:,}; ask for fewer keys" in message
    assert status2 == wire.ST_OK and len(payload[0]) == 3
    assert s.reads.counters["replies_too_large"] == 1
