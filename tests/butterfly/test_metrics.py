"""``FABRIC_METRICS`` end to end through the ``fabric`` command: a name-service node, an
intermediary and two components (``fabric component run``) each serve ``/metrics``, and what
they export agrees with the traffic."""
from __future__ import annotations

import pytest

from fabric.butterfly.fleet import Fleet
from nameservice.server.local import LocalCluster
from tests.butterfly.conftest import ROOT, Deployment
from tests.scrape import metrics_url_in, scrape

pytestmark = pytest.mark.slow

COUNT = 5000
FUNCTIONS = '''
async def produce(ctx):
    out = await ctx.output(ctx.params["channel"])
    for i in range(int(ctx.params["count"])):
        await out.send(i)
    await out.flush()
    ctx.event("sent")
    await ctx.stopping.wait()

async def consume(ctx):
    await ctx.input(ctx.params["channel"], lambda message: None)
    ctx.event("ready")
    await ctx.stopping.wait()
'''


@pytest.fixture
def measured(tmp_path, monkeypatch):
    """A deployment whose every process serves metrics on a free port."""
    monkeypatch.setenv("FABRIC_METRICS", "127.0.0.1:0")
    with LocalCluster(tmp_path / "ns", 1) as cluster, Fleet(ROOT, tmp_path) as fleet:
        cluster.start()
        yield Deployment(tmp_path, cluster, fleet)


def test_every_kind_of_process_serves_metrics_that_agree_with_the_traffic(measured, tmp_path):
    d = measured
    (tmp_path / "funcs.py").write_text(FUNCTIONS)
    intermediary, _ = d.intermediary("int-m")
    consumer = d.component("cons-m", f"{tmp_path / 'funcs.py'}:consume")
    consumer.wait_event("ready", 30)
    producer = d.component("prod-m", f"{tmp_path / 'funcs.py'}:produce", count=COUNT)
    producer.wait_event("sent", 30)
    urls = {proc.name: metrics_url_in(proc.log_path) for proc in (intermediary, consumer,
                                                                  producer)}
    node_url = metrics_url_in(d.cluster.node_dir(1).with_suffix(".log"))

    prod = scrape(urls["prod-m"])
    ch = {"channel": d.channel}
    assert prod.value("fabric_producer_messages_sent_total", **ch) == COUNT
    assert prod.value("fabric_producer_messages_acked_total", **ch) == COUNT
    assert prod.value("fabric_producer_unacked_messages", **ch) == 0
    batches = prod.value("fabric_producer_batches_sent_total", **ch)
    resent = prod.value("fabric_producer_batches_resent_total", **ch)
    assert prod.value("fabric_producer_batch_messages_count", **ch) == batches
    assert prod.value("fabric_producer_batch_messages_sum", **ch) == COUNT
    assert prod.value("fabric_producer_ack_latency_seconds_count", **ch) == batches

    cons = scrape(urls["cons-m"])
    assert cons.value("fabric_consumer_messages_delivered_total", **ch) == COUNT
    assert cons.value("fabric_consumer_pending_messages", **ch) == 0

    inter = scrape(urls["int-m"])
    assert inter.value("fabric_intermediary_batches_in_total", **ch) == batches + resent
    assert inter.value("fabric_intermediary_batches_out_total", **ch) == batches + resent
    assert inter.value("fabric_intermediary_messages", **ch) == 0
    assert inter.value("fabric_intermediary_peers", role="producer", **ch) == 1
    assert inter.value("fabric_intermediary_peers", role="consumer", **ch) == 1

    node = scrape(node_url)
    assert node.value("fabric_ns_role", role="leader") == 1
    # The registrations: the node's own, the intermediary's two names, each component's.
    assert node.value("fabric_ns_writes_total") >= 4
    assert node.value("fabric_ns_watches") >= 2  # each component follows its channel
    assert node.value("fabric_ns_leases") >= 3
    assert node.value("fabric_ns_request_duration_seconds_count", op="write") >= 4
