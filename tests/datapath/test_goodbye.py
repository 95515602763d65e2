"""GOODBYE: a port that leaves cleanly is forgotten at once, not declared dead a timeout later.

A producer says GOODBYE on every live connection when it closes; a consumer only when nothing
it received is left unhandled. The intermediary counts the leave (``peers_left``), logs it as a
clean leave, and keeps ``peers_expired`` for peers that really went silent (a SIGKILL, a freeze,
a consumer that abandoned work).
"""
from __future__ import annotations

import asyncio
import os
import signal

import zmq
import zmq.asyncio

from fabric import protocol as p
from fabric.ports.input import InputPort
from fabric.ports.output import OutputPort
from fabric.timing import Timing
from nameservice.control import control_request
from tests.datapath.conftest import stats_from
from tests.datapath.helpers import running_intermediary
from tests.datapath.procs import count_records
from tests.waiting import async_wait_for, wait_for


def counters(proc) -> dict | None:
    """The intermediary's counters from its control socket (None if it does not answer)."""
    try:
        return asyncio.run(control_request(proc.control, "status", timeout=2))["counters"]
    except Exception:  # not answering yet: the caller waits
        return None


def test_a_producer_and_a_consumer_that_leave_cleanly_are_counted_as_left_not_expired(cluster):
    inter, endpoint = cluster.intermediary()
    consumer, out = cluster.consumer([endpoint], "consumer")
    producer = cluster.producer([endpoint], 0, 5000)
    output = cluster.finish(producer, timeout=60)  # sent everything, drained, closed
    assert stats_from(output)["messages_acked"] == 5000
    left = wait_for(lambda: (c := counters(inter)) and c["peers_left"] >= 1 and c, 20,
                    "the producer's GOODBYE")
    assert left["peers_expired"] == 0, left
    cluster.stop(consumer)  # drains: everything handled, then GOODBYE
    left = wait_for(lambda: (c := counters(inter)) and c["peers_left"] >= 2 and c, 20,
                    "the consumer's GOODBYE")
    assert left["peers_expired"] == 0 and left["redelivered_batches"] == 0, left
    assert count_records(out) == 5000
    stats = stats_from(cluster.stop(inter))
    assert stats["peers_left"] == 2 and stats["peers_expired"] == 0
    assert stats["bad_frames"] == 0
    log = cluster.stderr_of(inter)
    assert "producer " in log and "left (GOODBYE)" in log
    assert "declared dead" not in log


def test_a_producer_killed_is_still_declared_dead(cluster):
    inter, endpoint = cluster.intermediary()
    consumer, out = cluster.consumer([endpoint], "consumer")
    producer = cluster.producer([endpoint], 0, 0, "--rate", "1000")  # sends until stopped
    wait_for(lambda: count_records(out) >= 100, 30, "messages flowing")
    producer.send_signal(signal.SIGKILL)
    dead = wait_for(lambda: (c := counters(inter)) and c["peers_expired"] >= 1 and c, 20,
                    "the killed producer to be declared dead")
    assert dead["peers_left"] == 0 and dead["consumers_expired"] == 0, dead
    assert "declared dead" in cluster.stderr_of(inter)
    cluster.stop(consumer)


async def test_a_consumer_that_abandons_work_says_no_goodbye_and_its_work_is_redelivered():
    held, got = [], []
    async with running_intermediary("abandon") as node:
        quitter = await InputPort("abandon", [node.endpoint], held.append,
                                  auto_ack=False).start()
        async with OutputPort("abandon", [node.endpoint]) as producer:
            for i in range(20):
                await producer.send(i)
            await async_wait_for(lambda: len(held) == 20, 10, "delivery to the first consumer")
            await quitter.close()  # nothing acknowledged: it leaves silently
            async with InputPort("abandon", [node.endpoint], got.append):
                await asyncio.wait_for(producer.flush(), 10)
                assert node.stats.peers_left == 0
                assert node.stats.consumers_expired == 1  # declared dead after its timeout
    assert sorted(m.payload for m in got) == list(range(20))
    assert all(m.redelivered for m in got)


async def test_letting_go_of_an_intermediary_says_goodbye_to_it():
    got = []
    async with running_intermediary("letgo") as a, running_intermediary("letgo") as b:
        async with InputPort("letgo", [a.endpoint, b.endpoint], got.append) as consumer, \
                OutputPort("letgo", [a.endpoint, b.endpoint]) as producer:
            await async_wait_for(lambda: len(producer.connected) == len(consumer.connected) == 2,
                             10, "both ports connected to both")
            for i in range(100):
                await producer.send(i)
            await asyncio.wait_for(producer.flush(), 10)
            producer.remove_endpoint(a.endpoint)
            consumer.remove_endpoint(a.endpoint)
            await async_wait_for(lambda: a.stats.peers_left == 2, 10, "both ports to leave a")
            for i in range(100, 200):
                await producer.send(i)
            await asyncio.wait_for(producer.flush(), 10)
        await async_wait_for(lambda: b.stats.peers_left == 2, 10, "both ports to leave b")
        assert a.stats.peers_expired == b.stats.peers_expired == 0
    assert sorted(m.payload for m in got) == list(range(200))


async def test_a_goodbye_from_a_producer_declared_dead_drops_what_was_parked_for_it():
    timing = Timing()
    pid = os.urandom(16)
    async with running_intermediary("parked", timing=timing) as node:
        raw = zmq.asyncio.Context.instance().socket(zmq.DEALER)
        raw.setsockopt(zmq.ROUTING_ID, b"P" + pid)
        raw.setsockopt(zmq.LINGER, 0)
        raw.connect(node.endpoint)
        try:
            await raw.send(p.encode(p.Hello(p.ROLE_PRODUCER, pid, 0, "parked")))
            # No consumer: the batch waits in the queue.
            await raw.send(p.batch_frame(pid, 0, 1, 0, p.encode_payloads(["x"])))
            await async_wait_for(lambda: node.stats.batches_in == 1, 5, "the batch queued")
            # Silent for the heartbeat timeout: declared dead, its batch parked.
            await async_wait_for(lambda: node.stats.peers_expired == 1, 5, "declared dead")
            await raw.send(p.encode(p.Goodbye()))
            await async_wait_for(lambda: node.stats.peers_left == 1, 5, "the GOODBYE")
            assert node.stats.dropped_stale_batches == 1
            assert node.status()["in_flight"]["parked_messages"] == 0
        finally:
            raw.close()
