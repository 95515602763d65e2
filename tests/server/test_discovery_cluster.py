"""Zeroconf discovery of a real 3-node cluster on loopback; clients with no addresses."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from nameservice.client import NameServiceClient, cluster_addresses
from nameservice.errors import Unavailable
from tests.waiting import async_wait_for

pytestmark = pytest.mark.slow
FABRIC = str(Path(sys.executable).with_name("fabric"))


@pytest.fixture
def discovered_cluster(make_cluster, monkeypatch):
    """A cluster advertised under a name of its own; FABRIC_NS unset, FABRIC_NS_CLUSTER set."""
    name = f"test-{uuid.uuid4().hex[:8]}"
    cluster = make_cluster(cluster_name=name)
    monkeypatch.delenv("FABRIC_NS", raising=False)
    monkeypatch.setenv("FABRIC_NS_CLUSTER", name)
    return cluster


async def _found_all(cluster) -> bool:
    try:
        found = await asyncio.to_thread(cluster_addresses, None)
    except Unavailable:
        return False
    return sorted(found) == sorted(cluster.addresses.values())


async def test_discovery_finds_a_three_node_cluster_and_a_client_connects_through_it(
        discovered_cluster):
    cluster = discovered_cluster
    # Each daemon advertises in the background once it listens (zeroconf probes first).
    await async_wait_for(lambda: _found_all(cluster), 20.0, "all three nodes to be discovered",
                         interval=0.2)
    async with NameServiceClient(None) as ns:
        # Browsing stops once answers pause; any node found will do (redirects lead on).
        assert set(ns.channel.addresses) <= set(cluster.addresses.values())
        await ns.put("found/it", "yes")
        assert (await ns.get("found/it")).value == b"yes"
    env = {k: v for k, v in os.environ.items() if k != "FABRIC_NS"}
    got = await asyncio.to_thread(subprocess.run, [FABRIC, "kv", "get", "found/it"],
                                  capture_output=True, env=env, timeout=30)
    assert got.returncode == 0 and got.stdout == b"yes\n", got.stderr


def test_explicit_addresses_come_before_the_environment_and_browsing(monkeypatch):
    monkeypatch.setenv("FABRIC_NS", "127.0.0.1:7001,127.0.0.1:7002")
    assert cluster_addresses("10.0.0.1:1") == ["10.0.0.1:1"]
    assert cluster_addresses(None) == ["127.0.0.1:7001", "127.0.0.1:7002"]


def test_browsing_for_a_cluster_nobody_advertises_is_unavailable(monkeypatch):
    monkeypatch.delenv("FABRIC_NS", raising=False)
    with pytest.raises(Unavailable, match="nobody-"):
        cluster_addresses(None, cluster=f"nobody-{uuid.uuid4().hex[:8]}", timeout=0.5)
