"""The demo's numbers from record files (pure)."""
from __future__ import annotations

from fabric.butterfly.report import (
    FIELDS,
    RECORD,
    Delivery,
    longest_gap_ms,
    read_deliveries,
    security_summary,
    summarize,
    timeline,
)


def ident(producer: int, i: int) -> int:
    return producer << 40 | i


def test_a_clean_run_has_nothing_lost_or_duplicated():
    ds = [Delivery(ident(p, i), 100 + i / 100, "a", False) for p in (1, 2) for i in range(50)]
    r = summarize({1: 50, 2: 50}, ds, kill_at=None, reresolve_ms=3.21, drain_ms=None)
    assert tuple(r) == FIELDS
    assert (r["sent"], r["delivered"], r["lost"], r["duplicates"]) == (100, 100, 0, 0)
    assert r["reresolve_ms"] == 3.2
    assert r["throughput_msgs_s"] == round(100 / 0.49)


def test_lost_duplicates_and_redelivered_are_counted():
    ds = [Delivery(ident(1, 0), 1.0, "a", False), Delivery(ident(1, 0), 1.1, "b", True),
          Delivery(ident(1, 2), 1.2, "b", True)]
    r = summarize({1: 3}, ds, kill_at=None, reresolve_ms=None, drain_ms=None)
    assert (r["delivered"], r["duplicates"], r["lost"], r["redelivered"]) == (2, 1, 1, 2)


def test_ids_beyond_what_a_producer_sent_do_not_hide_a_loss():
    ds = [Delivery(ident(1, 5), 1.0, "a", False)]
    assert summarize({1: 1}, ds, kill_at=None, reresolve_ms=None, drain_ms=None)["lost"] == 1


def test_the_failover_gap_counts_the_wait_for_the_first_delivery():
    assert abs(longest_gap_ms([0.5, 1.030, 1.040, 1.100], 1.0, 2.0) - 60) < 1e-6
    assert abs(longest_gap_ms([1.2, 1.21], 1.0, 2.0) - 200) < 1e-6
    assert longest_gap_ms([0.5], 1.0, 2.0) == 0.0


def test_records_decode_and_a_torn_tail_is_ignored():
    data = RECORD.pack(7, 1.5, 1, 1) + RECORD.pack(8, 1.6, 0, 0)[:-3]
    assert read_deliveries(data, {1: "tcp://x:1"}) == [Delivery(7, 1.5, "tcp://x:1", True)]


def test_timeline_bins_per_intermediary():
    ds = [Delivery(1, 10.05, "a", False), Delivery(2, 10.25, "b", False),
          Delivery(3, 10.26, "b", False)]
    assert timeline(ds, 10.0, 0.1) == {"a": [1, 0, 0], "b": [0, 0, 2]}


def test_stalls_are_counted_from_every_process_log(tmp_path):
    from fabric.butterfly.scenario import count_stalls

    (tmp_path / "a.log").write_text("x WARNING this process was frozen for 500 ms\nother\n")
    (tmp_path / "b.log").write_text("y WARNING intermediary butterfly was frozen; rebinding\n")
    (tmp_path / "c.out").write_text("frozen\n")  # stdout copies are not logs
    assert count_stalls(tmp_path) == 2


def test_the_security_summary_keeps_each_process_and_sums_the_counters():
    s = security_summary({
        "node-1": {"mode": "curve", "key": "K" * 40, "identity": "node-1", "zap_allowed": 7,
                   "zap_refused_unknown_key": 0, "zap_refused_mechanism": 0,
                   "zap_bad_requests": 0},
        "consumer-1": {"mode": "curve", "identity": "consumer-1", "zap_allowed": 2,
                       "zap_refused_unknown_key": 3},
        "producer-1": {"mode": "?", "error": "no answer"},
    })
    assert list(s["processes"]) == ["consumer-1", "node-1", "producer-1"]
    assert s["processes"]["node-1"] == {"mode": "curve", "identity": "node-1",
                                        "zap_allowed": 7, "zap_refused_unknown_key": 0,
                                        "zap_refused_mechanism": 0, "zap_bad_requests": 0}
    assert s["processes"]["producer-1"]["error"] == "no answer"
    assert (s["curve"], s["zap_allowed"], s["zap_refused_unknown_key"], s["refused"]) == \
        (2, 9, 3, 3)
