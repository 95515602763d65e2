"""Each command's effect on the store, its revisions and its result."""
from __future__ import annotations

import pytest

from nameservice.kv import (
    Batch,
    Cas,
    CasResult,
    Delete,
    DeleteRange,
    DeleteResult,
    KeyValue,
    KvConfig,
    KvStateMachine,
    LeaseExpire,
    LeaseGrant,
    LeaseGrantResult,
    LeaseRevoke,
    LeaseRevokeResult,
    Put,
    PutResult,
    RejectCode,
    Rejected,
    encode_command,
)

from ._driver import Driver


@pytest.fixture
def d() -> Driver:
    return Driver(KvConfig(min_lease_ttl_ms=500))


def test_empty_store_has_revision_zero_and_no_keys(d: Driver) -> None:
    assert d.machine.revision == 0
    assert d.machine.get(b"a") is None
    assert d.machine.range() == []


def test_put_creates_key_with_revisions_and_version_one(d: Driver) -> None:
    assert d.do(Put(b"a", b"1")) == PutResult(1, None)
    assert d.machine.get(b"a") == KeyValue(b"a", b"1", 1, 1, 1, 0)


def test_put_over_existing_key_keeps_create_revision_and_bumps_version(d: Driver) -> None:
    d.do(Put(b"a", b"1"))
    d.do(Put(b"b", b"x"))
    assert d.do(Put(b"a", b"2")) == PutResult(3, None)
    assert d.machine.get(b"a") == KeyValue(b"a", b"2", 1, 3, 2, 0)


def test_put_with_prev_kv_returns_previous_key_value(d: Driver) -> None:
    d.do(Put(b"a", b"1"))
    result = d.do(Put(b"a", b"2", prev_kv=True))
    assert result == PutResult(2, KeyValue(b"a", b"1", 1, 1, 1, 0))
    assert d.do(Put(b"new", b"v", prev_kv=True)).prev is None


def test_str_keys_and_values_are_stored_as_utf8_bytes(d: Driver) -> None:
    d.do(Put("clé", "välue"))
    assert d.machine.get("clé".encode()).value == "välue".encode()
    assert d.machine.get("clé") == d.machine.range("cl")[0]
    assert d.machine.events_since(1, "cl")[0].key == "clé".encode()


def test_delete_removes_key_and_takes_one_revision(d: Driver) -> None:
    d.do(Put(b"a", b"1"))
    assert d.do(Delete(b"a")) == DeleteResult(2, 1)
    assert d.machine.get(b"a") is None
    assert d.machine.range() == []


def test_delete_of_missing_key_changes_nothing(d: Driver) -> None:
    d.do(Put(b"a", b"1"))
    assert d.do(Delete(b"zz")) == DeleteResult(1, 0)
    assert d.machine.revision == 1


def test_recreated_key_starts_a_new_life(d: Driver) -> None:
    d.do(Put(b"a", b"1"))
    d.do(Put(b"a", b"2"))
    d.do(Delete(b"a"))
    d.do(Put(b"a", b"3"))
    assert d.machine.get(b"a") == KeyValue(b"a", b"3", 4, 4, 1, 0)


def test_range_returns_keys_under_prefix_sorted(d: Driver) -> None:
    for key in (b"b/2", b"a", b"b/1", b"b", b"c", b"b/10", b"b\xff\xff", b"b0"):
        d.do(Put(key, key))
    assert [kv.key for kv in d.machine.range(b"b/")] == [b"b/1", b"b/10", b"b/2"]
    assert [kv.key for kv in d.machine.range(b"b")] == [
        b"b", b"b/1", b"b/10", b"b/2", b"b0", b"b\xff\xff",
    ]
    assert [kv.key for kv in d.machine.range(b"b\xff")] == [b"b\xff\xff"]
    assert [kv.key for kv in d.machine.range()] == sorted(
        [b"b/2", b"a", b"b/1", b"b", b"c", b"b/10", b"b\xff\xff", b"b0"]
    )
    assert [kv.key for kv in d.machine.range(b"b/", limit=2)] == [b"b/1", b"b/10"]
    assert d.machine.range(b"x") == []


def test_range_with_all_ff_prefix_is_unbounded_above(d: Driver) -> None:
    d.do(Put(b"\xff", b"1"))
    d.do(Put(b"\xff\xff\x00", b"2"))
    d.do(Put(b"\xfe", b"3"))
    assert [kv.key for kv in d.machine.range(b"\xff")] == [b"\xff", b"\xff\xff\x00"]


def test_delete_range_deletes_prefix_one_revision_per_key_in_key_order(d: Driver) -> None:
    for key in (b"p/b", b"p/a", b"q", b"p/c"):
        d.do(Put(key, b"v"))
    applied = d.entry(DeleteRange(b"p/"))
    assert applied.results == [DeleteResult(7, 3)]
    assert [(e.key, e.mod_revision) for e in applied.events] == [
        (b"p/a", 5), (b"p/b", 6), (b"p/c", 7),
    ]
    assert [kv.key for kv in d.machine.range()] == [b"q"]


