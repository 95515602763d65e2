"""Client sessions: a retried request gets its original result and is never applied twice."""
from __future__ import annotations

from nameservice.kv import (
    Batch,
    Cas,
    CasResult,
    CloseSession,
    KvConfig,
    LeaseGrant,
    LeaseRevoke,
    OpenSession,
    Put,
    PutResult,
    RejectCode,
    Rejected,
    Request,
    SessionClosed,
    SessionOpened,
)

from ._driver import Driver


def test_open_session_hands_out_increasing_client_ids() -> None:
    d = Driver()
    assert d.do(OpenSession()) == SessionOpened(1)
    assert d.do(OpenSession()) == SessionOpened(2)
    assert d.machine.stats()["sessions"] == 2


def test_retried_cas_returns_original_result_and_is_not_applied_again() -> None:
    d = Driver()
    c = d.session()
    d.do(Put(b"lock", b"free"))
    take = Request(c, 1, Cas(b"lock", b"mine", expect_value=b"free"))
    first = d.do(take)
    assert first.succeeded
    d.do(Put(b"lock", b"free"))  # someone frees it again meanwhile
    again = d.entry(take)
    assert again.results == [first]  # the original success, not a second swap
    assert again.events == []
    assert d.machine.get(b"lock").value == b"free"
    assert d.machine.stats()["duplicates"] == 1


def test_retried_failed_cas_keeps_reporting_the_original_failure() -> None:
    d = Driver()
    c = d.session()
    d.do(Put(b"k", b"x"))
    attempt = Request(c, 1, Cas(b"k", b"new", expect_value=b"old"))
    assert d.do(attempt) == CasResult(False, 1, d.machine.get(b"k"))
    d.do(Put(b"k", b"old"))  # now the compare would hold
    assert not d.do(attempt).succeeded
    assert d.machine.get(b"k").value == b"old"


def test_duplicate_inside_the_same_batch_is_applied_once() -> None:
    d = Driver()
    c = d.session()
    req = Request(c, 1, Put(b"k", b"v"))
    applied = d.entry(Batch((req, req)))
    assert applied.results == [PutResult(1), PutResult(1)]
    assert len(applied.events) == 1


def test_sessions_are_independent() -> None:
    d = Driver()
    a, b = d.session(), d.session()
    d.do(Request(a, 1, Put(b"k", b"from-a")))
    assert d.do(Request(b, 1, Put(b"k", b"from-b"))) == PutResult(2)
    assert d.machine.get(b"k").value == b"from-b"


def test_out_of_order_seqs_inside_the_window_are_each_applied_once() -> None:
    d = Driver()
    c = d.session()
    d.do(Request(c, 2, Put(b"k", b"2")))
    d.do(Request(c, 1, Put(b"k", b"1")))
    assert d.do(Request(c, 2, Put(b"k", b"2"))) == PutResult(1)
    assert d.machine.get(b"k").value == b"1" and d.machine.revision == 2


def test_retry_below_the_window_is_rejected_not_reapplied() -> None:
    d = Driver(KvConfig(session_window=2, max_cached_results=2))
    c = d.session()
    for seq in (1, 2, 3):
        d.do(Request(c, seq, Put(b"k", str(seq))))
    result = d.do(Request(c, 1, Put(b"k", "1")))
    assert isinstance(result, Rejected) and result.code is RejectCode.SEQ_TOO_OLD
    assert d.machine.get(b"k").value == b"3" and d.machine.revision == 3
    # still inside the window: the original result
    assert d.do(Request(c, 2, Put(b"k", "2"))) == PutResult(2)


def test_ack_forgets_results_and_rejects_later_retries_of_them() -> None:
    d = Driver()
    c = d.session()
    d.do(Request(c, 1, Put(b"k", b"1")))
    d.do(Request(c, 2, Put(b"k", b"2")))
    assert d.machine.stats()["cached_results"] == 2
    d.do(Request(c, 3, Put(b"k", b"3"), ack=2))
    assert d.machine.stats()["cached_results"] == 1
    result = d.do(Request(c, 2, Put(b"k", b"2")))
    assert isinstance(result, Rejected) and result.code is RejectCode.SEQ_TOO_OLD
    assert d.machine.get(b"k").value == b"3"


def test_unknown_session_is_rejected_and_nothing_applied() -> None:
    d = Driver()
    result = d.do(Request(77, 1, Put(b"k", b"v")))
    assert isinstance(result, Rejected) and result.code is RejectCode.SESSION_EXPIRED
    assert d.machine.revision == 0


