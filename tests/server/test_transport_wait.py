"""``NodeTransport.receive`` waits on the ROUTER's descriptor itself: a frame that arrives while
it waits wakes it, and when input waits already it still lets the loop's other callbacks (ticks,
fsync completions) run before it returns — a node with steady input must not starve them."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import zmq
import zmq.asyncio

from nameservice.server.local import free_ports
from nameservice.server.transport import NodeTransport
from tests.waiting import async_wait_for


@pytest.fixture
async def wired() -> AsyncIterator[tuple[NodeTransport, zmq.Socket]]:
    """A node's transport and a DEALER connected to its ROUTER."""
    port = free_ports(1)[0]
    ctx = zmq.asyncio.Context()
    transport = NodeTransport(ctx, 1, {1: f"127.0.0.1:{port}"})
    dealer = zmq.Context.instance().socket(zmq.DEALER)
    dealer.connect(f"tcp://127.0.0.1:{port}")
    try:
        yield transport, dealer
    finally:
        transport.close()
        dealer.close(0)
        ctx.destroy(0)


async def test_a_frame_arriving_during_the_wait_wakes_it(wired):
    transport, dealer = wired
    waiting = asyncio.ensure_future(transport.receive())
    for _ in range(10):
        await asyncio.sleep(0)
    assert not waiting.done()  # nothing to read yet
    dealer.send(b"hello")
    await asyncio.wait_for(waiting, 10)
    frames = transport.drain(10)
    assert [f[-1] for f in frames] == [b"hello"]


async def test_with_input_waiting_it_still_gives_the_loop_a_turn(wired):
    transport, dealer = wired
    dealer.send(b"hello")
    await async_wait_for(transport.has_input, 10, "the frame at the ROUTER")
    ran: list[bool] = []
    asyncio.get_running_loop().call_soon(ran.append, True)
    assert await transport.receive() is None  # the input is drain()'s to take
    assert ran == [True]
    assert [f[-1] for f in transport.drain(10)] == [b"hello"]