def test_delete_range_with_empty_prefix_deletes_everything(d: Driver) -> None:
    d.do(Put(b"a", b"1"))
    d.do(Put(b"b", b"1"))
    assert d.do(DeleteRange(b"")) == DeleteResult(4, 2)
    assert d.machine.range() == []


def test_cas_on_value_swaps_when_equal(d: Driver) -> None:
    d.do(Put(b"a", b"old"))
    result = d.do(Cas(b"a", b"new", expect_value=b"old"))
    assert result == CasResult(True, 2, KeyValue(b"a", b"new", 1, 2, 2, 0))
    assert d.machine.get(b"a").value == b"new"


def test_cas_on_value_fails_with_current_kv_and_changes_nothing(d: Driver) -> None:
    d.do(Put(b"a", b"other"))
    result = d.do(Cas(b"a", b"new", expect_value=b"old"))
    assert result == CasResult(False, 1, KeyValue(b"a", b"other", 1, 1, 1, 0))
    assert d.machine.revision == 1
    assert d.do(Cas(b"missing", b"new", expect_value=b"")) == CasResult(False, 1, None)


def test_cas_on_mod_revision(d: Driver) -> None:
    d.do(Put(b"a", b"1"))
    d.do(Put(b"a", b"2"))
    assert not d.do(Cas(b"a", b"x", expect_mod_revision=1)).succeeded
    assert d.do(Cas(b"a", b"x", expect_mod_revision=2)).succeeded
    # mod_revision 0 stands for "absent"
    assert d.do(Cas(b"b", b"y", expect_mod_revision=0)).succeeded
    assert not d.do(Cas(b"b", b"z", expect_mod_revision=0)).succeeded


def test_cas_expect_absent(d: Driver) -> None:
    assert d.do(Cas(b"a", b"1", expect_absent=True)) == CasResult(
        True, 1, KeyValue(b"a", b"1", 1, 1, 1, 0)
    )
    failed = d.do(Cas(b"a", b"2", expect_absent=True))
    assert failed == CasResult(False, 1, KeyValue(b"a", b"1", 1, 1, 1, 0))


def test_cas_with_no_value_deletes_on_match(d: Driver) -> None:
    d.do(Put(b"a", b"mine"))
    assert not d.do(Cas(b"a", None, expect_value=b"theirs")).succeeded
    assert d.do(Cas(b"a", None, expect_value=b"mine")) == CasResult(True, 2, None)
    assert d.machine.get(b"a") is None


def test_failed_commands_take_no_revision(d: Driver) -> None:
    d.do(Put(b"a", b"1"))
    d.do(Cas(b"a", b"2", expect_value=b"nope"))
    d.do(Delete(b"nope"))
    d.do(DeleteRange(b"nope"))
    d.do(LeaseRevoke(99))
    assert d.machine.revision == 1
    assert d.machine.events_since(2) == []


def test_lease_grant_picks_ids_and_raises_ttl_to_minimum(d: Driver) -> None:
    assert d.do(LeaseGrant(0, 10_000)) == LeaseGrantResult(1, 10_000, 0)
    assert d.do(LeaseGrant(7, 100)) == LeaseGrantResult(7, 500, 0)
    assert d.do(LeaseGrant(0, 600)).id == 8
    assert d.do(LeaseGrant(7, 600)) == Rejected(RejectCode.LEASE_EXISTS, "lease 7 already exists")
    assert d.machine.leases() == {1: 10_000, 7: 500, 8: 600}


def test_auto_lease_id_skips_ids_in_use(d: Driver) -> None:
    d.do(LeaseGrant(0, 1000))  # 1
    d.do(LeaseGrant(3, 1000))
    d.do(LeaseRevoke(3))
    d.do(LeaseGrant(5, 1000))
    assert d.do(LeaseGrant(0, 1000)).id == 6


def test_put_with_unknown_lease_is_rejected_and_changes_nothing(d: Driver) -> None:
    result = d.do(Put(b"a", b"1", lease=42))
    assert isinstance(result, Rejected) and result.code is RejectCode.LEASE_NOT_FOUND
    assert d.machine.get(b"a") is None and d.machine.revision == 0


def test_revoking_a_lease_deletes_its_keys_each_as_an_event(d: Driver) -> None:
    lease = d.do(LeaseGrant(0, 1000)).id
    d.do(Put(b"k2", b"v", lease=lease))
    d.do(Put(b"k1", b"v", lease=lease))
    d.do(Put(b"other", b"v"))
    applied = d.entry(LeaseRevoke(lease))
    assert applied.results == [LeaseRevokeResult(True, 2, 5)]
    assert [(e.type.name, e.key, e.mod_revision) for e in applied.events] == [
        ("DELETE", b"k1", 4), ("DELETE", b"k2", 5),
    ]
    assert [kv.key for kv in d.machine.range()] == [b"other"]
    assert d.machine.leases() == {}
    assert d.machine.lease_keys(lease) is None


