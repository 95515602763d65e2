"""Zeroconf discovery on loopback, with real advertising processes."""
from __future__ import annotations

import concurrent.futures
import subprocess
import sys
import textwrap
import time
import uuid

import pytest
from zeroconf import InterfaceChoice

from nameservice import discovery
from nameservice.discovery import Advertiser, discover, interfaces_from_env
from tests.waiting import wait_for

ADVERTISE = textwrap.dedent(
    """
    import sys
    from nameservice.discovery import Advertiser
    node, port, cluster, size = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    with Advertiser(node, "127.0.0.1", port, cluster, size=size):
        print("up", flush=True)
        sys.stdin.read()   # until the parent closes our stdin
    """
)


def unique(name: str) -> str:
    """A cluster name no other run on this machine uses."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def advertisers():
    procs = []

    def start(node: int, port: int, cluster: str, size: int = 0):
        proc = subprocess.Popen(
            [sys.executable, "-c", ADVERTISE, str(node), str(port), cluster, str(size)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        procs.append(proc)
        assert proc.stdout.readline().strip() == "up"
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


DISC_A, DISC_B, DISC_C, DISC_D, DISC_NOBODY = (unique(n) for n in ("a", "b", "c", "d", "none"))
SETTLE = 0.3
"""How long a search waits for more answers after the first of its cluster (discover's default)."""


def test_discovery_finds_a_three_node_cluster_on_loopback(advertisers):
    for node in (1, 2, 3):
        advertisers(node, 17100 + node, DISC_A, size=3)
    found = discover(cluster=DISC_A, timeout=5.0)
    assert [(e.node_id, e.address) for e in found] == [
        (1, "127.0.0.1:17101"), (2, "127.0.0.1:17102"), (3, "127.0.0.1:17103"),
    ]


def test_discovery_keeps_clusters_apart(advertisers):
    advertisers(1, 17201, DISC_B)
    advertisers(1, 17301, DISC_C)
    assert [e.address for e in discover(cluster=DISC_C, timeout=5.0)] == ["127.0.0.1:17301"]


def test_another_cluster_answering_first_does_not_end_the_search(advertisers, monkeypatch):
    other, late = unique("other"), unique("late")
    answers: list[tuple[float, str]] = []  # (when, service name) as the search got them

    class Recorded(discovery._Collector):
        def add_service(self, zc, type_, name: str) -> None:
            answers.append((time.monotonic(), name))
            super().add_service(zc, type_, name)

    def answered() -> float | None:
        return next((t for t, name in answers if other in name), None)

    monkeypatch.setattr(discovery, "_Collector", Recorded)
    advertisers(1, 17501, other)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        search = pool.submit(discover, cluster=late, timeout=10.0, settle=SETTLE)
        # The scenario: the wanted node answers well after the settle time that follows the
        # other cluster's answer, as on a loaded host. Counted from the moment the search got
        # that answer, and the search must still be running then.
        wait_for(lambda: answered() or search.done(), 10,
                 "the other cluster's answer to reach the search")
        wait_for(lambda: search.done() or time.monotonic() > answered() + 3 * SETTLE, 10,
                 "three settle times after the other cluster's answer")
        assert not search.done(), f"the search ended on another cluster's answers: {answers}"
        advertisers(1, 17601, late)
        assert [e.address for e in search.result(timeout=30)] == ["127.0.0.1:17601"]


def test_a_search_waits_for_every_member_the_cluster_advertises(advertisers, monkeypatch):
    slow = unique("slow")
    answers: list[str] = []

    class Recorded(discovery._Collector):
        def add_service(self, zc, type_, name: str) -> None:
            answers.append(name)
            super().add_service(zc, type_, name)

    monkeypatch.setattr(discovery, "_Collector", Recorded)
    advertisers(1, 17701, slow, size=3)
    advertisers(2, 17702, slow, size=3)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        search = pool.submit(discover, cluster=slow, timeout=20.0, settle=SETTLE)
        # The third member answers long after the settle time that follows the first two, as
        # on a loaded host; the size the first two advertise keeps the search waiting for it.
        wait_for(lambda: len(answers) >= 2 or search.done(), 10, "the first two answers")
        began = time.monotonic()
        wait_for(lambda: search.done() or time.monotonic() > began + 3 * SETTLE, 10,
                 "three settle times after the first two answers")
        assert not search.done(), f"the search ended without the third member: {answers}"
        advertisers(3, 17703, slow, size=3)
        assert [e.node_id for e in search.result(timeout=30)] == [1, 2, 3]


def test_a_closed_advertiser_is_no_longer_found():
    with Advertiser(7, "127.0.0.1", 17401, DISC_D):
        assert [e.node_id for e in discover(cluster=DISC_D, timeout=5.0)] == [7]
    assert discover(cluster=DISC_D, timeout=1.0) == []


def test_nothing_advertised_returns_empty_after_the_timeout():
    assert discover(cluster=DISC_NOBODY, timeout=0.5) == []


def test_interfaces_default_to_loopback_and_can_be_widened():
    assert interfaces_from_env("") == ["127.0.0.1"]
    assert interfaces_from_env("all") is InterfaceChoice.All
    assert interfaces_from_env("10.1.2.3, 127.0.0.1") == ["10.1.2.3", "127.0.0.1"]