def test_least_recently_used_session_expires_beyond_max_sessions() -> None:
    d = Driver(KvConfig(max_sessions=2))
    a, b = d.session(), d.session()
    d.do(Request(a, 1, Put(b"k", b"a")))  # a is now more recent than b
    c = d.session()  # evicts b
    assert d.do(Request(b, 1, Put(b"k", b"b"))).code is RejectCode.SESSION_EXPIRED
    assert d.do(Request(a, 1, Put(b"k", b"a"))) == PutResult(1)
    assert d.do(Request(c, 1, Put(b"k", b"c"))) == PutResult(2)
    assert d.machine.stats()["sessions_evicted"] == 1


def test_total_cached_results_bound_expires_lru_sessions() -> None:
    d = Driver(KvConfig(session_window=3, max_cached_results=4))
    a, b = d.session(), d.session()
    for seq in (1, 2, 3):
        d.do(Request(a, seq, Put(b"a", str(seq))))
    d.do(Request(b, 1, Put(b"b", b"1")))
    d.do(Request(b, 2, Put(b"b", b"2")))  # 5 results > 4: a (least recent) goes
    assert d.machine.stats()["cached_results"] == 2
    assert d.do(Request(a, 1, Put(b"a", b"1"))).code is RejectCode.SESSION_EXPIRED


def test_close_session_forgets_it() -> None:
    d = Driver()
    c = d.session()
    d.do(Request(c, 1, Put(b"k", b"v")))
    assert d.do(CloseSession(c)) == SessionClosed(True)
    assert d.do(CloseSession(c)) == SessionClosed(False)
    assert d.do(Request(c, 2, Put(b"k", b"w"))).code is RejectCode.SESSION_EXPIRED
    assert d.machine.stats()["cached_results"] == 0


def test_a_request_that_closes_its_own_session_leaves_no_cached_result() -> None:
    d = Driver()
    c = d.session()
    assert d.do(Request(c, 1, CloseSession(c))) == SessionClosed(True)
    assert d.machine.stats()["cached_results"] == 0 and d.machine.stats()["sessions"] == 0


def test_rejections_from_the_store_are_remembered_like_any_result() -> None:
    d = Driver()
    c = d.session()
    grant = Request(c, 1, Put(b"k", b"v", lease=5))
    assert d.do(grant).code is RejectCode.LEASE_NOT_FOUND
    d.do(LeaseGrant(5, 1000))
    assert d.do(grant).code is RejectCode.LEASE_NOT_FOUND  # original outcome, not applied now
    assert d.machine.get(b"k") is None


def test_bare_commands_are_not_deduplicated() -> None:
    d = Driver()
    d.do(Put(b"k", b"v"))
    d.do(Put(b"k", b"v"))
    assert d.machine.revision == 2


def test_a_session_holds_at_most_its_lease_quota_and_others_keep_granting() -> None:
    d = Driver(KvConfig(max_leases=3, max_leases_per_session=2, reserved_leases=1,
                        leases_reserved_floor=1))
    greedy, other, third = d.session(), d.session(), d.session()

    def grant(client: int, seq: int):
        return d.do(Request(client, seq, LeaseGrant(0, 1000)))

    assert [type(grant(greedy, seq)).__name__ for seq in (1, 2)] == ["LeaseGrantResult"] * 2
    refused = grant(greedy, 3)
    assert isinstance(refused, Rejected) and refused.code is RejectCode.TOO_MANY_LEASES
    assert "too many leases for this client" in refused.message
    granted = grant(other, 1)  # the third lease: the shared pool is full now
    assert not isinstance(granted, Rejected)
    assert isinstance(grant(other, 2), Rejected)  # other holds one: no reserve for it
    assert not isinstance(grant(third, 1), Rejected)  # third holds none: the reserve serves it
    assert d.machine.stats()["leases_refused"] == 2
    # The owners survive a snapshot: the restored state refuses the same grants.
    restored = Driver(d.machine.config)
    restored.machine.restore(d.machine.snapshot())
    assert restored.machine.snapshot() == d.machine.snapshot()
    again = restored.machine.apply(restored.machine.applied_index + 1,
                                   Request(greedy, 4, LeaseGrant(0, 1000)))
    assert isinstance(again.results[0], Rejected)
    # Revoked leases give their owner room again.
    assert d.do(Request(greedy, 5, LeaseRevoke(1))).found
    assert d.do(Request(greedy, 6, LeaseRevoke(2))).found
    assert not isinstance(grant(greedy, 7), Rejected)
