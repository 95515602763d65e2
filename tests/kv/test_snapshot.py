"""Snapshots cover keys, revision, leases and sessions; bad snapshot bytes change nothing."""
from __future__ import annotations

import msgpack
import pytest

from nameservice.kv import (
    Cas,
    DecodeError,
    KvStateMachine,
    LeaseGrant,
    LeaseRevoke,
    Put,
    PutResult,
    RejectCode,
    Request,
)

from ._driver import Driver


def _populated() -> tuple[Driver, int]:
    d = Driver()
    client = d.session()
    lease = d.do(LeaseGrant(0, 2000)).id
    d.do(Request(client, 1, Put(b"svc/a", b"tcp://a", lease=lease)))
    d.do(Request(client, 2, Cas(b"cfg", b"1", expect_absent=True)))
    d.do(Put(b"plain", b"x"))
    return d, client


def test_restore_reproduces_state_and_identical_snapshot() -> None:
    d, _ = _populated()
    data = d.machine.snapshot()
    other = KvStateMachine()
    other.restore(data)
    assert other.snapshot() == data
    assert other.range() == d.machine.range()
    assert other.revision == d.machine.revision == 3
    assert other.applied_index == d.machine.applied_index
    assert other.leases() == {1: 2000}
    assert other.lease_keys(1) == [b"svc/a"]


def test_sessions_survive_restore_so_retries_stay_exactly_once() -> None:
    d, client = _populated()
    other = Driver()
    other.machine.restore(d.machine.snapshot())
    again = other.do(Request(client, 2, Cas(b"cfg", b"1", expect_absent=True)))
    assert again.succeeded and other.machine.revision == 3
    assert other.session() == client + 1  # client ids keep counting


def test_leases_survive_restore_and_still_delete_their_keys() -> None:
    d, _ = _populated()
    other = Driver()
    other.machine.restore(d.machine.snapshot())
    other.do(LeaseRevoke(1))
    assert other.machine.get(b"svc/a") is None
    assert other.do(LeaseGrant(0, 1000)).id == 2


def test_insertion_order_does_not_change_snapshot_bytes() -> None:
    one, two = Driver(), Driver()
    for d, keys in ((one, [b"a", b"b"]), (two, [b"b", b"a"])):
        d.do(LeaseGrant(2 if keys[0] == b"a" else 1, 1000))
        d.do(LeaseGrant(1 if keys[0] == b"a" else 2, 1000))
        for key in keys:
            d.do(Put(key, b"v"))
    # same keys with different revisions: the content differs, but only in the revisions
    assert sorted(kv.key for kv in one.machine.range()) == [b"a", b"b"]
    restored = KvStateMachine()
    restored.restore(one.machine.snapshot())
    assert restored.snapshot() == one.machine.snapshot()


def _tampered(data: bytes, change) -> bytes:
    wire = msgpack.unpackb(data[1:], raw=False)
    change(wire)
    return data[:1] + msgpack.packb(wire, use_bin_type=True)


def _set_field(i, value):
    def change(wire):
        wire[i] = value

    return change


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda s: b"",
        lambda s: b"\x09" + s[1:],
        lambda s: s[: len(s) // 2],
        lambda s: s + b"\x00",
        lambda s: _tampered(s, _set_field(1, -1)),  # negative revision
        lambda s: _tampered(s, _set_field(3, [[b"b", b"", 1, 1, 1, 0], [b"a", b"", 2, 2, 1, 0]])),
        lambda s: _tampered(s, _set_field(3, [[b"a", b"", 1, 1, 1, 0], [b"a", b"", 2, 2, 1, 0]])),
        lambda s: _tampered(s, _set_field(3, [[b"a", b"", 1, 99, 1, 0]])),  # beyond revision
        lambda s: _tampered(s, _set_field(3, [[b"a", b"", 1, 1, 1, 42]])),  # unknown lease
        lambda s: _tampered(s, _set_field(4, [[1, 1000], [1, 1000]])),  # repeated lease
        lambda s: _tampered(s, _set_field(5, [0, [[1, 0, []]]])),  # session beyond last id
        lambda s: _tampered(s, _set_field(5, [5, [[1, 0, [[1, [99]]]]]])),  # bad result
        lambda s: _tampered(s, lambda w: w.pop()),
    ],
)
def test_corrupt_snapshot_raises_decode_error_and_leaves_state_alone(corrupt) -> None:
    d, client = _populated()
    good = d.machine.snapshot()
    with pytest.raises(DecodeError):
        d.machine.restore(corrupt(good))
    assert d.machine.snapshot() == good
    assert d.do(Request(client, 3, Put(b"after", b"1"))) == PutResult(4)
    assert d.do(Request(99, 1, Put(b"x", b"1"))).code is RejectCode.SESSION_EXPIRED
