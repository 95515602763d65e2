"""Agents and the manager as real processes on one machine: deploy, lose a host (killed,
frozen), lose the manager, scale, update, remove — and what the instances recorded shows
nothing acknowledged lost, no unflagged duplicate, and never two incarnations of one instance
acting at once."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest

from fabric.cluster.probe import RECORD, audit, probe_network
from tests.cluster.conftest import Cluster, wait

pytestmark = pytest.mark.timeout(240)


def network(consumers: int = 2, intermediaries: int = 2, version: str = "1",
            producers: int = 1) -> str:
    return probe_network("jobs", producers=producers, consumers=consumers,
                         intermediaries=intermediaries, version=version)


def received(cluster: Cluster) -> int:
    """Messages received so far by every consumer (counted from the record files' sizes)."""
    return sum(p.stat().st_size for p in cluster.tmp.rglob("*.rec")
               if "consumer" in p.name or "reader" in p.name) // RECORD.size


def more_received(cluster: Cluster, than: int, timeout: float = 30) -> int:
    return wait(lambda: (n := received(cluster)) > than and n, timeout,
                f"more than {than} messages received")


def finish(cluster: Cluster, name: str = "jobs",
           updates: dict[str, tuple[int, int]] | None = None) -> dict:
    """Remove the network (every instance drained), then audit what they recorded;
    ``updates``: the instances a rolling update replaced (see :func:`outside_updates`)."""
    cluster.cli("network", "rm", name, "--wait", "60", timeout=90)
    found = audit(cluster.tmp)
    assert found["lost_count"] == 0, found["lost"]
    assert found["duplicates"] == 0
    assert outside_updates(found["two_acting"], updates or {}) == []
    return found


def replaced(before: dict, after: dict) -> dict[str, tuple[int, int]]:
    """The instances an update replaced: id -> (the gen before, the gen after)."""
    return {ident: (before[ident][1], gen) for ident, (_host, gen) in after.items()
            if ident in before and gen != before[ident][1]}


def outside_updates(pairs: list[tuple[str, str]],
                    updates: dict[str, tuple[int, int]]) -> list[tuple[str, str]]:
    """The pairs of incarnations that acted at once, but for a rolling update's
    make-before-break window: a stateless instance's old gen runs on, by design, until its
    new gen runs (docs/cluster.md), so those two may overlap; no other pair may."""
    def instance_gen(path: str) -> tuple[str, int]:
        stem = Path(path).stem.rpartition("-r")[0]
        instance, _, gen = stem.rpartition("-g")
        return instance, int(gen)

    kept = []
    for older, newer in pairs:
        (instance, old_gen), (other, new_gen) = instance_gen(older), instance_gen(newer)
        if not (instance == other and updates.get(instance) == (old_gen, new_gen)):
            kept.append((older, newer))
    return kept


def test_deploy_places_spreads_runs_and_removes(cluster):
    cluster.agents_up("a", "b", "c")
    report = cluster.deploy(network(), wait=60)
    assert report["status"]["settled"], report
    placed = cluster.placements("jobs")
    assert set(placed) == {"producer-0", "consumer-0", "consumer-1", "jobs-i0", "jobs-i1"}
    assert placed["jobs-i0"][0] != placed["jobs-i1"][0], "intermediaries spread over hosts"
    assert all(gen == 1 for _host, gen in placed.values())
    more_received(cluster, 200)
    listed = json.loads(cluster.cli("network", "list", "--json").stdout)
    assert listed == [{"network": "jobs", "instances": 5, "running": 5, "settled": True}]
    table = cluster.cli("status").stdout
    agent_rows = [line for line in table.splitlines() if line.startswith("agent-")]
    assert len(agent_rows) == 3 and all(" agent " in row for row in agent_rows), table
    assert sum("the acting manager" in row for row in agent_rows) == 1, table
    found = finish(cluster)
    assert found["acked"] > 200
    assert cluster.cli("network", "status", "jobs", check=False).returncode == 4
    # Only the agents are left: every instance drained and exited.
    agents = {proc.pid for proc in cluster.agents.values()}
    assert set(cluster.instance_pids()) == agents


def _host_with(cluster: Cluster, *instances: str) -> str:
    placed = cluster.placements("jobs")
    hosts = {placed[i][0] for i in instances}
    assert len(hosts) == 1, placed
    return hosts.pop()


@pytest.mark.parametrize("how", ["killed", "frozen"])
def test_a_lost_hosts_instances_run_again_elsewhere_never_twice(cluster, how):
    """A host's agent killed (its processes lose their fence's far end) or frozen (it cannot
    kill them): its instances stop by their own fence before its lease ends, and run again
    elsewhere, each with the next gen; nothing acknowledged is lost."""
    cluster.agents_up("a", "b", "c")
    cluster.deploy(network(consumers=3), wait=60)
    placed = cluster.placements("jobs")
    victim = placed["producer-0"][0]  # an instance whose acts are recorded
    on_victim = sorted(i for i, (host, _gen) in placed.items() if host == victim)
    agent = cluster.agents[victim]
    count = more_received(cluster, 100)
    agent.signal(signal.SIGKILL if how == "killed" else signal.SIGSTOP)
    try:
        def moved() -> dict | None:
            now = cluster.placements("jobs")
            return now if all(now[i][0] != victim for i in on_victim) else None
        after = wait(moved, 30, f"{on_victim} placed away from {victim}")
        for ident in on_victim:
            assert after[ident][1] == placed[ident][1] + 1, (ident, placed, after)
        cluster.wait_settled("jobs")
        more_received(cluster, count + 100)
    finally:
        if how == "frozen":
            agent.signal(signal.SIGCONT)
    if how == "frozen":
        # Back: it learns its lease is gone, registers again, and starts nothing it lost.
        wait(lambda: _registered(cluster, victim), 30, f"{victim} registered again")
        status = cluster.wait_settled("jobs")
        for row in status["instances"]:
            if row["id"] in on_victim:
                assert row["host"] != victim and f"on {victim}" not in row["note"], row
    finish(cluster)
    logs = "".join(p.read_text(errors="replace")
                   for p in (cluster.tmp / victim / "logs").glob("*.log"))
    assert "fence: the agent's lease may have expired" in logs


def _registered(cluster: Cluster, host: str) -> bool:
    return cluster.get(f"cluster/agents/{host}") is not None


def _manager(cluster: Cluster) -> str | None:
    """The host of the acting manager, as ``cluster/manager`` says."""
    found = cluster.get("cluster/manager")
    return msgpack.unpackb(found)["host"] if found is not None else None


def test_the_acting_managers_death_costs_one_lease(cluster):
    cluster.agents_up("a", "b", "c")
    cluster.deploy(network(consumers=1), wait=60)
    first = wait(lambda: _manager(cluster), 30, "a manager")
    cluster.agents[first].signal(signal.SIGKILL)
    second = wait(lambda: (m := _manager(cluster)) and m != first and m, 30,
                      "another manager")
    assert second in {"a", "b", "c"} - {first}
    # The new manager acts: it places what the killed host ran, and applies a new file.
    cluster.deploy(network(consumers=3), wait=60)
    status = cluster.wait_settled("jobs")
    assert all(row["host"] != first for row in status["instances"])
    assert len(status["instances"]) == 1 + 3 + 2
    finish(cluster)


def test_scale_up_down_and_rolling_update_lose_nothing(cluster):
    cluster.agents_up("a", "b", "c")
    cluster.deploy(network(consumers=2), wait=60)
    more_received(cluster, 100)
    cluster.deploy(network(consumers=4), wait=60)
    assert sorted(i for i in cluster.placements("jobs") if i.startswith("consumer")) == \
        [f"consumer-{i}" for i in range(4)]
    count = more_received(cluster, received(cluster) + 100)
    before = cluster.placements("jobs")
    cluster.deploy(network(consumers=4, version="2"), wait=90)
    after = cluster.placements("jobs")
    for ident, (_host, gen) in after.items():
        expected = before[ident][1] + (1 if ident.startswith("consumer") else 0)
        assert gen == expected, (ident, before, after)
    more_received(cluster, count + 100)
    cluster.deploy(network(consumers=1, version="2"), wait=60)
    assert sorted(i for i in cluster.placements("jobs") if i.startswith("consumer")) == \
        ["consumer-0"]
    more_received(cluster, received(cluster) + 50)
    finish(cluster, updates=replaced(before, after))


def test_cli_mistakes_are_one_line(cluster, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[components.x]\nrun = "m:f"\ninstances = 1\nparms = {}\n')
    done = cluster.cli("deploy", str(bad), check=False)
    assert done.returncode == 2
    assert "unknown key 'parms'" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    done = cluster.cli("deploy", str(tmp_path / "missing.toml"), check=False)
    assert done.returncode == 2 and "cannot read" in done.stderr
    for args in (("network", "status", "nope"), ("network", "rm", "nope")):
        done = cluster.cli(*args, check=False)
        assert done.returncode == 4 and "no network 'nope'" in done.stderr
    done = subprocess.run([sys.executable, "-m", "fabric", "agent", "--labels", "zone", "--ns",
                           cluster.ns], capture_output=True, text=True, timeout=30,
                          cwd=str(cluster.tmp))
    assert done.returncode == 2 and "--labels" in done.stderr


def test_a_restarted_agent_waits_for_its_previous_lease(cluster):
    cluster.agents_up("a", "b")
    cluster.deploy(network(consumers=2, intermediaries=1), wait=60)
    more_received(cluster, 100)
    placed = cluster.placements("jobs")
    victim = placed["jobs-i0"][0]
    cluster.agents[victim].signal(signal.SIGKILL)
    proc = cluster.agent(victim)  # at once, under the same name
    assert "still registered" in proc.log_tail(20000)
    cluster.wait_settled("jobs")
    finish(cluster)


def test_start_barrier_and_peer_lapses(cluster):
    """A producer emits nothing until every member of its network registered (here: until the
    consumer, first unplaceable, is placed), says who is missing when the barrier times out,
    and is told when a peer's registration lapses (its host lost) and comes back."""
    cluster.fleet.env["FABRIC_START_BARRIER_S"] = "2"
    cluster.agent("a", "--labels", "role=front")
    pinned = 'version = "1"\nlabels = {{ {} }}'
    cluster.deploy(network(consumers=1, intermediaries=1).replace(
        'version = "1"', pinned.format('zone = "nowhere"')).replace(
        "intermediaries = 1", 'intermediaries = 1\nlabels = { role = "front" }').replace(
        'instances = 1\n\n[components.producer.params]',
        'instances = 1\nlabels = { role = "front" }\n\n[components.producer.params]'))
    out = cluster.tmp / "a" / "logs"

    def producer_log() -> str:
        return "".join(p.read_text(errors="replace") for p in out.glob("jobs.producer-0.*"))
    wait(lambda: "these have not registered: jobs.consumer-0" in producer_log(), 30,
             "the producer's start barrier to time out naming the consumer")
    assert audit(cluster.tmp)["sent"] == 0, "nothing emitted before the barrier"
    status = cluster.status("jobs")
    row = next(r for r in status["instances"] if r["id"] == "consumer-0")
    assert row["state"] == "unplaced" and "zone=nowhere" in row["note"]
    # The consumer pinned to host b: placed once b's agent runs; the barrier passes.
    cluster.agent("b")
    cluster.deploy(network(consumers=1, intermediaries=1).replace(
        'version = "1"', pinned.format('host = "b"')).replace(
        "intermediaries = 1", 'intermediaries = 1\nlabels = { role = "front" }').replace(
        'instances = 1\n\n[components.producer.params]',
        'instances = 1\nlabels = { role = "front" }\n\n[components.producer.params]'),
        wait=60)
    more_received(cluster, 50)
    # Host b lost: the producer hears the consumer's registration lapse, then come back.
    cluster.agents["b"].signal(signal.SIGKILL)
    wait(lambda: '"peer_lapsed", "time"' in producer_log()
             and '"peer": "jobs.consumer-0"}' in producer_log().split('"peer_lapsed"', 1)[-1],
             30, "the producer told of the lapse")
    cluster.agent("b")
    def came_back() -> bool:
        after_lapse = producer_log().rsplit('"peer_lapsed"', 1)[-1]
        return any('"peer": "jobs.consumer-0"}' in event
                   for event in after_lapse.split('"peer_registered"')[1:])
    wait(came_back, 90, "the producer told of the comeback")
    cluster.wait_settled("jobs")
    finish(cluster)


STATEFUL = """
name = "ledger"

[components.feeder]
run = "fabric.cluster.probe:producer"
instances = 1

[components.feeder.params]
stream = "1"
index = "{index}"
gen = "{gen}"
rate = "100"
channel = "counted"
out = "{data}/{instance}-g{gen}"

[components.ledger]
run = "tests.stateful.counting:Echo"
replicas = 3
input = "counted"
output = "echoed"
replace_after = 2

[components.reader]
run = "fabric.cluster.probe:consumer"
instances = 1
params = { channel = "echoed", out = "{data}/{instance}-g{gen}" }

[channels.counted]
intermediaries = 2

[channels.echoed]
intermediaries = 2
"""


def stop_feeding(cluster: Cluster) -> None:
    """Stop the ledger network's feeder (drained: what it sent is acknowledged), then wait until
    the reader has received every payload the feeder had acknowledged: the stateful component
    emits from its outbox after it acknowledged its input, so removing the whole network at
    once could stop the reader before the last emits reach it."""
    cluster.deploy(STATEFUL.replace("instances = 1\n\n[components.feeder.params]",
                                    "instances = 0\n\n[components.feeder.params]"), wait=60)
    wait(lambda: audit(cluster.tmp)["lost_count"] == 0, 30,
         "every acknowledged payload echoed to the reader")


def test_a_stateful_component_survives_a_lost_host(cluster):
    """A 3-replica stateful component deployed like any other, one replica per host; its
    host lost, the group goes on with two; the host back, its replica rejoins from its data
    directory. What the feeder had acknowledged is all echoed (exactly once in effect)."""
    cluster.agents_up("a", "b", "c")
    cluster.deploy(STATEFUL, wait=90)
    placed = cluster.placements("ledger")
    assert sorted(placed[f"ledger-r{i}"][0] for i in range(3)) == ["a", "b", "c"]
    more_received(cluster, 100)
    victim = placed["feeder-0"][0]
    cluster.agents[victim].signal(signal.SIGKILL)
    lost_replica = next(f"ledger-r{i}" for i in range(3) if placed[f"ledger-r{i}"][0] == victim)
    def lost_row() -> dict:
        return next(r for r in cluster.status("ledger")["instances"] if r["id"] == lost_replica)
    # Lost, and no host for it (spread: no third host) once a manager has looked (the one
    # that acted may have been on the lost host).
    wait(lambda: lost_row()["state"] == "lost" and "spread" in lost_row()["note"], 30,
         "the lost host's replica unplaced for spread")
    more_received(cluster, received(cluster) + 100)
    cluster.agent(victim)
    cluster.wait_settled("ledger", 60)
    assert cluster.placements("ledger")[lost_replica][0] == victim
    more_received(cluster, received(cluster) + 100)
    stop_feeding(cluster)
    finish(cluster, "ledger")


QUEUE = """
name = "work"

[queues.jobs-q]
replicas = 3
lease = 3
replace_after = 2

[workers.runner]
run = "tests.tasks.jobs"
queue = "jobs-q"
instances = 2
concurrency = 4
"""


def test_a_task_queue_and_its_workers_deployed(cluster, tmp_path):
    """A queue's replicas and its workers are deployed like any component; tasks submitted
    are done, also after a host (with a replica and a worker on it) is lost."""
    runs = tmp_path / "runs"
    runs.mkdir()
    cluster.fleet.env["FABRIC_TEST_RUNS"] = str(runs)
    cluster.agents_up("a", "b", "c")
    cluster.deploy(QUEUE, wait=90)
    placed = cluster.placements("work")
    assert sorted(placed[f"jobs-q-q{i}"][0] for i in range(3)) == ["a", "b", "c"]

    def submit(n: int) -> dict:
        done = cluster.cli("task", "submit", "A", str(n), "--queue", "jobs-q", "--wait",
                           "--json", timeout=90)
        return json.loads(done.stdout)
    assert submit(21)["result"] == 42
    victim = placed["runner-0"][0]
    cluster.agents[victim].signal(signal.SIGKILL)
    wait(lambda: cluster.placements("work")["runner-0"][0] != victim, 30,
         "the lost host's worker placed elsewhere")
    assert [submit(n)["result"] for n in (1, 2, 3)] == [2, 4, 6]
    cluster.cli("network", "rm", "work", "--wait", "60", timeout=90)
