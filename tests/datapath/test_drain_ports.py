"""Draining ports and removing live intermediaries, in one process (real sockets on 127.0.0.1)."""
from __future__ import annotations

import asyncio
import os
from collections import Counter

import pytest

from fabric import InputPort, OutputPort, PortClosed
from fabric import protocol as p
from fabric.errors import ControlError
from fabric.timing import Timing
from nameservice.control import ControlServer, control_request, parse_request
from tests.datapath.helpers import dealer, next_frame, running_intermediary
from tests.waiting import async_wait_for

N = 30_000
# Generous liveness: the intermediaries are threads of this process, and a loaded machine can
# stall the whole process long enough to look like a freeze. Nothing here tests failure
# detection.
TIMING = Timing(heartbeat=0.1, misses=10)


class Recorder:
    """A handler that counts each payload and remembers redelivered ones."""

    def __init__(self) -> None:
        self.counts: Counter = Counter()
        self.flagged = 0

    def __call__(self, msg) -> None:
        self.counts[msg.payload] += 1
        self.flagged += msg.redelivered

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@pytest.mark.parametrize("who", ["producer", "every port"])
async def test_removing_a_live_intermediary_under_load_redelivers_and_duplicates_nothing(who):
    channel = f"remove-{who}"
    async with running_intermediary(channel, timing=TIMING) as first, \
            running_intermediary(channel, timing=TIMING) as second:
        endpoints = [first.endpoint, second.endpoint]
        seen = Recorder()
        async with InputPort(channel, endpoints, seen, timing=TIMING) as c1, \
                InputPort(channel, endpoints, seen, timing=TIMING) as c2, \
                OutputPort(channel, endpoints, timing=TIMING) as producer:
            await async_wait_for(lambda: first.status()["consumers"] == 2
                                 and second.status()["consumers"] == 2, 10, "consumers to join")
            for i in range(N):
                await producer.send(i)
                if i == N // 3:
                    assert first.status()["in_flight"]["at_consumers"] or producer.unacked
                    ports = [producer] if who == "producer" else [producer, c1, c2]
                    for port in ports:
                        port.remove_endpoint(first.endpoint)
            await producer.flush(timeout=30)
            await async_wait_for(lambda: seen.total >= N, 30, "every message")
            assert first.endpoint not in producer.endpoints
            # The removed intermediary is let go once what went through it is acknowledged.
            # (the intermediary stops hearing a port that closed its connection).
            await async_wait_for(lambda: first.status()["producers"] == 0, 5, "the producer to go")
            if who == "every port":
                await async_wait_for(lambda: first.status()["consumers"] == 0, 5, "consumers to go")
        assert set(seen.counts) == set(range(N)), f"{N - len(seen.counts)} lost"
        assert max(seen.counts.values()) == 1, "a message was handled twice"
        assert seen.flagged == 0
        # Resent only what an intermediary refused (handed back), never by a timeout.
        assert producer.stats.batches_resent == first.stats.nacked_batches
        assert first.stats.redelivered_batches == 0 and second.stats.redelivered_batches == 0


async def test_a_draining_producer_refuses_sends_and_returns_once_all_is_acknowledged():
    async with running_intermediary("drain-p", timing=TIMING) as node:
        seen = Recorder()
        async with InputPort("drain-p", [node.endpoint], seen, timing=TIMING):
            producer = await OutputPort("drain-p", [node.endpoint], timing=TIMING).start()
            for i in range(5_000):
                await producer.send(i)
            report = await producer.drain(timeout=10)
            assert report.complete and report.left == () and report.kind == "producer"
            assert producer.unacked == 0 and seen.total == 5_000
            with pytest.raises(PortClosed):
                await producer.send(5_000)


async def test_a_producer_drain_that_times_out_says_what_it_could_not_flush():
    # Nobody listens on port 1.
    producer = await OutputPort("drain-nowhere", ["127.0.0.1:1"], timing=TIMING).start()
    for i in range(10):
        await producer.send(i)
    report = await producer.drain(timeout=0.2)
    assert not report.complete and report.left_messages == 10
    assert "not sent" in report.left[0].where
    assert any("10 messages" in line for line in report.lines())


async def test_a_consumer_drain_with_unacknowledged_messages_times_out_and_says_where_they_are():
    async with running_intermediary("drain-c", timing=TIMING) as node:
        got = []
        consumer = await InputPort("drain-c", [node.endpoint], got.append, auto_ack=False,
                                   timing=TIMING).start()
        async with OutputPort("drain-c", [node.endpoint], timing=TIMING) as producer:
            for i in range(100):
                await producer.send(i)
            await async_wait_for(lambda: len(got) == 100, 10, "delivery")
            report = await consumer.drain(timeout=0.3)
            assert not report.complete and report.left_messages == 100
            assert node.endpoint in report.left[0].where
            # The intermediary redelivers what the consumer left, flagged, to the next one.
            again = Recorder()
            async with InputPort("drain-c", [node.endpoint], again, timing=TIMING):
                await producer.flush(timeout=10)
            assert set(again.counts) == set(range(100)), node.stats
            assert again.flagged == 100, (node.stats, producer.stats)


