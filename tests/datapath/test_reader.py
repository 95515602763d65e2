"""The Reader: every frame reaches the callback, whatever the edge-triggered descriptor does."""
from __future__ import annotations

import pytest
import zmq

from fabric.ports.reader import Reader
from tests.waiting import async_wait_for, wait_for


@pytest.fixture
def ctx():
    context = zmq.Context()
    try:
        yield context
    finally:
        context.destroy(linger=0)


def pair(ctx: zmq.Context) -> tuple[zmq.Socket, zmq.Socket]:
    """A DEALER bound on a free loopback port and a DEALER connected to it (real TCP)."""
    server = ctx.socket(zmq.DEALER)
    server.setsockopt(zmq.LINGER, 0)
    server.bind("tcp://127.0.0.1:0")
    client = ctx.socket(zmq.DEALER)
    client.setsockopt(zmq.LINGER, 0)
    client.connect(server.getsockopt_string(zmq.LAST_ENDPOINT))
    return server, client


def wait_readable_blocking(sock: zmq.Socket, timeout: float = 5.0) -> None:
    """Block (the event loop too) until ``sock`` reports a waiting frame in ``EVENTS``."""
    wait_for(lambda: sock.getsockopt(zmq.EVENTS) & zmq.POLLIN, timeout, "a frame to arrive",
             interval=0.0002)


async def test_a_burst_larger_than_one_wake_up_arrives_whole_and_in_order(ctx):
    server, client = pair(ctx)
    got: list[bytes] = []
    reader = Reader(server, got.append, burst=7)  # 1,000 frames need many wake-ups
    for i in range(1000):
        client.send(b"%d" % i)
    await async_wait_for(lambda: len(got) == 1000, 10, "all 1,000 frames")
    assert got == [b"%d" % i for i in range(1000)]
    reader.close()


async def test_frames_that_arrived_before_the_reader_existed_are_received(ctx):
    server, client = pair(ctx)
    for i in range(5):
        client.send(b"early %d" % i)
    # Wait until they sit in the socket, with the descriptor's signal already consumed.
    assert server.poll(5000) == zmq.POLLIN
    got: list[bytes] = []
    reader = Reader(server, got.append)
    await async_wait_for(lambda: len(got) == 5, 5, "the early frames")
    reader.close()


async def test_a_send_that_consumes_the_signal_does_not_strand_a_frame(ctx):
    server, client = pair(ctx)
    got: list[bytes] = []
    reader = Reader(server, got.append)
    client.send(b"ping")
    await async_wait_for(lambda: got, 5, "the first frame")
    for round_ in range(200):
        # A frame arrives while this loop is busy; our send then processes the socket's
        # commands, which resets the descriptor: only check() can notice the waiting frame.
        client.send(b"%d" % round_)
        # Without letting the loop run: wait until the frame is in; reading EVENTS processes
        # the socket's commands, which resets the descriptor.
        wait_readable_blocking(server)
        server.send(b"reply")
        reader.check()
        await async_wait_for(lambda r=round_: len(got) == r + 2, 5, f"frame of round {round_}")
        assert client.recv() == b"reply"
    reader.close()


async def test_many_sockets_each_get_exactly_their_own_frames(ctx):
    pairs = [pair(ctx) for _ in range(40)]
    got: dict[int, list[bytes]] = {i: [] for i in range(len(pairs))}
    readers = [Reader(server, got[i].append, burst=3) for i, (server, _) in enumerate(pairs)]
    for n in range(25):
        for i, (_, client) in enumerate(pairs):
            client.send(b"%d:%d" % (i, n))
    await async_wait_for(lambda: all(len(v) == 25 for v in got.values()), 10, "25 frames each")
    for i, frames in got.items():
        assert frames == [b"%d:%d" % (i, n) for n in range(25)]
    for reader in readers:
        reader.close()


async def test_closing_from_the_callback_stops_at_once_and_a_new_socket_is_not_confused(ctx):
    server, client = pair(ctx)
    got: list[bytes] = []

    def on_frame(frame: bytes) -> None:
        got.append(frame)
        if len(got) == 3:
            reader.close()
            server.close(linger=0)  # its descriptor number is free for the next socket

    reader = Reader(server, on_frame)
    for i in range(10):
        client.send(b"%d" % i)
    await async_wait_for(lambda: len(got) >= 3, 5, "three frames")
    # A new socket may reuse the old descriptor number: only its own reader sees its frames.
    server2, client2 = pair(ctx)
    got2: list[bytes] = []
    reader2 = Reader(server2, got2.append)
    client2.send(b"new")
    await async_wait_for(lambda: got2, 5, "the new socket's frame")
    client2.send(b"newer")  # the descriptor is ready again, and the loop goes round again
    await async_wait_for(lambda: len(got2) == 2, 5, "the new socket's second frame")
    assert got == [b"0", b"1", b"2"]
    assert reader.closed
    reader2.close()


async def test_a_socket_closed_under_the_reader_stops_it_without_an_error(ctx):
    server, client = pair(ctx)
    got: list[bytes] = []
    reader = Reader(server, got.append)
    client.send(b"one")
    await async_wait_for(lambda: got, 5, "a frame")
    reader.check()
    server.close(linger=0)
    reader._ready()  # what a late wake-up would do: it must notice and stop, not raise
    reader.check()
    assert reader.closed
