"""Events for watchers: one per changed key, consecutive revisions, a bounded resumable history."""
from __future__ import annotations

import pytest

from nameservice.kv import (
    Compacted,
    Delete,
    EventType,
    KvConfig,
    LeaseGrant,
    LeaseRevoke,
    Put,
)

from ._driver import Driver


def test_put_and_delete_events_carry_revision_value_and_previous_value() -> None:
    d = Driver()
    created = d.entry(Put(b"k", b"1")).events[0]
    assert (created.type, created.key, created.value, created.mod_revision) == (
        EventType.PUT, b"k", b"1", 1,
    )
    assert created.prev_value is None
    updated = d.entry(Put(b"k", b"2")).events[0]
    assert (updated.value, updated.prev_value, updated.mod_revision) == (b"2", b"1", 2)
    deleted = d.entry(Delete(b"k")).events[0]
    assert (deleted.type, deleted.key, deleted.value, deleted.prev_value) == (
        EventType.DELETE, b"k", b"", b"2",
    )
    assert deleted.mod_revision == 3


def test_events_since_returns_changes_from_revision_on_filtered_by_prefix() -> None:
    d = Driver()
    for key in (b"a/1", b"b/1", b"a/2", b"a/1"):
        d.do(Put(key, b"v"))
    assert [e.mod_revision for e in d.machine.events_since(2)] == [2, 3, 4]
    assert [(e.key, e.mod_revision) for e in d.machine.events_since(1, b"a/")] == [
        (b"a/1", 1), (b"a/2", 3), (b"a/1", 4),
    ]
    assert d.machine.events_since(5) == []
    assert d.machine.events_since(0) == d.machine.events_since(1)


def test_history_drops_oldest_events_and_reports_compaction() -> None:
    d = Driver(KvConfig(history_events=3))
    for i in range(5):
        d.do(Put(b"k", str(i)))
    assert [e.mod_revision for e in d.machine.events_since(3)] == [3, 4, 5]
    with pytest.raises(Compacted) as info:
        d.machine.events_since(2)
    assert info.value.oldest == 3 == d.machine.oldest_event_revision


def test_history_byte_bound_drops_large_events() -> None:
    d = Driver(KvConfig(history_bytes=10_000))
    d.do(Put(b"small", b"x"))
    d.do(Put(b"big", b"x" * 20_000))
    with pytest.raises(Compacted) as info:
        d.machine.events_since(1)
    assert info.value.oldest == 3
    d.do(Put(b"small", b"y"))
    assert [e.mod_revision for e in d.machine.events_since(3)] == [3]


def test_lease_revoke_emits_a_delete_per_key() -> None:
    d = Driver()
    lease = d.do(LeaseGrant(0, 1000)).id
    d.do(Put(b"n/a", b"1", lease=lease))
    d.do(Put(b"n/b", b"1", lease=lease))
    d.do(LeaseRevoke(lease))
    assert [(e.type, e.key) for e in d.machine.events_since(3, b"n/")] == [
        (EventType.DELETE, b"n/a"), (EventType.DELETE, b"n/b"),
    ]


def test_after_restore_old_revisions_are_compacted_and_new_ones_served() -> None:
    d = Driver()
    d.do(Put(b"k", b"1"))
    d.do(Put(b"k", b"2"))
    other = Driver()
    other.machine.restore(d.machine.snapshot())
    with pytest.raises(Compacted) as info:
        other.machine.events_since(2)
    assert info.value.oldest == 3
    assert other.machine.events_since(3) == []
    other.do(Put(b"k", b"3"))
    assert [e.value for e in other.machine.events_since(3)] == [b"3"]


def test_clone_resync_range_then_events_rebuilds_the_store() -> None:
    """The resync procedure of docs/kv.md: range at revision R, then events from R + 1."""
    d = Driver(KvConfig(history_events=4))
    for i in range(10):
        d.do(Put(f"k{i % 3}", str(i)))
    watcher_rev = 1
    with pytest.raises(Compacted):
        d.machine.events_since(watcher_rev + 1)
    # resync: a full range and the revision it was taken at (one atomic read)
    snapshot_rev = d.machine.revision
    cache = {kv.key: kv.value for kv in d.machine.range()}
    d.do(Delete(b"k1"))
    d.do(Put(b"k9", b"new"))
    for event in d.machine.events_since(snapshot_rev + 1):
        if event.type is EventType.PUT:
            cache[event.key] = event.value
        else:
            cache.pop(event.key, None)
    assert cache == {kv.key: kv.value for kv in d.machine.range()}
