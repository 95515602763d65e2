"""Draining real processes under load: 2 producers, 2 intermediaries, 2 consumers on 127.0.0.1.

Each process kind is drained mid-stream (SIGTERM, or a drain request on its control socket): it
must exit 0 with a complete drain report, and every message must reach a handler exactly once,
none flagged redelivered, with no batch resent by a producer. A drain that cannot finish (a
consumer too slow) gives up at its timeout, says what it left, and still nothing is lost.
"""
from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter

import pytest

from nameservice.control import control_request
from tests.datapath.conftest import (
    events_from,
    read_event,
    stats_from,
    total_records,
)
from tests.datapath.procs import read_records
from tests.waiting import wait_for

PER_PRODUCER = 50_000
TOTAL = 2 * PER_PRODUCER
RATE = 25_000  # messages/s per producer: the stream lasts about 2 s

pytestmark = pytest.mark.slow


def drained_from(output: str) -> list[dict]:
    """The drain reports a process emitted (``drained`` events)."""
    return events_from(output, "drained")


def sent_from(output: str) -> int:
    """How many sends a producer says it accepted (its ``sent`` event)."""
    return events_from(output, "sent")[0]["count"]


def exits(cluster, proc, timeout: float = 30) -> str:
    """Wait for ``proc`` to exit 0 by itself; its stdout."""
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, cluster.stderr_of(proc)[-3000:]
    return out.decode()


def expected(counts: dict[int, int]) -> set[int]:
    return {(k << 32) | i for k, n in counts.items() for i in range(n)}


def check_exactly_once(outs: list[str], want: set[int]) -> None:
    records = [r for out in outs for r in read_records(out)]
    counts = Counter(payload for payload, _ in records)
    assert set(counts) >= want, f"{len(want - set(counts))} messages lost"
    assert set(counts) <= want, f"{len(set(counts) - want)} messages never sent arrived"
    twice = {m: c for m, c in counts.items() if c > 1}
    assert not twice, f"{len(twice)} messages handled more than once"
    assert not any(flag for _, flag in records), "a message was flagged redelivered"


def start(cluster, *, producer_count: int = PER_PRODUCER):
    """2 intermediaries, 2 consumers and 2 producers sending RATE msgs/s each (so that a drain
    lands mid-stream however fast the machine is)."""
    inter = [cluster.intermediary() for _ in range(2)]
    endpoints = [ep for _, ep in inter]
    consumers = [cluster.consumer(endpoints, f"consumer{n}") for n in range(2)]
    producers = [cluster.producer(endpoints, k, producer_count, "--rate", str(RATE))
                 for k in range(2)]
    for proc in producers:
        assert read_event(proc, 20, "producer", "ready")["control"].startswith("tcp://")
    return inter, consumers, producers


def stop_all(cluster, procs) -> list[dict]:
    """SIGTERM (drain) each process; each must exit 0 after a complete drain. Their stats."""
    stats = []
    for proc in procs:
        out = cluster.stop(proc)
        assert all(r["complete"] for r in drained_from(out)), out
        stats.append(stats_from(out))
    return stats


