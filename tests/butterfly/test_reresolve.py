"""Live re-resolve with real processes: an intermediary restarted on another port is used by
running producers and consumers, with no restart of either; one frozen past its lease is
registered again when it resumes."""
from __future__ import annotations

import signal

import pytest

from fabric.butterfly.report import read_deliveries
from fabric.butterfly.scenario import PRODUCER
from nameservice.client import SyncNameServiceClient
from tests.waiting import wait_for

pytestmark = pytest.mark.slow


def _endpoints_events(proc) -> list[dict]:
    return [found for _, found in proc.events("endpoints")]


def test_running_ports_follow_an_intermediary_restarted_on_another_port(deployment):
    d = deployment
    first, old = d.intermediary("mover")
    consumer, out = d.consumer("consumer")
    producer = d.component("producer", PRODUCER, index=1, rate=2000)
    wait_for(lambda: d.progress(consumer)["unique"] > 500, 30, "delivery through the first")

    first.kill()
    _, new = d.intermediary("mover-again")
    assert new != old
    for proc in (producer, consumer):
        wait_for(lambda p=proc: any(new in ev["added"] for ev in _endpoints_events(p)), 10,
                 f"{proc.name} to add {new}")
        wait_for(lambda p=proc: any(new in ev["endpoints"] for _, ev in p.events("connected")),
                 10, f"{proc.name}'s connection to {new} to be up")
    # The killed one's lease expires and the ports let go of it.
    for proc in (producer, consumer):
        wait_for(lambda p=proc: any(old in ev["removed"] for ev in _endpoints_events(p)), 10,
                 f"{proc.name} to let go of {old}")
    delivered = d.progress(consumer)["unique"]
    wait_for(lambda: d.progress(consumer)["unique"] > delivered + 1000, 30,
             "delivery through the moved intermediary")

    producer.signal(15)
    assert producer.wait(30) == 0
    consumer.signal(15)
    assert consumer.wait(30) == 0
    sent = producer.latest("sent")["count"]
    received = consumer.latest("received")
    vias = {int(k): v for k, v in received["vias"].items()}
    deliveries = read_deliveries(out.read_bytes(), vias)
    ids = {x.ident & ((1 << 40) - 1) for x in deliveries}
    assert ids == set(range(sent))
    assert len(deliveries) == sent  # nothing twice
    assert {x.via for x in deliveries} == {old, new}


def test_an_intermediary_frozen_past_its_lease_registers_again_when_it_resumes(deployment):
    d = deployment
    proc, endpoint = d.intermediary("sleeper")
    with SyncNameServiceClient(d.ns) as ns:
        def entries() -> list[bytes]:
            return sorted(kv.key for kv in ns.range("names/")
                          if kv.key.startswith((f"names/channel/{d.channel}/".encode(),
                                                b"names/process/sleeper/")))

        wait_for(lambda: len(entries()) == 2, 10, "the channel and process entries")
        keys = entries()
        proc.signal(signal.SIGSTOP)  # no keepalives: the cluster expires the lease (TTL 2 s)
        try:
            wait_for(lambda: entries() == [], 15, "the frozen intermediary's entries to expire")
        finally:
            proc.signal(signal.SIGCONT)
        wait_for(lambda: entries() == keys, 15, "both entries back, under the same keys")
        [channel] = [kv for kv in ns.range(f"names/channel/{d.channel}/")]
        assert endpoint.encode() in channel.value
    assert proc.alive()
