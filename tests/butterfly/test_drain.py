"""``fabric drain NAME`` and ``fabric status`` against real processes found by name."""
from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from fabric.butterfly.report import read_deliveries, summarize
from fabric.butterfly.scenario import PRODUCER
from tests.butterfly.conftest import ROOT
from tests.waiting import wait_for

pytestmark = pytest.mark.slow


def fabric(d, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fabric", *args, "--ns", d.ns],
                          capture_output=True, timeout=timeout, cwd=ROOT)


def drain(d, name: str) -> None:
    done = fabric(d, "drain", name)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().startswith(f"{name} drained in ")
    assert d.fleet.procs[name].wait(20) == 0, d.fleet.procs[name].log_tail()


def test_every_kind_of_process_drains_by_name_and_nothing_is_lost(deployment):
    d = deployment
    _, endpoint_a = d.intermediary("int-a")
    _, endpoint_b = d.intermediary("int-b")
    consumers = {name: d.consumer(name) for name in ("cons-1", "cons-2")}
    producer = d.component("prod", PRODUCER, index=3, rate=3000)
    delivered = lambda: sum(d.progress(p)["unique"] for p, _ in consumers.values())  # noqa: E731
    wait_for(lambda: delivered() > 1000, 30, "delivery through both intermediaries")

    # An intermediary: drained, deregistered, let go of by every port; delivery goes on.
    drain(d, "int-b")
    for proc in (producer, *(p for p, _ in consumers.values())):
        wait_for(lambda p=proc: any(endpoint_b in found["removed"]
                                    for _, found in p.events("endpoints")), 10,
                 f"{proc.name} to let go of the drained intermediary")
    mark = delivered()
    wait_for(lambda: delivered() > mark + 1000, 30, "delivery through the other intermediary")

    # A consumer, mid-stream: the other one takes over.
    drain(d, "cons-2")
    mark = delivered()
    wait_for(lambda: delivered() > mark + 1000, 30, "delivery to the remaining consumer")

    # The producer: everything it sent is acknowledged before it exits.
    drain(d, "prod")
    sent = producer.latest("sent")["count"]
    wait_for(lambda: delivered() >= sent, 30, "every message sent to be delivered")
    drain(d, "cons-1")
    drain(d, "int-a")

    deliveries = []
    for proc, out in consumers.values():
        received = proc.latest("received")
        vias = {int(k): v for k, v in received["vias"].items()}
        deliveries += read_deliveries(out.read_bytes(), vias)
    result = summarize({3: sent}, deliveries, kill_at=None, reresolve_ms=None, drain_ms=None)
    assert result["lost"] == 0 and result["duplicates"] == 0, result
    assert result["delivered"] == sent
    assert {x.via for x in deliveries} == {endpoint_a, endpoint_b}


def test_status_lists_channels_and_processes_with_their_counts(deployment):
    d = deployment
    _, endpoint = d.intermediary("int-s")
    consumer, _ = d.consumer("cons-s")
    d.component("prod-s", PRODUCER, index=1, rate=2000)
    wait_for(lambda: d.progress(consumer)["unique"] > 500, 30, "delivery")
    done = fabric(d, "status", "--json")
    assert done.returncode == 0, done.stderr.decode()
    status = json.loads(done.stdout)
    assert status["channels"][d.channel] == [endpoint]
    rows = {row["name"]: row for row in status["processes"]}
    assert rows["int-s"]["kind"] == "intermediary"
    assert rows["int-s"]["status"]["channel"] == d.channel
    assert rows["prod-s"]["status"]["ports"][0]["counters"]["messages_sent"] > 0
    assert rows["cons-s"]["status"]["ports"][0]["counters"]["messages_delivered"] > 0
    assert "unacked" in rows["prod-s"]["status"]["in_flight"]
    assert rows["prod-s"]["rates"], rows["prod-s"]  # it is sending: some rate is above 0

    table = fabric(d, "status")
    assert table.returncode == 0
    text = table.stdout.decode()
    assert "int-s" in text and "prod-s" in text and endpoint in text

    live = d.fleet.start("status-watch", [sys.executable, "-m", "fabric", "status", "--watch",
                                          "--ns", d.ns])
    wait_for(lambda: sum("prod-s" in line for _, line in live.lines) >= 2, 30,
             "two redraws of the live table")
    live.signal(signal.SIGINT)
    assert live.wait(10) == 130  # Ctrl-C


def test_drain_of_an_unknown_name_exits_4(deployment):
    done = fabric(deployment, "drain", "nobody-by-this-name")
    assert done.returncode == 4
    err = done.stderr.decode()
    assert len(err.strip().splitlines()) == 1 and "nobody-by-this-name" in err
