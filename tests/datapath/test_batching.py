"""When a producer sends a message at once and when it gathers messages into one batch."""
from __future__ import annotations

import asyncio

import pytest

from fabric import InputPort, MessageTooLarge, OutputPort
from tests.datapath.helpers import running_intermediary
from tests.waiting import async_wait_for


async def test_under_light_load_the_first_message_of_each_turn_goes_out_at_once():
    async with running_intermediary("light") as node:
        got: list[bytes] = []
        async with InputPort("light", [node.endpoint], lambda m: got.append(m.payload)), \
                OutputPort("light", [node.endpoint], linger=60.0) as port:
            # linger=60: never idle by time, so only the light-load rule can send at once.
            await port.send(b"a")
            await async_wait_for(lambda: port.stats.batches_sent == 1, 5, "the first batch")
            for i in range(5):
                await asyncio.sleep(0)  # a new turn of the loop
                await port.send(b"%d" % i)
                assert port.stats.batches_sent == 2 + i  # sent before send() returned
            await async_wait_for(lambda: len(got) == 6, 5, "all six messages")
            assert got == [b"a", b"0", b"1", b"2", b"3", b"4"]


async def test_later_messages_of_a_turn_gather_into_one_batch():
    async with running_intermediary("gather") as node:
        got: list[bytes] = []
        async with InputPort("gather", [node.endpoint], lambda m: got.append(m.payload)), \
                OutputPort("gather", [node.endpoint], linger=60.0) as port:
            await port.send(b"first")
            await async_wait_for(lambda: port.stats.batches_sent == 1, 5, "the first batch")
            await async_wait_for(lambda: port.unacked == 0, 5, "its acknowledgement")
            await asyncio.sleep(0)
            for i in range(10):
                await port.send(b"%d" % i)  # one turn: the first alone, then one batch
            assert port.stats.batches_sent == 2
            await async_wait_for(lambda: port.stats.batches_sent == 3, 5, "the gathered batch")
            await async_wait_for(lambda: len(got) == 11, 5, "all messages")
            assert port.stats.messages_sent == 11


async def test_a_producer_with_a_full_batch_unacknowledged_gathers_even_a_turns_first_message():
    async with running_intermediary("busy") as node:  # no consumer: nothing is acknowledged
        async with OutputPort("busy", [node.endpoint], linger=60.0, batch_max=4) as port:
            for i in range(4):
                await port.send(b"%d" % i)  # the first at once, the rest fill a full batch
            await async_wait_for(lambda: port.stats.batches_sent == 2, 5, "two batches")
            await asyncio.sleep(0)
            await port.send(b"next")
            assert port.stats.batches_sent == 2  # busy: waits for the end of this turn
            await async_wait_for(lambda: port.stats.batches_sent == 3, 5, "the gathered batch")
            await port.close()  # nothing can be acknowledged here: do not drain


async def test_messages_after_a_send_batch_that_failed_half_way_still_go_out():
    """``send_batch`` that raises part-way leaves its first payloads in the open batch with no
    flush scheduled; the next sends must still send them (not only add to that batch)."""
    async with running_intermediary("half") as node:
        got: list[bytes] = []
        async with InputPort("half", [node.endpoint], lambda m: got.append(m.payload)), \
                OutputPort("half", [node.endpoint], batch_bytes=100) as port:
            with pytest.raises(MessageTooLarge):
                await port.send_batch([b"a", b"x" * 200])
            await port.send(b"b")
            await port.send(b"c")
            await async_wait_for(lambda: len(got) == 3, 5, "a, b and c delivered")
            assert got == [b"a", b"b", b"c"]