def test_lease_expire_deletes_keys_and_is_harmless_when_lease_is_gone(d: Driver) -> None:
    lease = d.do(LeaseGrant(0, 1000)).id
    d.do(Put(b"svc/a", b"tcp://1", lease=lease))
    assert d.do(LeaseExpire(lease)) == LeaseRevokeResult(True, 1, 2)
    assert d.do(LeaseExpire(lease)) == LeaseRevokeResult(False, 0, 2)
    assert d.machine.get(b"svc/a") is None


def test_put_moves_key_between_leases_and_off_them(d: Driver) -> None:
    one = d.do(LeaseGrant(0, 1000)).id
    two = d.do(LeaseGrant(0, 1000)).id
    d.do(Put(b"k", b"v", lease=one))
    d.do(Put(b"k", b"v", lease=two))
    assert d.machine.lease_keys(one) == [] and d.machine.lease_keys(two) == [b"k"]
    d.do(Put(b"k", b"v"))
    assert d.machine.lease_keys(two) == []
    d.do(LeaseRevoke(two))
    assert d.machine.get(b"k") is not None


def test_deleted_key_leaves_its_lease(d: Driver) -> None:
    lease = d.do(LeaseGrant(0, 1000)).id
    d.do(Put(b"k", b"v", lease=lease))
    d.do(Delete(b"k"))
    assert d.machine.lease_keys(lease) == []
    d.do(Put(b"k", b"again"))
    assert d.do(LeaseRevoke(lease)) == LeaseRevokeResult(True, 0, 3)
    assert d.machine.get(b"k").value == b"again"


def test_cas_can_attach_a_lease(d: Driver) -> None:
    lease = d.do(LeaseGrant(0, 1000)).id
    assert d.do(Cas(b"k", b"v", expect_absent=True, lease=lease)).succeeded
    assert d.machine.lease_keys(lease) == [b"k"]
    rejected = d.do(Cas(b"j", b"v", expect_absent=True, lease=99))
    assert isinstance(rejected, Rejected) and rejected.code is RejectCode.LEASE_NOT_FOUND


def test_key_quota_rejects_new_keys_but_not_updates() -> None:
    d = Driver(KvConfig(max_keys=2))
    d.do(Put(b"a", b"1"))
    d.do(Put(b"b", b"1"))
    result = d.do(Put(b"c", b"1"))
    assert isinstance(result, Rejected) and result.code is RejectCode.TOO_MANY_KEYS
    assert not isinstance(d.do(Cas(b"c", b"1", expect_absent=True)), CasResult)
    assert d.do(Put(b"a", b"2")) == PutResult(3, None)


def test_lease_quota_rejects_grants() -> None:
    d = Driver(KvConfig(max_leases=1))
    d.do(LeaseGrant(0, 1000))
    result = d.do(LeaseGrant(0, 1000))
    assert isinstance(result, Rejected) and result.code is RejectCode.TOO_MANY_LEASES


def test_batch_applies_items_in_order_one_result_each(d: Driver) -> None:
    applied = d.entry(
        Batch((Put(b"a", b"1"), Cas(b"a", b"2", expect_value=b"1"), Delete(b"a"), Put(b"b", b"")))
    )
    assert [type(r).__name__ for r in applied.results] == [
        "PutResult", "CasResult", "DeleteResult", "PutResult",
    ]
    assert applied.results[1].succeeded
    assert [e.mod_revision for e in applied.events] == [1, 2, 3, 4]
    assert d.machine.revision == 4


def test_malformed_entry_is_counted_and_changes_nothing(d: Driver) -> None:
    d.do(Put(b"a", b"1"))
    applied = d.machine.apply_entry(2, b"\x01\xc1garbage")
    assert len(applied.results) == 1 and applied.results[0].code is RejectCode.MALFORMED
    assert d.machine.applied_index == 2 and d.machine.revision == 1
    assert d.machine.stats()["malformed"] == 1


def test_noop_entry_advances_applied_index_only(d: Driver) -> None:
    applied = d.machine.apply_entry(1, b"")
    assert applied.results == () and d.machine.applied_index == 1 and d.machine.revision == 0


def test_entries_at_or_below_applied_index_are_ignored() -> None:
    m = KvStateMachine()
    m.apply_entry(5, encode_command(Put(b"a", b"1")))
    assert m.apply_entry(5, encode_command(Put(b"a", b"2"))).results == ()
    assert m.apply_entry(3, encode_command(Put(b"a", b"3"))).results == ()
    assert m.get(b"a").value == b"1" and m.applied_index == 5


def test_results_share_the_stored_objects_instead_of_copying(d: Driver) -> None:
    d.do(Put(b"a", b"1"))
    applied = d.entry(Put(b"a", b"2", prev_kv=True))
    assert applied.events[0].kv is d.machine.get(b"a")
    assert applied.results[0].prev is applied.events[0].prev
