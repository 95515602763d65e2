"""Data-path metrics: the collectors of an intermediary and of ports in this process, and the
``/metrics`` of a real intermediary, producer and consumer started with ``FABRIC_METRICS``."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from fabric.intermediary.metrics import IntermediaryCollector
from fabric.ports.input import InputPort
from fabric.ports.metrics import PortCollector
from fabric.ports.output import OutputPort
from tests.datapath.conftest import events_from, stats_from
from tests.datapath.helpers import running_intermediary
from tests.datapath.procs import count_records
from tests.scrape import collect, metrics_url_in, scrape
from tests.waiting import async_wait_for, wait_for


async def test_the_collectors_count_what_went_through_and_hold_nothing_once_acknowledged():
    got = []
    async with running_intermediary("metrics") as node:
        consumer = await InputPort("metrics", [node.endpoint], got.append).start()
        producer = await OutputPort("metrics", [node.endpoint], batch_max=100).start()
        ports = PortCollector([producer, consumer])
        assert producer.histograms is not None  # kept from now on
        for i in range(1000):
            await producer.send(i)
        await asyncio.wait_for(producer.flush(), 10)
        await async_wait_for(lambda: len(got) == 1000, 10, "every message")
        mid = collect(IntermediaryCollector(node), ports)
        await producer.drain()
        await consumer.drain()

    ch = {"channel": "metrics"}
    pid, cid = producer.producer_id.hex(), consumer.consumer_id.hex()
    batches = producer.stats.batches_sent
    assert mid.value("fabric_producer_messages_sent_total", port=pid) == 1000
    assert mid.value("fabric_producer_messages_acked_total", **ch) == 1000
    assert mid.value("fabric_producer_batches_sent_total", **ch) == batches
    assert mid.value("fabric_producer_unacked_messages", **ch) == 0
    assert mid.value("fabric_producer_unacked_bytes", **ch) == 0
    assert mid.value("fabric_producer_intermediaries_connected", **ch) == 1
    # One observation per batch: its size, and its round trip once wholly acknowledged.
    assert mid.value("fabric_producer_batch_messages_count", **ch) == batches
    assert mid.value("fabric_producer_batch_messages_sum", **ch) == 1000
    assert mid.values("fabric_producer_batch_messages_bucket", le="128.0", **ch) == [batches]
    assert mid.value("fabric_producer_ack_latency_seconds_count", **ch) == batches
    assert 0 < mid.value("fabric_producer_ack_latency_seconds_sum", **ch) < 10 * batches
    assert mid.value("fabric_producer_claim_round_duration_seconds_count", **ch) == 0
    assert mid.value("fabric_consumer_messages_delivered_total", port=cid) == 1000
    assert mid.value("fabric_consumer_batches_received_total", **ch) == batches
    assert mid.value("fabric_consumer_pending_messages", **ch) == 0
    assert mid.value("fabric_consumer_prefetch_messages", **ch) == consumer.prefetch
    assert mid.value("fabric_intermediary_batches_in_total", **ch) == batches
    assert mid.value("fabric_intermediary_batches_out_total", **ch) == batches
    assert mid.value("fabric_intermediary_acks_forwarded_total", **ch) >= 1
    assert mid.value("fabric_intermediary_peers", role="producer", **ch) == 1
    assert mid.value("fabric_intermediary_peers", role="consumer", **ch) == 1
    assert mid.value("fabric_intermediary_messages", **ch) == 0  # every state
    assert mid.value("fabric_intermediary_queue_max_bytes", **ch) == node.max_queue_bytes


async def test_batches_queued_for_credit_show_as_queued_messages_and_bytes():
    async with running_intermediary("queued") as node, \
            OutputPort("queued", [node.endpoint], batch_max=10) as producer:
        for i in range(50):
            await producer.send(i)
        collector = IntermediaryCollector(node)
        await async_wait_for(lambda: collect(collector).value(
            "fabric_intermediary_messages", state="queued") == 50, 10, "every batch queued")
        got = collect(collector, PortCollector([producer]))
        assert got.value("fabric_intermediary_batches_in_total") == producer.stats.batches_sent
        assert got.value("fabric_intermediary_queue_bytes") > 0
        assert got.value("fabric_intermediary_consumer_credit_messages") == 0
        assert got.value("fabric_producer_unacked_messages") == 50
        assert got.value("fabric_producer_ack_latency_seconds_count") == 0
        async with InputPort("queued", [node.endpoint], lambda m: None):
            await asyncio.wait_for(producer.flush(), 10)


@pytest.mark.slow
def test_real_processes_serve_metrics_that_agree_with_the_traffic(cluster, monkeypatch):
    monkeypatch.setenv("FABRIC_METRICS", "127.0.0.1:0")  # inherited by every process
    intermediary, endpoint = cluster.intermediary()
    consumer, out = cluster.consumer([endpoint], "consumer")
    producer = cluster.producer([endpoint], 0, 0, "--rate", "20000")
    url = {name: metrics_url_in(Path(proc.err_file.name))
           for name, proc in [("intermediary", intermediary), ("consumer", consumer),
                              ("producer", producer)]}
    wait_for(lambda: count_records(out) >= 3000, 30, "traffic")

    running = {name: scrape(u) for name, u in url.items()}
    assert running["producer"].value("fabric_producer_messages_sent_total") > 0
    assert running["producer"].value("fabric_producer_ack_latency_seconds_count") > 0
    assert running["producer"].value("fabric_producer_batch_messages_count") > 0
    assert running["consumer"].value("fabric_consumer_messages_delivered_total") >= 3000
    assert running["intermediary"].value("fabric_intermediary_batches_in_total") > 0
    assert running["intermediary"].value("fabric_intermediary_peers", role="producer") == 1
    assert running["intermediary"].value("fabric_intermediary_peers", role="consumer") == 1

    output = cluster.stop(producer)  # drains: everything sent is acknowledged
    sent = events_from(output, "sent")[0]["count"]
    stats = stats_from(output)
    wait_for(lambda: count_records(out) == sent, 20, "every message at the consumer")
    after = scrape(url["intermediary"])
    assert (after.value("fabric_intermediary_batches_in_total")
            == stats["batches_sent"] + stats["batches_resent"])
    assert after.value("fabric_intermediary_messages") == 0
    assert after.value("fabric_intermediary_peers", role="consumer") == 1
    assert scrape(url["consumer"]).value("fabric_consumer_messages_delivered_total") == sent
    cluster.stop(consumer)
    cluster.stop(intermediary)
