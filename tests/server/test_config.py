"""Parsing what users type (addresses, cluster lists, timeouts) and the tick conversion."""
from __future__ import annotations

import pytest

from nameservice.address import parse_addresses, parse_cluster
from nameservice.errors import ConfigError
from nameservice.server.config import NodeSettings, parse_timeout_range


def test_cluster_list_parses():
    assert parse_cluster("1=127.0.0.1:7401, 2=localhost:7402") == {
        1: "127.0.0.1:7401", 2: "localhost:7402"}


@pytest.mark.parametrize("text", ["", "1=127.0.0.1", "x=h:1", "0=h:1", "1=h:1,1=h:2",
                                  "1=h:1,2=h:1", "1=h:99999", "1=bad host:1"])
def test_bad_cluster_lists_are_config_errors(text):
    with pytest.raises(ConfigError):
        parse_cluster(text)


@pytest.mark.parametrize("text", ["", "host", "host:", ":80", "h:0", "h:x"])
def test_bad_addresses_are_config_errors(text):
    with pytest.raises(ConfigError):
        parse_addresses(text)


def test_timeout_range():
    assert parse_timeout_range("50-100") == (50, 100)
    for bad in ("100", "100-50", "0-10", "a-b"):
        with pytest.raises(ConfigError):
            parse_timeout_range(bad)


def test_node_must_be_in_its_cluster():
    with pytest.raises(ConfigError, match="not in the cluster"):
        NodeSettings(3, {1: "h:1", 2: "h:2"}, "/tmp/x")


@pytest.mark.parametrize("timeout, lo, hi", [((150, 300), 15, 30), ((50, 100), 10, 20)])
def test_election_timeouts_become_ticks(timeout, lo, hi):
    config = NodeSettings(1, {1: "h:1", 2: "h:2", 3: "h:3"}, "/d", timeout).raft_config()
    assert (config.election_timeout_min, config.election_timeout_max) == (lo, hi)
    assert 0 < config.heartbeat_interval < config.election_timeout_min


def test_a_node_started_with_neither_cluster_nor_join_or_with_both_is_a_usage_error():
    from nameservice.errors import ConfigError
    from nameservice.server.cli import settings_from

    base = dict(node_id=4, data_dir="/nonexistent", election_timeout="150-300",
                snapshot_threshold=10, snapshot_bytes=1 << 20, sync_mode="auto", history_events=0,
                history_bytes=1 << 20, min_lease_ttl=1.0,
                cluster_name="default", no_advertise=True, name="", control="")
    for cluster, join, listen, message in (
            (None, None, None, "give --cluster"),
            ("1=127.0.0.1:1", "127.0.0.1:1", "127.0.0.1:2", "no --cluster"),
            (None, "127.0.0.1:1", None, "--listen"),
            ("4=127.0.0.1:1", None, "127.0.0.1:2", "--listen goes with --join")):
        with pytest.raises(ConfigError, match=message):
            settings_from(cluster=cluster, join=join, listen=listen, **base)
