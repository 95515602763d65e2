"""Garbage at every listening socket while messages flow (issue 13): random frames from empty
to past the size limit, truncated and type-confused msgpack, a message of 1,000 frames, a
ZMTP greeting that stops halfway, 200 idle TCP connections — at the name-service node's port,
the intermediary's data port and every process's control socket. Nothing crashes, no message
is lost or handled twice, every process still answers, memory stays bounded, and the bad
frames are counted."""
from __future__ import annotations

import asyncio
import random
import socket

import msgpack
import pytest
import zmq
import zmq.asyncio

from fabric.butterfly.scenario import PRODUCER
from nameservice.address import parse_address
from nameservice.client import NameServiceClient
from nameservice.control import control_request, process_name
from nameservice.names import Names
from tests.procfs import rss_bytes
from tests.waiting import wait_for

pytestmark = pytest.mark.slow

IDLE_CONNECTIONS = 200
RSS_GROWTH_LIMIT = 100 << 20  # far above what a few thousand dropped frames may cost


def _garbage(rng: random.Random) -> list[list[bytes]]:
    """Messages no fabric socket should accept (each a list of frames)."""
    nested = msgpack.packb([1, 2, [3, {b"k": [4.5, None, b"x" * 100]}]])
    out: list[list[bytes]] = [[b""], [b"\x00"], [bytes([1, 2])], [bytes([1, 1])],
                              [nested[:-7]], [msgpack.packb({"op": [1.5, None, True]})],
                              [msgpack.packb([2 ** 63, -1, "x"])], [b"\x91" * 5000],
                              [b"x"] * 1000, [rng.randbytes(9 << 20)]]
    out += [[rng.randbytes(rng.choice((1, 7, 100, 4096, 65536)))] for _ in range(40)]
    out += [[bytes([1, k]) + rng.randbytes(50)] for k in range(8)]
    return out


async def _spray(endpoint: str, rng: random.Random) -> None:
    """Send every garbage message on a few connections (answers, if any, are ignored)."""
    ctx = zmq.asyncio.Context()
    try:
        for _ in range(3):
            sock = ctx.socket(zmq.DEALER)
            sock.connect(endpoint)
            for frames in _garbage(rng):
                await sock.send_multipart(frames)
            sock.close(linger=5000)  # the frames still queued leave before ctx.term returns
    finally:
        ctx.term()


def _raw_abuse(host: str, port: int) -> list[socket.socket]:
    """A greeting that stops halfway, and idle connections (all kept open; the caller closes)."""
    held = []
    half = socket.create_connection((host, port), timeout=5)
    half.sendall(b"\xff" + b"\x00" * 8 + b"\x7f" + b"\x03")  # signature, then silence
    held.append(half)
    for _ in range(IDLE_CONNECTIONS):
        held.append(socket.create_connection((host, port), timeout=5))
    return held


async def _endpoints(ns_arg: str, names: list[str]) -> dict[str, str]:
    async with NameServiceClient(ns_arg, timeout=10) as client:
        registry = Names(client)
        return {name: (await registry.resolve(process_name(name)))[0].endpoint
                for name in names}


def test_garbage_at_every_socket_loses_nothing_and_crashes_nothing(deployment):
    d = deployment
    rng = random.Random(13)
    intermediary, data_endpoint = d.intermediary("int-g")
    consumer, _ = d.consumer("cons-g")
    producer = d.component("prod-g", PRODUCER, index=1, rate=500)
    wait_for(lambda: d.progress(consumer)["unique"] > 100, 30, "delivery")
    names = ["ns-1", "int-g", "cons-g", "prod-g"]
    controls = asyncio.run(_endpoints(d.ns, names))
    pids = {"ns-1": d.cluster.procs[1].pid, "int-g": intermediary.popen.pid,
            "cons-g": consumer.popen.pid, "prod-g": producer.popen.pid}
    rss_before = {name: rss_bytes(pid) for name, pid in pids.items()}
    ns_endpoint = "tcp://" + d.cluster.addresses[1]
    targets = [ns_endpoint, data_endpoint, *controls.values()]

    held: list[socket.socket] = []
    try:
        for endpoint in targets:
            host, port = parse_address(endpoint.removeprefix("tcp://"))
            held += _raw_abuse(host, port)
            asyncio.run(_spray(endpoint, rng))
        mark = d.progress(consumer)["unique"]
        wait_for(lambda: d.progress(consumer)["unique"] > mark + 200, 60,
                 "delivery while the garbage connections are held")
    finally:
        for sock in held:
            sock.close()

    for proc in (intermediary, consumer, producer):
        assert proc.alive(), proc.log_tail()
    assert d.cluster.running(1)
    for name, endpoint in controls.items():
        status = asyncio.run(control_request(endpoint, "status", 10))
        assert status, name
    for name, pid in pids.items():
        grown = rss_bytes(pid) - rss_before[name]
        assert grown < RSS_GROWTH_LIMIT, f"{name} grew by {grown >> 20} MiB"

    async def ns_counters() -> dict:
        async with NameServiceClient(d.ns, timeout=10) as client:
            return (await client.status(d.cluster.addresses[1]))["counters"]
    counters = asyncio.run(ns_counters())
    assert counters["bad_client_frames"] + counters["bad_requests"] > 0, counters

    counts = d.progress(consumer)
    assert counts["duplicates"] == 0, counts
