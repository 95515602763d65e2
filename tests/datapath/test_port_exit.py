"""Leaving ``async with`` on a port or a component context: normally it drains, with an
exception it abandons at once (real intermediary, real sockets on 127.0.0.1)."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from fabric import InputPort, OutputPort, SyncOutputPort
from fabric.runtime.component import ComponentContext
from nameservice.names import Endpoint
from tests.datapath.helpers import running_intermediary
from tests.waiting import async_wait_for


async def test_leaving_an_output_port_normally_delivers_everything_sent_in_the_block():
    async with running_intermediary("exit-out") as node:
        got: list[int] = []
        async with InputPort("exit-out", [node.endpoint], lambda m: got.append(m.payload)):
            async with OutputPort("exit-out", [node.endpoint], linger=60.0) as port:
                await async_wait_for(lambda: port.connected, 5, "the producer's connection")
                for i in range(5000):
                    await port.send(i)  # the last batch is still open when the block ends
            assert port.drain_report is not None and port.drain_report.complete
            assert port.closed and port.unacked == 0
            await async_wait_for(lambda: len(got) == 5000, 5, "every message")
    assert sorted(got) == list(range(5000))


async def test_leaving_an_output_port_with_an_exception_abandons_at_once():
    async with running_intermediary("exit-raise") as node:  # no consumer: nothing is acked
        with pytest.raises(RuntimeError):
            async with OutputPort("exit-raise", [node.endpoint]) as port:
                await async_wait_for(lambda: port.connected, 5, "the producer's connection")
                for i in range(10):
                    await port.send(i)
                raise RuntimeError("the block failed")
        assert port.closed and port.drain_report is None
        assert port.unacked == 10  # abandoned, not waited for


async def test_a_drain_on_leaving_that_times_out_says_what_it_left():
    async with running_intermediary("exit-left") as node:  # no consumer: nothing is acked
        async with OutputPort("exit-left", [node.endpoint], drain_timeout=0.3) as port:
            await async_wait_for(lambda: port.connected, 5, "the producer's connection")
            for i in range(7):
                await port.send(i)
        report = port.drain_report
        assert report is not None and not report.complete
        assert report.left_messages == 7
        assert any(node.endpoint in left.where for left in report.left)


async def test_leaving_an_input_port_normally_handles_what_it_received_first():
    async with running_intermediary("exit-in") as node:
        handled: list[int] = []
        release = asyncio.Event()

        async def slow(message) -> None:
            await release.wait()
            handled.append(message.payload)

        async with OutputPort("exit-in", [node.endpoint]) as producer:
            async with InputPort("exit-in", [node.endpoint], slow) as consumer:
                for i in range(200):
                    await producer.send(i)
                await async_wait_for(lambda: producer.stats.batches_sent > 0 and
                                 consumer.stats.batches_received == producer.stats.batches_sent,
                                 5, "every batch received, waiting for the handler")
                assert handled == []
                asyncio.get_running_loop().call_later(0.05, release.set)
            assert consumer.drain_report is not None and consumer.drain_report.complete
            assert sorted(handled) == list(range(200))  # handled before the block was left
            await async_wait_for(lambda: producer.unacked == 0, 5, "the acknowledgements")


class _OneList:
    """The name service's answer for one channel, as ``nameservice.names.Names`` gives it."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    async def watch_name(self, name: str) -> AsyncIterator[list[Endpoint]]:
        yield [Endpoint(name, self.endpoint, {})]
        await asyncio.Event().wait()  # no change afterwards


async def test_leaving_a_component_context_normally_drains_its_ports():
    async with running_intermediary("exit-ctx") as node:
        got: list[int] = []
        async with InputPort("exit-ctx", [node.endpoint], lambda m: got.append(m.payload)):
            async with ComponentContext("exit-ctx", _OneList(node.endpoint)) as ctx:
                out = await ctx.output("exit-ctx", linger=60.0)
                await async_wait_for(lambda: out.connected, 5, "the producer's connection")
                for i in range(3000):
                    await out.send(i)
            assert out.closed and out.unacked == 0
            await async_wait_for(lambda: len(got) == 3000, 5, "every message")


async def test_leaving_a_component_context_with_an_exception_closes_its_ports_at_once():
    async with running_intermediary("exit-ctx-raise") as node:  # no consumer
        with pytest.raises(RuntimeError):
            async with ComponentContext("exit-ctx-raise", _OneList(node.endpoint)) as ctx:
                out = await ctx.output("exit-ctx-raise")
                await async_wait_for(lambda: out.connected, 5, "the producer's connection")
                await out.send(1)
                raise RuntimeError("the component failed")
        assert out.closed and out.unacked == 1 and out.drain_report is None


async def test_leaving_a_blocking_output_port_normally_drains_it():
    async with running_intermediary("exit-sync") as node:
        got: list[int] = []
        async with InputPort("exit-sync", [node.endpoint], lambda m: got.append(m.payload)):

            def produce() -> SyncOutputPort:
                with SyncOutputPort("exit-sync", [node.endpoint], linger=60.0) as port:
                    for i in range(1000):
                        port.send(i)
                return port

            port = await asyncio.get_running_loop().run_in_executor(None, produce)
            assert port.drain_report is not None and port.drain_report.complete
            await async_wait_for(lambda: len(got) == 1000, 5, "every message")
