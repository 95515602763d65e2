"""Hostile input at the control socket of every kind of process (issue 13): a JSON array
nested 1,000 deep crashed both intermediaries and silently hung every other control socket.
Every bad request now gets an error answer, is counted, and the socket keeps answering."""
from __future__ import annotations

import asyncio
import json

import pytest
import zmq
import zmq.asyncio

from fabric.butterfly.scenario import PRODUCER
from nameservice.client import NameServiceClient
from nameservice.control import control_request, process_name
from nameservice.names import Names
from tests.waiting import wait_for

pytestmark = pytest.mark.slow

HOSTILE = [
    [b"[" * 1000 + b"]" * 1000],                     # the crash of issue 13: 2,000 bytes
    [b"[" * 30_000 + b"]" * 30_000],                 # deeper, still under the size limit
    [b'{"command": ' * 500 + b'"status"' + b"}" * 500],
    [b'{"command": "status", "timeout": ' + b"[" * 900 + b"]" * 900 + b"}"],
    [b"\xff\xfe not json"],
    [b'{"command": "status", "timeout": NaN}'],
    [b'{"command": "drain", "timeout": true}'],
    [b"two", b"frames"],
    [],                                              # an empty message: no frame at all
]


async def _hammer(endpoint: str) -> list[dict]:
    """Send every hostile request on one connection; return the answers, in order."""
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        answers = []
        for frames in HOSTILE:
            await sock.send_multipart(frames or [b""])
            answers.append(json.loads(await asyncio.wait_for(sock.recv(), 10)))
        return answers
    finally:
        sock.close(0)
        ctx.term()


async def _check(ns_arg: str, names: list[str]) -> None:
    async with NameServiceClient(ns_arg, timeout=10) as client:
        registry = Names(client)
        for name in names:
            [found] = await registry.resolve(process_name(name))
            answers = await _hammer(found.endpoint)
            assert all(a["ok"] is False and a["error"] for a in answers), (name, answers)
            status = await control_request(found.endpoint, "status", 10)
            assert status["control_bad_requests"] >= len(HOSTILE), (name, status)


def test_every_kind_of_process_answers_hostile_control_requests_and_keeps_serving(deployment):
    d = deployment
    intermediary, _ = d.intermediary("int-h")
    consumer, _ = d.consumer("cons-h")
    producer = d.component("prod-h", PRODUCER, index=1, rate=500)
    wait_for(lambda: d.progress(consumer)["unique"] > 100, 30, "delivery")
    asyncio.run(_check(d.ns, ["ns-1", "int-h", "cons-h", "prod-h"]))
    mark = d.progress(consumer)["unique"]
    wait_for(lambda: d.progress(consumer)["unique"] > mark + 100, 30, "delivery after")
    for proc in (intermediary, consumer, producer):
        assert proc.alive(), proc.log_tail()
    assert d.cluster.running(1)
