"""Port behaviour in one process, over real sockets and real intermediaries."""
from __future__ import annotations

import asyncio

import pytest

from fabric import protocol as p
from fabric.errors import ConfigError, MessageTooLarge, PortClosed
from fabric.ports.input import InputPort
from fabric.ports.output import OutputPort
from fabric.ports.sync import SyncInputPort, SyncOutputPort
from fabric.timing import Timing
from tests.datapath.helpers import fake_intermediary, heard_beats, next_ack, running_intermediary
from tests.waiting import async_wait_for, wait_for


async def test_payloads_arrive_as_sent_and_in_order_through_one_intermediary():
    payloads = [b"\x00raw", "text", {"k": [1, 2.5, None]}, [True, False], 2**40, -3]
    payloads = payloads * 500
    got = []
    async with running_intermediary("order") as node, \
            InputPort("order", [node.endpoint], got.append), \
            OutputPort("order", [node.endpoint], batch_max=64) as producer:
        for payload in payloads:
            await producer.send(payload)
        await asyncio.wait_for(producer.flush(), 10)
        await async_wait_for(lambda: len(got) == len(payloads), 10, "every message")
    assert [m.payload for m in got] == payloads
    assert [m.seq for m in got] == list(range(len(payloads)))
    assert not any(m.redelivered for m in got)


async def test_send_waits_while_the_window_is_full_and_drops_nothing():
    async with running_intermediary("window") as node, \
            OutputPort("window", [node.endpoint], window=100) as producer:
        for i in range(100):
            await producer.send(i)
        blocked = asyncio.ensure_future(producer.send(100))
        await heard_beats(producer)
        assert not blocked.done() and producer.unacked == 100  # no consumer: nothing acked
        got = []
        async with InputPort("window", [node.endpoint], got.append):
            await asyncio.wait_for(blocked, 10)
            await asyncio.wait_for(producer.flush(), 10)
        assert sorted(m.payload for m in got) == list(range(101))


async def test_with_manual_ack_nothing_is_released_until_the_handler_acks():
    held = []
    async with running_intermediary("manual") as node, \
            InputPort("manual", [node.endpoint], held.append, auto_ack=False), \
            OutputPort("manual", [node.endpoint]) as producer:
        for i in range(10):
            await producer.send(i)
        await async_wait_for(lambda: len(held) == 10, 10, "delivery")
        for msg in reversed(held[5:]):  # out of order: nothing contiguous yet
            msg.ack()
        # A later message, acknowledged at once: its ACK goes the way one for the messages
        # above would have gone, after it.
        await producer.send(10)
        await async_wait_for(lambda: len(held) == 11, 10, "delivery of a later message")
        held[10].ack()
        await async_wait_for(lambda: producer.stats.messages_acked, 10, "the later message's ACK")
        assert producer.stats.messages_acked == 1 and producer.unacked == 10
        for msg in held[:5]:
            msg.ack()
        await asyncio.wait_for(producer.flush(), 10)
        assert producer.unacked == 0


async def test_a_consumer_that_dies_holding_messages_has_them_redelivered_flagged():
    held, got = [], []
    async with running_intermediary("death") as node, \
            OutputPort("death", [node.endpoint]) as producer:
        doomed = await InputPort("death", [node.endpoint], held.append, auto_ack=False).start()
        for i in range(50):
            await producer.send(i)
        await async_wait_for(lambda: len(held) == 50, 10, "delivery to the first consumer")
        await doomed.close()  # dies without acknowledging anything
        async with InputPort("death", [node.endpoint], got.append):
            await asyncio.wait_for(producer.flush(), 10)
    assert sorted(m.payload for m in got) == list(range(50))
    assert all(m.redelivered for m in got)
    assert node.stats.redelivered_batches >= 1


async def test_a_copy_of_a_batch_is_handled_once_and_acknowledged_again():
    fake, endpoint = fake_intermediary()
    got = []
    pid = bytes(16)
    try:
        async with InputPort("dup", [endpoint],
                             got.append) as consumer:
            rid, _hello = await asyncio.wait_for(fake.recv_multipart(), 10)
            frame = p.batch_frame(pid, 0, 3, 0, p.encode_payloads(["a", "b", "c"]))
            await fake.send_multipart([rid, frame])
            first = await asyncio.wait_for(next_ack(fake, rid), 10)
            await fake.send_multipart([rid, frame])  # as if resent after a failover
            second = await asyncio.wait_for(next_ack(fake, rid), 10)
    finally:
        fake.close()
    assert [m.payload for m in got] == ["a", "b", "c"]
    assert consumer.stats.duplicate_batches == 1
    assert first.entries == second.entries == ((0, 3),)
    assert first.credit + second.credit == 6  # the copy's credit is given back too


