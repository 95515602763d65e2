"""Connections per listening socket are bounded (issue 13: 1,000 held idle connections cost a
process memory it never gave back): beyond ``FABRIC_MAX_CONNECTIONS`` a connection is closed as
soon as it is accepted, counted and logged; the socket keeps serving, and so do the process's
other sockets (each has its own budget)."""
from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import zmq

from nameservice.control import control_request
from nameservice.security.context import Security
from tests.waiting import wait_for

ROOT = str(Path(__file__).resolve().parents[2])


def _hold(port: int, count: int) -> list[socket.socket]:
    held = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        held.append(sock)
    return held


def _closed_by_peer(sock: socket.socket) -> bool:
    sock.settimeout(0.01)
    try:
        return sock.recv(1) == b""  # libzmq sends its greeting to those it keeps
    except (TimeoutError, BlockingIOError):
        return False
    except OSError:
        return True


def test_a_socket_closes_the_connections_beyond_its_limit_and_keeps_serving(monkeypatch):
    monkeypatch.setenv("FABRIC_MAX_CONNECTIONS", "5")
    security = Security(None)
    ctx = zmq.Context()
    server = ctx.socket(zmq.ROUTER)
    server.linger = 0
    security.serve(server)
    server.bind("tcp://127.0.0.1:0")
    port = int(server.getsockopt_string(zmq.LAST_ENDPOINT).rsplit(":", 1)[1])
    held: list[socket.socket] = []
    try:
        held = _hold(port, 12)
        wait_for(lambda: security.counters()["connections_refused"] >= 7, 10,
                 "the seven connections beyond the limit refused")
        assert security.counters()["connections_refused"] == 7
        wait_for(lambda: sum(_closed_by_peer(s) for s in held) == 7, 10,
                 "exactly the seven refused connections closed by the server")
        for sock in held:
            sock.close()
        # Once the held ones are gone, a real client gets in and is served.
        client = ctx.socket(zmq.DEALER)
        client.linger = 0

        def served() -> bool:
            client.send(b"ping")
            return bool(server.poll(200))

        client.connect(f"tcp://127.0.0.1:{port}")
        wait_for(served, 10, "a client admitted once the held connections closed")
        client.close(0)
    finally:
        for sock in held:
            sock.close()
        server.close(0)
        security.close()
        ctx.term()


def test_an_intermediary_flooded_with_idle_connections_still_answers_on_its_control_socket(
        tmp_path):
    env = {**os.environ, "FABRIC_MAX_CONNECTIONS": "10"}
    env.pop("FABRIC_KEYS", None)
    proc = subprocess.Popen([sys.executable, "-m", "fabric", "intermediary", "--channel", "c",
                             "--listen", "127.0.0.1:0", "--events"], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=open(tmp_path / "log", "wb"),
                            text=True)
    held: list[socket.socket] = []
    try:
        assert proc.stdout is not None
        found: dict[str, str] = {}
        for line in proc.stdout:
            event = json.loads(line)
            found[event["event"]] = event.get("endpoint", "")
            if {"listening", "control"} <= set(found):
                break
        port = int(found["listening"].rsplit(":", 1)[1])
        held = _hold(port, 30)
        status = asyncio.run(_status(found["control"]))  # the control socket's own budget
        wait_for(lambda: asyncio.run(_status(found["control"]))["security"]
                 ["connections_refused"] >= 20, 10, "the connections beyond 10 refused")
        assert status["kind"] == "intermediary" and proc.poll() is None
        log = (tmp_path / "log").read_text()
        assert log.count("beyond the socket's limit") == 1, log  # logged once for the socket
    finally:
        for sock in held:
            sock.close()
        proc.terminate()
        proc.wait(10)


async def _status(endpoint: str) -> dict:
    return await control_request(endpoint, "status", 10)


@pytest.fixture(autouse=True)
def _insecure(monkeypatch):
    monkeypatch.delenv("FABRIC_KEYS", raising=False)
