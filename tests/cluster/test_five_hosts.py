"""Five hosts (network namespaces on one switch, ``tests/netns.py``), an agent on each, the
name service on three: deploy 2 producers, 3 intermediaries and 4 consumers; cut one host
off silently while messages flow; heal it; kill the acting manager; update the consumers
one by one; scale them 4 -> 8 -> 2. What the instances recorded must show nothing
acknowledged lost, no duplicate without the redelivered flag, and never two incarnations of
one instance acting at once. Skipped where namespaces cannot be made."""
from __future__ import annotations

import signal

import pytest

from fabric.cluster.probe import audit, probe_network
from nameservice.server.local import LocalCluster
from tests.cluster.conftest import Cluster, running, wait
from tests.cluster.test_agents import (
    STATEFUL,
    _manager,
    _registered,
    more_received,
    outside_updates,
    received,
    replaced,
    stop_feeding,
)
from tests.netns import hosts_fixture  # noqa: F401  (the fixture)

pytestmark = pytest.mark.timeout(400)
HOSTS = [f"h{i}" for i in range(5)]
TTL = 4.0
"""The agents' lease: some 25 processes share two cores here, and an agent that cannot renew
within the TTL stops its instances (a 2 s lease makes that happen under this load)."""


def network(consumers: int, version: str = "1") -> str:
    return probe_network("five", producers=2, consumers=consumers, intermediaries=3,
                         rate=200, version=version)


@pytest.fixture
def five(hosts, tmp_path):
    """The name service on hosts 0-2 and an agent on every host."""
    ns = LocalCluster(tmp_path / "ns", 3, node_hosts=hosts.addresses[:3],
                      wrap=lambda node, argv: hosts.command(node - 1, argv))
    with running(tmp_path, ns) as made:
        started = [made.agent(host, "--address", hosts.addresses[i],
                              command=hosts.command(i, []), ttl=TTL, wait=False)
                   for i, host in enumerate(HOSTS)]
        for proc in started:
            proc.wait_event("agent", 30)
        yield made


def _on(cluster: Cluster, host: str) -> list[str]:
    return sorted(i for i, (h, _g) in cluster.placements("five").items() if h == host)


def test_five_hosts_cut_heal_manager_update_scale(five, hosts):
    cluster = five
    cluster.deploy(network(consumers=4), wait=90)
    cluster.deploy(STATEFUL, wait=90)  # a 3-replica stateful component and its feeder
    placed = cluster.placements("five")
    assert len({placed[f"jobs-i{i}"][0] for i in range(3)}) == 3, placed
    replicas = {cluster.placements("ledger")[f"ledger-r{i}"][0]: f"ledger-r{i}"
                for i in range(3)}
    assert len(replicas) == 3
    more_received(cluster, 300)

    # Cut a host running an intermediary, a replica if one does too, and preferably no
    # name-service node.
    candidates = [h for h in reversed(HOSTS) if any(i.startswith("jobs-i")
                                                    for i in _on(cluster, h))]
    victim = next((h for h in candidates if h in replicas), candidates[0])
    index = HOSTS.index(victim)
    lost_ones = _on(cluster, victim)
    count = received(cluster)
    hosts.cut(index)
    try:
        after = wait(lambda: (now := cluster.placements("five")) and all(
            now[i][0] != victim for i in lost_ones) and now, 60,
            f"{lost_ones} placed away from the cut host {victim}")
        for ident in lost_ones:
            assert after[ident][1] == placed[ident][1] + 1
        cluster.wait_settled("five", 60)
        cluster.wait_settled("ledger", 60)  # a lost replica's seat taken by a new one
        if victim in replicas:
            assert cluster.placements("ledger")[replicas[victim]][0] != victim
        more_received(cluster, count + 300)
    finally:
        hosts.heal(index)
    # Healed: the host's agent learns its lease is gone, registers again, starts nothing stale.
    wait(lambda: _registered(cluster, victim), 60, f"{victim} registered again")
    status = cluster.wait_settled("five", 60)
    assert all(row["host"] != victim for row in status["instances"] if row["id"] in lost_ones)
    # Fenced: by the instance's own guard, or by the agent (alive but cut off, it reaches the
    # same deadline and kills them itself; whichever is first does it).
    logs = "".join(p.read_text(errors="replace")
                   for p in (cluster.tmp / victim / "logs").glob("*.log"))
    agent_log = cluster.agents[victim].log_path.read_text(errors="replace")
    assert ("fence: the agent's lease may have expired" in logs
            or "no renewal of its lease" in agent_log), (logs[-2000:], agent_log[-2000:])

    # Kill the acting manager (its agent, and so the instances there): another takes over.
    first = wait(lambda: _manager(cluster), 30, "a manager")
    cluster.agents[first].signal(signal.SIGKILL)
    wait(lambda: (m := _manager(cluster)) and m != first, 30, "another manager")
    cluster.wait_settled("five", 60)
    assert all(h != first for h, _g in cluster.placements("five").values())

    # A rolling update of the consumers, then scale 4 -> 8 -> 2.
    count = more_received(cluster, received(cluster) + 100)
    before = cluster.placements("five")
    cluster.deploy(network(consumers=4, version="2"), wait=120)
    after = cluster.placements("five")
    for i in range(4):
        assert after[f"consumer-{i}"][1] == before[f"consumer-{i}"][1] + 1
    count = more_received(cluster, count + 100)
    cluster.deploy(network(consumers=8, version="2"), wait=90)
    assert sum(i.startswith("consumer-") for i in cluster.placements("five")) == 8
    count = more_received(cluster, count + 100)
    cluster.deploy(network(consumers=2, version="2"), wait=90)
    assert sorted(i for i in cluster.placements("five") if i.startswith("consumer-")) == \
        ["consumer-0", "consumer-1"]
    more_received(cluster, count + 100)

    cluster.cli("network", "rm", "five", "--wait", "60", timeout=90)
    stop_feeding(cluster)
    cluster.cli("network", "rm", "ledger", "--wait", "60", timeout=90)
    found = audit(cluster.tmp)
    assert found["lost_count"] == 0, found["lost"]
    assert found["duplicates"] == 0
    # Never two incarnations at once, through the cut, the heal and the manager's death; the
    # rolling update's make-before-break windows excepted (by design, docs/cluster.md).
    assert outside_updates(found["two_acting"], replaced(before, after)) == []
    assert found["acked"] > 1000
