"""The shared metrics machinery (nameservice/metrics.py): buckets, table collectors, the server
and its address; and that docs/operations.md and the Grafana dashboard name exactly the metrics
the processes export."""
from __future__ import annotations

import json
import re
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from fabric.intermediary.metrics import INTERMEDIARY_METRICS
from fabric.ports.metrics import PORT_METRICS
from nameservice.errors import ConfigError
from nameservice.metrics import ENV, Buckets, Metric, TableCollector, metrics_address, start_metrics
from nameservice.security.metrics import SECURITY_METRICS
from nameservice.server.metrics import NODE_METRICS
from tests.scrape import collect, scrape

ROOT = Path(__file__).resolve().parent.parent
EXPORTED = (*NODE_METRICS, *INTERMEDIARY_METRICS, *PORT_METRICS, *SECURITY_METRICS)
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def test_buckets_count_each_value_in_the_first_bucket_whose_bound_holds_it():
    b = Buckets((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 1.0, 7.0):
        b.observe(value)
    b.observe(0.2, 3)  # a group of three that waited as long
    assert b.counts == [2, 5, 1] and b.count == 8
    assert b.sum == pytest.approx(0.05 + 0.1 + 0.5 + 1.0 + 7.0 + 0.6)
    assert b.cumulative() == ([(0.1, 2), (1.0, 7), (float("inf"), 8)], b.sum)


def test_a_counter_must_end_in_total_and_nothing_else_may():
    with pytest.raises(ValueError):
        Metric("x_sent", "counter", "")
    with pytest.raises(ValueError):
        Metric("x_total", "gauge", "")
    with pytest.raises(ValueError):
        Metric("x", "summary", "")


def test_a_table_collector_exports_every_metric_of_its_table_with_the_samples_given():
    table = [Metric("t_things_total", "counter", "Things.", ("kind",)),
             Metric("t_level", "gauge", "Level."),
             Metric("t_wait_seconds", "histogram", "Waits."),
             Metric("t_unused", "gauge", "Never sampled.")]
    waits = Buckets((0.5, 1.0))
    waits.observe(0.25, 2)
    waits.observe(0.75)
    got = collect(TableCollector(table, lambda: [
        ("t_things_total", ("a",), 3), ("t_things_total", ("b",), 4), ("t_level", (), 2.5),
        ("t_wait_seconds", (), waits)]))
    assert got.value("t_things_total", kind="a") == 3 and got.value("t_things_total") == 7
    assert got.value("t_level") == 2.5
    assert got.values("t_wait_seconds_bucket", le="0.5") == [2]
    assert got.values("t_wait_seconds_bucket", le="+Inf") == [3]
    assert got.value("t_wait_seconds_count") == 3
    assert got.value("t_wait_seconds_sum") == pytest.approx(1.25)
    assert "t_unused" in got.families and got.values("t_unused") == []


def test_a_collector_reads_again_when_a_container_changed_while_it_was_read():
    calls = []

    def samples():
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("dictionary changed size during iteration")
        return [("t_level", (), 1)]

    got = collect(TableCollector([Metric("t_level", "gauge", "")], samples))
    assert got.value("t_level") == 1 and len(calls) == 3


def test_the_address_is_the_one_given_else_fabric_metrics_else_none(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert metrics_address(None) is None
    assert metrics_address("127.0.0.1:9100") == "127.0.0.1:9100"
    monkeypatch.setenv(ENV, " 127.0.0.1:0 ")
    assert metrics_address(None) == "127.0.0.1:0"
    assert metrics_address("") is None  # given empty: off, whatever the environment says
    monkeypatch.setenv(ENV, "")
    assert metrics_address(None) is None


def test_metrics_are_served_at_slash_metrics_on_a_free_port_and_the_address_is_logged(caplog):
    table = [Metric("t_level", "gauge", "Level.")]
    with caplog.at_level("INFO", logger="nameservice.metrics"):
        served = start_metrics("127.0.0.1:0", TableCollector(table, lambda: [("t_level", (), 5)]))
    try:
        host, port = served.address.rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) > 0
        assert f"metrics on http://{served.address}/metrics" in caplog.text
        got = scrape(served.url)
        assert got.value("t_level") == 5
        assert got.value("process_cpu_seconds_total") > 0  # the standard process collector
        with pytest.raises(urllib.error.HTTPError) as elsewhere:
            urllib.request.urlopen(f"http://{served.address}/", timeout=5)
        assert elsewhere.value.code == 404
    finally:
        served.close()


def test_two_processes_worth_of_metrics_in_one_process_do_not_share_a_registry():
    table = [Metric("t_level", "gauge", "Level.")]
    one = start_metrics("127.0.0.1:0", TableCollector(table, lambda: [("t_level", (), 1)]))
    two = start_metrics("127.0.0.1:0", TableCollector(table, lambda: [("t_level", (), 2)]))
    try:
        assert scrape(one.url).value("t_level") == 1
        assert scrape(two.url).value("t_level") == 2
    finally:
        one.close()
        two.close()


def test_a_bad_or_taken_address_is_one_config_error():
    with pytest.raises(ConfigError):
        start_metrics("no port here")
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        with pytest.raises(ConfigError, match="cannot serve metrics"):
            start_metrics(f"127.0.0.1:{taken.getsockname()[1]}")
    finally:
        taken.close()


# ---------------------------------------------------------------------------- docs


def documented_metrics() -> dict[str, tuple[str, str]]:
    """``{name: (type, labels)}`` from the tables of docs/operations.md, "Metrics"."""
    text = (ROOT / "docs" / "operations.md").read_text()
    section = text.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `((?:fabric|process)_[a-z0-9_]+)` \| (\w+) \| ([^|]*) \|",
                      section, re.M)
    return {name: (kind, labels.strip()) for name, kind, labels in rows}