async def test_an_intermediary_added_while_running_is_used():
    got = []
    async with running_intermediary("grow") as node, \
            InputPort("grow", [], got.append) as consumer, \
            OutputPort("grow", []) as producer:
        send = asyncio.ensure_future(producer.send("hello"))
        await asyncio.wait_for(send, 5)  # the window is free: queued, not sent
        consumer.add_endpoint(node.endpoint)
        producer.add_endpoint(node.endpoint.replace("tcp://", ""))
        await asyncio.wait_for(producer.flush(), 10)
        assert [m.payload for m in got] == ["hello"]
        producer.remove_endpoint(node.endpoint)
        assert producer.endpoints == []


async def test_oversized_payloads_and_closed_ports_raise():
    async with OutputPort("x", [], batch_bytes=1000) as producer:
        with pytest.raises(MessageTooLarge):
            await producer.send(b"x" * 2000)
    with pytest.raises(PortClosed):
        await producer.send(1)


def test_the_blocking_ports_move_messages_too():
    import threading

    got, lock = [], threading.Lock()

    def handler(msg):
        with lock:
            got.append(msg.payload)

    async def serve(ready, stop):
        async with running_intermediary("sync") as node:
            ready.append(node.endpoint)
            await asyncio.to_thread(stop.wait)

    ready, stop = [], threading.Event()
    thread = threading.Thread(target=lambda: asyncio.run(serve(ready, stop)))
    thread.start()
    try:
        wait_for(lambda: ready, 10, "the intermediary's endpoint", interval=0.01)
        with SyncInputPort("sync", ready, handler), SyncOutputPort("sync", ready) as producer:
            for i in range(100):
                producer.send(i)
            producer.flush(10)
        assert sorted(got) == list(range(100))
        consumer = SyncInputPort("sync", ready, handler)
        producer = SyncOutputPort("sync", ready)
        for i in range(100, 200):
            producer.send(i)
        assert producer.drain(10).complete and consumer.drain(10).complete
        assert sorted(got) == list(range(200))
    finally:
        stop.set()
        thread.join(10)


async def test_a_failing_handler_is_counted_and_delivery_goes_on():
    seen = []

    def handler(msg):
        seen.append(msg.payload)
        if msg.payload % 10 == 0:
            raise ValueError("bad message")

    async with running_intermediary("errors") as node, \
            InputPort("errors", [node.endpoint], handler) as consumer, \
            OutputPort("errors", [node.endpoint]) as producer:
        for i in range(100):
            await producer.send(i)
        await asyncio.wait_for(producer.flush(), 10)
    assert sorted(seen) == list(range(100))
    assert consumer.stats.handler_errors == 10


async def test_a_full_intermediary_queue_refuses_batches_and_they_come_back_later():
    got = []
    async with running_intermediary("full", max_queue_bytes=2000) as node, \
            OutputPort("full", [node.endpoint], batch_max=10) as producer:
        for i in range(300):
            await producer.send(i)
            await asyncio.sleep(0)  # small batches: each turn of the loop sends one
        await async_wait_for(lambda: node.stats.nacked_batches > 0, 10, "a refusal")
        async with InputPort("full", [node.endpoint], got.append):
            await asyncio.wait_for(producer.flush(), 20)
    assert sorted(m.payload for m in got) == list(range(300))


async def test_send_waits_when_the_held_bytes_reach_window_bytes():
    async with running_intermediary("bytes") as node, \
            OutputPort("bytes", [node.endpoint], window_bytes=10_000) as producer:
        for _ in range(9):
            await producer.send(b"x" * 1000)
        await producer.send(b"x" * 1000)  # reaches the limit: the next send must wait
        blocked = asyncio.ensure_future(producer.send(b"y"))
        await heard_beats(producer)
        assert not blocked.done()
        async with InputPort("bytes", [node.endpoint], lambda m: None):
            await asyncio.wait_for(blocked, 10)
            await asyncio.wait_for(producer.flush(), 10)


async def test_ports_frozen_long_enough_to_be_declared_dead_are_taken_back():
    import time

    got = []
    async with running_intermediary("frozen") as node, \
            InputPort("frozen", [node.endpoint], got.append) as consumer, \
            OutputPort("frozen", [node.endpoint]) as producer:
        for i in range(10):
            await producer.send(i)
        await asyncio.wait_for(producer.flush(), 10)
        # The scenario itself: this event loop (both ports) freezes for longer than a
        # consumer may stay silent.
        time.sleep(Timing().consumer_timeout + 0.3)
        await async_wait_for(lambda: node.stats.peers_expired >= 2, 5, "both declared dead")
        for i in range(10, 20):
            await producer.send(i)
        await asyncio.wait_for(producer.flush(), 10)  # needs the consumer's HELLO AGAIN
    assert sorted(m.payload for m in got) == list(range(20))
    assert consumer.stats.intermediaries_lost == producer.stats.intermediaries_lost == 0
    assert node.stats.who_sent >= 1  # the consumer was asked to introduce itself again