@pytest.mark.parametrize("how", ["SIGTERM", "control"])
def test_draining_an_intermediary_under_load_loses_duplicates_and_resends_nothing(cluster, how):
    inter, consumers, producers = start(cluster)
    outs = [out for _, out in consumers]
    wait_for(lambda: total_records(outs) >= TOTAL // 5, 60, "a fifth of the messages")
    victim, _ = inter[0]
    if how == "SIGTERM":
        victim.send_signal(signal.SIGTERM)
    else:
        answer = asyncio.run(control_request(victim.control, "drain", timeout=30))
        assert answer["complete"] and answer["kind"] == "intermediary", answer
    at_drain = total_records(outs)
    out = exits(cluster, victim)
    [report] = drained_from(out)
    assert report["complete"] and report["left_messages"] == 0, report
    assert report["elapsed_ms"] < 5000, report

    producer_stats = [stats_from(cluster.finish(p, timeout=120)) for p in producers]
    wait_for(lambda: total_records(outs) >= TOTAL, 60, "every message to be handled")
    stop_all(cluster, [proc for proc, _ in consumers])
    [survivor] = stop_all(cluster, [inter[1][0]])

    assert at_drain < TOTAL, "the drain did not happen mid-stream"
    check_exactly_once(outs, expected({0: PER_PRODUCER, 1: PER_PRODUCER}))
    assert all(s["batches_resent"] == 0 for s in producer_stats), producer_stats
    assert stats_from(out)["redelivered_batches"] == 0
    assert survivor["redelivered_batches"] == 0


def test_draining_a_producer_under_load_delivers_every_accepted_message_once(cluster):
    inter, consumers, producers = start(cluster, producer_count=0)  # send until SIGTERM
    outs = [out for _, out in consumers]
    wait_for(lambda: total_records(outs) >= 20_000, 60, "20,000 messages")
    sent = {}
    for index, proc in enumerate(producers):
        proc.send_signal(signal.SIGTERM)
        out = exits(cluster, proc)
        [report] = drained_from(out)
        assert report["complete"] and report["kind"] == "producer", report
        assert report["elapsed_ms"] < 2000, report
        sent[index] = sent_from(out)
        assert stats_from(out)["messages_acked"] == sent[index]
    wait_for(lambda: total_records(outs) >= sum(sent.values()), 60, "every sent message")
    stop_all(cluster, [proc for proc, _ in consumers])
    check_exactly_once(outs, expected(sent))


def test_draining_a_consumer_under_load_hands_nothing_back_to_redelivery(cluster):
    inter, consumers, producers = start(cluster)
    outs = [out for _, out in consumers]
    wait_for(lambda: total_records(outs) >= TOTAL // 5, 60, "a fifth of the messages")
    leaving, _ = consumers[0]
    leaving.send_signal(signal.SIGTERM)
    at_drain = total_records(outs)
    out = exits(cluster, leaving)
    [report] = drained_from(out)
    assert report["complete"] and report["kind"] == "consumer", report
    assert report["elapsed_ms"] < 2000, report
    left_at = total_records(outs[:1])

    for proc in producers:
        cluster.finish(proc, timeout=120)
    wait_for(lambda: total_records(outs) >= TOTAL, 60, "every message to be handled")
    assert total_records(outs[:1]) == left_at, "the drained consumer handled more after it left"
    stop_all(cluster, [consumers[1][0]])
    inter_stats = stop_all(cluster, [proc for proc, _ in inter])

    assert at_drain < TOTAL, "the drain did not happen mid-stream"
    check_exactly_once(outs, expected({0: PER_PRODUCER, 1: PER_PRODUCER}))
    assert all(s["redelivered_batches"] == 0 for s in inter_stats), inter_stats


def test_a_drain_that_cannot_finish_gives_up_in_time_says_what_it_left_and_loses_nothing(
        cluster):
    # The first intermediary's only consumer is stuck (alive, never acknowledging): its drain
    # cannot finish within one second. The other consumer is behind the second intermediary.
    first, ep1 = cluster.intermediary("--drain-timeout", "1")
    second, ep2 = cluster.intermediary()
    stuck, stuck_out = cluster.consumer([ep1], "stuck", "--stuck")
    fast, fast_out = cluster.consumer([ep2], "fast")
    count = 5_000
    # Paced, and only once both intermediaries are connected: some batches must take ep1.
    producers = [cluster.producer([ep1, ep2], k, count, "--await-links", "--rate", "2000")
                 for k in range(2)]
    wait_for(lambda: asyncio.run(control_request(first.control, "status", 10))
             ["in_flight"]["at_consumers"] > 0, 60, "batches at the stuck consumer")

    started = time.monotonic()
    first.send_signal(signal.SIGTERM)
    out, _ = first.communicate(timeout=30)
    took = time.monotonic() - started
    assert first.returncode == 1, cluster.stderr_of(first)[-3000:]
    [report] = drained_from(out.decode())
    assert not report["complete"] and report["left_messages"] > 0, report
    assert any("at consumer" in item["where"] for item in report["left"]), report
    assert took < 1 + 3, f"the drain took {took:.1f} s with a 1 s timeout"
    log = cluster.stderr_of(first)
    assert "gave up draining" in log and "left by intermediary" in log, log[-3000:]

    for proc in producers:
        cluster.finish(proc, timeout=120)
    wait_for(lambda: total_records([fast_out]) >= 2 * count, 90, "every message to be handled")
    stop_all(cluster, [fast, second])
    check_exactly_once([stuck_out, fast_out], expected({0: count, 1: count}))


def test_status_on_the_control_socket_describes_the_process(cluster):
    (proc, endpoint), = [cluster.intermediary()]
    consumer, _ = cluster.consumer([endpoint], "consumer0")
    status = asyncio.run(control_request(proc.control, "status", timeout=10))
    assert status["kind"] == "intermediary" and status["channel"] == cluster.channel
    assert status["endpoints"] == [endpoint]
    assert {"queued_messages", "at_consumers"} <= set(status["in_flight"])
    wait_for(lambda: asyncio.run(control_request(proc.control, "status", timeout=10))
             ["consumers"] == 1, 10, "the consumer to be known")
    port_status = asyncio.run(control_request(consumer.control, "status", timeout=10))
    assert port_status["kind"] == "component" and port_status["endpoints"] == [endpoint]
    assert port_status["ports"][0]["kind"] == "consumer"