def test_the_metrics_in_the_operations_doc_are_exactly_those_exported():
    documented = documented_metrics()
    exported = {m.name: m for m in EXPORTED}
    fabric_documented = {n for n in documented if n.startswith("fabric_")}
    assert sorted(fabric_documented - set(exported)) == [], "documented, not exported"
    assert sorted(set(exported) - fabric_documented) == [], "exported, not documented"
    for name, metric in exported.items():
        kind, labels = documented[name]
        assert kind == metric.kind, name
        assert re.findall(r"`(\w+)`", labels) == list(metric.labels), name


def test_every_metric_name_is_a_prometheus_name_with_its_prefix_and_unit():
    for metric in EXPORTED:
        assert re.fullmatch(r"fabric_(ns_|intermediary_|producer_|consumer_|security_)[a-z0-9_]+",
                            metric.name), metric.name
        if metric.kind == "histogram":
            assert metric.name.endswith(("_seconds", "_messages")), metric.name


def dashboard_metrics() -> set[str]:
    board = json.loads((ROOT / "docs" / "grafana-fabric.json").read_text())
    exprs = [target["expr"] for panel in board["panels"]
             for target in panel.get("targets", [])]
    assert exprs, "the dashboard has no queries"
    names = set()
    for expr in exprs:
        names |= set(re.findall(r"\b((?:fabric|process)_[a-z0-9_]+)\b", expr))
    return names


def alert_metrics() -> set[str]:
    text = (ROOT / "docs" / "operations.md").read_text()
    rules = re.search(r"### Alerts.*?```yaml\n(.*?)```", text, re.S)
    assert rules, "the alert rules are a YAML block under Alerts"
    exprs = re.findall(r"expr: (?:>\n)?((?:.|\n)*?)\n\s+(?:for|labels):", rules.group(1))
    assert len(exprs) >= 11, exprs
    return set(re.findall(r"\b((?:fabric|process)_[a-z0-9_]+)\b", "\n".join(exprs)))


@pytest.mark.parametrize("where", [dashboard_metrics, alert_metrics],
                         ids=["dashboard", "alert rules"])
def test_every_metric_the_dashboard_and_the_alerts_query_is_exported(where):
    exported = {m.name: m for m in EXPORTED}
    for name in where():
        if name.startswith("process_"):
            assert name in {"process_cpu_seconds_total", "process_resident_memory_bytes",
                            "process_open_fds"}, name
            continue
        base = name
        for suffix in HISTOGRAM_SUFFIXES:
            if name.endswith(suffix) and name[:-len(suffix)] in exported:
                base = name[:-len(suffix)]
                assert exported[base].kind == "histogram", name
        assert base in exported, f"{name} is queried, and nothing exports it"


def test_the_dashboard_covers_each_kind_of_process():
    names = dashboard_metrics()
    for prefix in ("fabric_ns_", "fabric_intermediary_", "fabric_producer_", "fabric_consumer_"):
        assert any(n.startswith(prefix) for n in names), prefix