async def test_a_slow_handler_does_not_get_its_consumer_declared_dead():
    import time

    got = []

    def slow(msg):
        # Blocking work: the 200 messages of one batch take 3 s, more than the consumer timeout
        # (2 s); delivery must let heartbeats out between them.
        time.sleep(0.015)
        got.append(msg.payload)

    async with running_intermediary("slow") as node, \
            InputPort("slow", [node.endpoint], slow) as consumer, \
            OutputPort("slow", [node.endpoint]) as producer:
        for i in range(200):
            await producer.send(i)
        await asyncio.wait_for(producer.flush(), 20)
    assert sorted(got) == list(range(200))
    # (Only the consumer is judged: on a loaded machine this whole process may stall for the
    # producer's 300 ms timeout, which says nothing about slow handlers.)
    assert node.stats.consumers_expired == 0
    assert consumer.stats.redelivered_messages == 0


async def test_claims_survive_an_intermediary_and_are_resent_when_the_claimer_dies():
    held, got = [], []
    async with running_intermediary("claims") as a, running_intermediary("claims") as b:
        claimer = await InputPort("claims", [a.endpoint, b.endpoint], held.append,
                                  auto_ack=False).start()
        async with OutputPort("claims", [a.endpoint, b.endpoint]) as producer:
            for i in range(20):
                await producer.send(i)
            await async_wait_for(lambda: len(held) == 20, 10, "delivery to the claimer")
            assert a.stats.batches_out >= 1  # the first batch went through a
            a.stop()  # a dies: the claimer claims (ACK HOLD, through b) what came through it
            await async_wait_for(lambda: claimer.stats.intermediaries_lost == 1, 10, "a's loss")
            await async_wait_for(lambda: producer.stats.intermediaries_lost == 1, 10, "a's loss")
            await claimer.close()  # then the claimer dies without acknowledging anything
            async with InputPort("claims", [b.endpoint], got.append):
                await asyncio.wait_for(producer.flush(), 10)
            assert producer.stats.batches_resent >= 1  # resent on PEER_GONE, not on a's loss
    assert sorted(m.payload for m in got) == list(range(20))
    assert all(m.redelivered for m in got)


async def test_a_batch_handler_gets_whole_batches_and_releases_them_only_when_acked():
    got = []
    async with running_intermediary("batches") as node:
        consumer = await InputPort("batches", [node.endpoint], batch_handler=got.append,
                                   auto_ack=False).start()
        try:
            async with OutputPort("batches", [node.endpoint], batch_max=100) as producer:
                for i in range(1000):
                    await producer.send(i)
                await async_wait_for(lambda: sum(len(b.payloads) for b in got) == 1000, 10,
                                     "every batch")
                assert producer.unacked == 1000  # delivered, not acknowledged
                seqs = [s for b in got for s in range(b.first_seq, b.first_seq + len(b.payloads))]
                assert sorted(seqs) == list(range(1000))
                assert [x for b in sorted(got, key=lambda b: b.first_seq) for x in b.payloads] \
                    == list(range(1000))
                assert {b.producer_id for b in got} == {producer.producer_id}
                assert not any(b.redelivered for b in got)
                consumer.ack_batches(got[1:])  # out of order first ...
                consumer.ack_batches(got[:1])  # ... then the rest
                await producer.flush(timeout=10)
                assert producer.acked_below == 1000
        finally:
            await consumer.close()


def test_a_port_takes_a_handler_or_a_batch_handler_and_a_batch_handler_acks_by_hand():
    with pytest.raises(ConfigError):
        InputPort("x", [], print, batch_handler=print, auto_ack=False)
    with pytest.raises(ConfigError):
        InputPort("x", [])
    with pytest.raises(ConfigError, match="auto_ack=False"):
        InputPort("x", [], batch_handler=print)


async def test_payloads_sent_again_from_the_same_number_are_recognised_as_copies():
    got = []
    pid = b"p" * 16
    async with running_intermediary("again") as node, \
            InputPort("again", [node.endpoint], got.append) as consumer:
        for _ in range(2):  # a producer, then another one taking over its id and its numbers
            port = await OutputPort("again", [node.endpoint], producer_id=pid, first_seq=100,
                                    batch_max=10).start()
            await port.send(-1)  # open when send_batch starts: it goes first, alone
            await port.send_batch(list(range(25)))
            assert port.next_seq == 126
            await port.flush(timeout=10)
            await port.close()
    assert [m.seq for m in got] == list(range(100, 126))
    assert [m.payload for m in got] == [-1, *range(25)]
    assert consumer.stats.duplicate_batches == 4  # [100], [101-110], [111-120], [121-125]
