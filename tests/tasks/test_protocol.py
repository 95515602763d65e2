"""The queue's frames: what a client may send is checked before it reaches the log."""
from __future__ import annotations

import msgpack
import pytest

from fabric.errors import DecodeError
from fabric.tasks import protocol as p


def nested(depth: int):
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


def test_a_payload_too_deep_for_a_log_entry_is_refused_on_arrival():
    payload = nested(1021)
    msgpack.packb(payload)  # packs alone...
    with pytest.raises(DecodeError, match="does not pack"):
        p.spec_from_map({"type": "t", "payload": payload})  # ...but not inside an entry


def test_rows_are_cut_into_frames_under_the_limit():
    rows = [["id", 1, "x" * 1000] for _ in range(100)]
    chunks = p.cut_by_size(rows, limit=10_000)
    assert sum(chunks, []) == rows
    assert all(len(msgpack.packb(c)) <= 10_000 + 64 for c in chunks) and len(chunks) > 1
    assert p.cut_by_size([["big", "y" * 50_000]], limit=10_000) == [[["big", "y" * 50_000]]]


@pytest.mark.parametrize("spec, says", [
    ({"type": "t", "cron": "0 0 30 2 *"}, "cron"),
    ({"type": "t", "every": 0.001}, "every"),
    ({"type": "t", "every": 1, "cron": "* * * * *"}, "not both"),
    ({"type": "t", "delay": 1, "run_at": 5}, "not both"),
    ({"type": "t", "retries": -1}, "retries"),
    ({"type": "t", "bogus": 1}, "unknown"),
    ({"payload": 1}, "type"),
])
def test_malformed_specs_are_refused_with_a_reason(spec, says):
    with pytest.raises(DecodeError, match=says):
        p.spec_from_map(spec)
