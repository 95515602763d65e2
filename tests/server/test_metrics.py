"""A node's metrics (``fabric_ns_*``): read from the parts of real nodes in this process, and
scraped from ``/metrics`` of real daemons started with ``FABRIC_METRICS``."""
from __future__ import annotations

import pytest

from nameservice.client import NameServiceClient
from nameservice.server.__main__ import main
from nameservice.server.metrics import NodeCollector
from nameservice.server.watches import MAX_WATCHES
from tests.scrape import collect, metrics_url_in, scrape
from tests.server.conftest import caught_up
from tests.server.inprocess import InProcessCluster
from tests.waiting import async_wait_for


async def test_the_collector_follows_roles_writes_reads_and_their_latencies():
    async with InProcessCluster(3) as cluster:
        leader = await cluster.wait_for_leader()
        ns = cluster.client()
        await ns.open_session()
        for i in range(20):
            await ns.put(b"m/%d" % i, b"v")
        for i in range(5):
            assert (await ns.get(b"m/%d" % i)) is not None
        await cluster.wait_caught_up()
        got = {i: collect(NodeCollector(node)) for i, node in cluster.nodes.items()}

    lead = got[leader]
    assert [i for i, g in got.items() if g.value("fabric_ns_role", role="leader") == 1] == [leader]
    for i, g in got.items():
        assert g.value("fabric_ns_role") == 1  # one role each
        assert g.value("fabric_ns_leader_known") == 1
        assert g.value("fabric_ns_term") == lead.value("fabric_ns_term")
        assert g.value("fabric_ns_applied_index") == lead.value("fabric_ns_commit_index")
        assert g.value("fabric_ns_keys") == 20
        assert g.value("fabric_ns_watches_max") == MAX_WATCHES
        assert g.values("fabric_ns_node_info", id=str(i), name=f"ns-{i}") == [1]
    assert lead.value("fabric_ns_writes_total") >= 21  # the session and the puts
    writes = lead.value("fabric_ns_request_duration_seconds_count", op="write")
    assert writes >= 21 and lead.value("fabric_ns_request_duration_seconds_sum", op="write") > 0
    assert lead.value("fabric_ns_commit_duration_seconds_count") == lead.value(
        "fabric_ns_entries_proposed_total")
    assert lead.value("fabric_ns_fsync_duration_seconds_count") > 0
    assert sum(g.value("fabric_ns_reads_total") for g in got.values()) >= 5
    assert sum(g.value("fabric_ns_request_duration_seconds_count", op="read")
               for g in got.values()) >= 5
    assert sum(g.value("fabric_ns_read_index_wait_seconds_count") for g in got.values()) >= 1
    assert lead.value("fabric_ns_pending_writes") == 0


@pytest.mark.slow
async def test_real_nodes_serve_their_metrics_and_exactly_one_says_it_leads(
        make_cluster, monkeypatch):
    monkeypatch.setenv("FABRIC_METRICS", "127.0.0.1:0")  # inherited by the daemons
    cluster = make_cluster(3)
    urls = {i: metrics_url_in(cluster.node_dir(i).with_suffix(".log")) for i in cluster.ids}
    async with NameServiceClient(list(cluster.addresses.values())) as ns:
        puts = 30
        for i in range(puts):
            await ns.put(f"metrics/{i}", str(i))
        await async_wait_for(lambda: caught_up(ns, cluster), 10, "every node to apply")

    got = {i: scrape(url) for i, url in urls.items()}
    leaders = [i for i, g in got.items() if g.value("fabric_ns_role", role="leader") == 1]
    assert len(leaders) == 1
    lead = got[leaders[0]]
    assert lead.value("fabric_ns_writes_total") >= puts
    assert lead.value("fabric_ns_request_duration_seconds_count", op="write") >= puts
    assert lead.value("fabric_ns_fsync_duration_seconds_count") >= 1
    assert lead.value("fabric_ns_fsyncs_total") >= 1
    for g in got.values():
        assert g.value("fabric_ns_keys") >= puts  # and the nodes' own process names
        assert g.value("fabric_ns_term") == lead.value("fabric_ns_term")
        assert g.value("process_resident_memory_bytes") > 0


def test_a_bad_metrics_address_is_a_usage_error(tmp_path, capsys):
    code = main(["--id", "1", "--cluster", "1=127.0.0.1:7401", "--data-dir", str(tmp_path),
                 "--metrics", "no port"])
    assert code == 2 and "bad address" in capsys.readouterr().err