async def test_a_consumer_drain_hands_what_it_holds_to_its_handler_first():
    async with running_intermediary("drain-h", timing=TIMING) as node:
        handled, gate = [], asyncio.Event()

        async def gated(msg) -> None:
            if handled:
                await gate.wait()  # holds everything after the first message until the drain
            handled.append(msg.payload)

        consumer = await InputPort("drain-h", [node.endpoint], gated, prefetch=500,
                                   timing=TIMING).start()
        async with OutputPort("drain-h", [node.endpoint], timing=TIMING) as producer:
            for i in range(2_000):
                await producer.send(i)
            await async_wait_for(lambda: handled and node.status()["in_flight"]["at_consumers"],
                                 10, "a batch waiting at the consumer")
            drain = asyncio.ensure_future(consumer.drain(timeout=10))
            await async_wait_for(lambda: node.status()["consumers_leaving"] == 1, 5,
                                 "the intermediary to hear the consumer is leaving")
            gate.set()
            report = await drain
            assert report.complete
            assert node.status()["in_flight"]["at_consumers"] == 0
            assert len(handled) == len(set(handled)) and len(handled) < 2_000
            done = len(handled)
            other = Recorder()
            async with InputPort("drain-h", [node.endpoint], other, timing=TIMING):
                await producer.flush(timeout=10)
            assert len(handled) == done, "the drained consumer kept handling"
            assert set(other.counts) | set(handled) == set(range(2_000))
            assert not set(other.counts) & set(handled) and other.flagged == 0


def test_control_requests_are_checked():
    assert parse_request(b'{"command": "drain", "timeout": 2}').timeout == 2.0
    for bad in [b"", b"[1]", b'{"command": "reboot"}', b'{"command": "drain", "timeout": -1}',
                b"\xff", b"[" * 1000 + b"]" * 1000, b'{"command": "drain", "timeout": true}',
                b'{"command": "drain", "timeout": NaN}']:
        with pytest.raises(ControlError):
            parse_request(bad)


async def test_the_control_server_answers_status_drain_and_bad_requests():
    calls, release = [], asyncio.Event()

    async def drain(timeout):
        calls.append(timeout)
        await release.wait()
        return {"complete": True}

    server = ControlServer(lambda: {"kind": "test"}, drain).start()
    try:
        status = {"kind": "test", "control_bad_requests": 0,
                  "security": {"mode": "insecure", "connections_refused": 0,
                               "control_forbidden_requests": 0}}
        assert await control_request(server.endpoint, "status", 5) == status
        first = asyncio.ensure_future(control_request(server.endpoint, "drain", 5,
                                                      drain_timeout=3))
        await async_wait_for(lambda: calls, 5, "the drain to start")
        second = asyncio.ensure_future(control_request(server.endpoint, "drain", 5))
        assert await control_request(server.endpoint, "status", 5) == status
        release.set()
        assert await first == await second == {"complete": True}
        assert calls == [3.0], "one drain, both answered"
        with pytest.raises(ControlError, match="unknown command"):
            await control_request(server.endpoint, "reboot", 5)
    finally:
        server.close()


async def test_a_control_request_to_nobody_fails_in_time():
    with pytest.raises(ControlError, match="no answer"):
        await control_request("127.0.0.1:1", "status", 0.2)


async def test_an_intermediary_removed_and_added_back_is_used_again():
    async with running_intermediary("revive", timing=TIMING) as node:
        seen = Recorder()
        async with InputPort("revive", [node.endpoint], seen, timing=TIMING) as consumer, \
                OutputPort("revive", [node.endpoint], timing=TIMING) as producer:
            await async_wait_for(lambda: node.status()["consumers"] == 1, 10, "the consumer")
            for port in (consumer, producer):
                port.remove_endpoint(node.endpoint)
                port.add_endpoint(node.endpoint)
            for i in range(1_000):
                await producer.send(i)
            await producer.flush(timeout=10)
        assert set(seen.counts) == set(range(1_000)) and max(seen.counts.values()) == 1
        assert seen.flagged == 0


async def test_a_queue_left_by_consumers_that_removed_the_intermediary_goes_back_to_its_producer():
    # Ticks a second apart: the consumer's DRAIN, the batch and its GOODBYE all arrive between
    # two of them, so no tick ever sees a consumer leaving; the queue must still go back.
    slow_ticks = Timing(heartbeat=1, misses=30, tick=1.0, consumer_timeout=60)
    pid, cid = os.urandom(16), os.urandom(16)
    async with running_intermediary("left", timing=slow_ticks) as node:
        producer, consumer = dealer(b"P" + pid, node.endpoint), dealer(b"C" + cid, node.endpoint)
        try:
            await producer.send(p.encode(p.Hello(p.ROLE_PRODUCER, pid, 0, "left")))
            await consumer.send(p.encode(p.Hello(p.ROLE_CONSUMER, cid, 0, "left")))  # no credit
            await next_frame(producer, p.T_HEARTBEAT)
            await next_frame(consumer, p.T_HEARTBEAT)  # both introduced
            await consumer.send(p.drain_frame())
            await next_frame(consumer, p.T_DRAIN)  # nothing in flight to it: answered at once
            await producer.send(p.encode(p.Batch(pid, 0, 1, p.encode_payloads([1]))))
            await consumer.send(p.goodbye_frame())
            nack = await next_frame(producer, p.T_NACK, timeout=10)
            assert nack.first_seqs == (0,)
            assert node.stats.nacked_batches == 1 and node.status()["consumers"] == 0
        finally:
            producer.close()
            consumer.close()
