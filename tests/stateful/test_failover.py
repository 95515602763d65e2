"""A 3-replica counting component fed by 2 producers through 2 intermediaries, every part a
real process: whatever is killed or frozen, every replica ends with exactly the messages sent —
none lost, none applied twice — and the replicas agree."""
from __future__ import annotations

import json
import signal
import subprocess

from tests.stateful.conftest import COUNTER, producer_ids
from tests.waiting import wait_for

ECHO = "tests.stateful.counting:Echo"
MESSAGES = 20_000  # per producer
RATE = 5_000  # per producer, messages per second: the kill lands mid-stream


def expected(messages: int = MESSAGES) -> tuple[int, int]:
    ids = [*producer_ids(1, messages), *producer_ids(2, messages)]
    return len(ids), sum(ids)


def stop_producers(producers) -> None:
    """Stop each producer: it drains, and exits 0 only once everything it sent is acked."""
    for proc in producers:
        proc.signal(signal.SIGTERM)
    for proc in producers:
        assert proc.wait(60) == 0, proc.log_tail()


def stream(group, *replica_args: str, producers=(1, 2), target: str = COUNTER):
    """Three voting replicas (started with ``replica_args``), the producers sending, and the
    stream under way: the producers and the leader."""
    for name in ("r1", "r2", "r3"):
        group.replica(name, *replica_args, target=target)
    group.wait_voters(3)
    started = [group.producer(f"producer-{i}", i, MESSAGES, RATE) for i in producers]
    leader = group.leader()
    wait_for(lambda: (s := group.status(leader)) and s["state"]["count"] >= MESSAGES // 2,
             60, "the stream to be under way")
    return started, leader


def test_the_leader_replica_killed_mid_stream_loses_and_repeats_nothing(group):
    group.intermediary("inter-a")
    group.intermediary("inter-b")
    producers, leader = stream(group)
    group.replicas[leader].signal(signal.SIGKILL)
    group.leader(but=leader)  # a new one is elected
    group.replica(leader)  # back, with its disk
    count, total = expected()
    statuses = group.wait_state(count, total, ["r1", "r2", "r3"], timeout=90)
    assert len({s["state_digest"] for s in statuses.values()}) == 1
    stop_producers(producers)


def test_a_frozen_leader_and_a_killed_intermediary_at_once_lose_and_repeat_nothing(group):
    inter_a = group.intermediary("inter-a")
    group.intermediary("inter-b")
    producers, leader = stream(group)
    term = group.status(leader)["term"]
    frozen = group.replicas[leader]
    frozen.signal(signal.SIGSTOP)
    inter_a.signal(signal.SIGKILL)
    try:
        group.leader(but=leader)  # elected past the election timeout, and consuming
    finally:
        frozen.signal(signal.SIGCONT)  # it wakes up deposed: it must apply, not lead
    count, total = expected()
    statuses = group.wait_state(count, total, ["r1", "r2", "r3"], timeout=90)
    assert len({s["state_digest"] for s in statuses.values()}) == 1
    assert all(s["term"] > term for s in statuses.values())  # the frozen one was deposed
    stop_producers(producers)


def test_every_replica_killed_and_restarted_rebuilds_the_same_state(group):
    group.intermediary("inter-a")
    group.intermediary("inter-b")
    # Small snapshots: the restart installs a snapshot, then replays the log after it.
    producers, leader = stream(group, "--snapshot-entries", "50")
    for proc in group.replicas.values():
        proc.signal(signal.SIGKILL)
    for proc in group.replicas.values():
        proc.wait(10)
    for name in ("r1", "r2", "r3"):
        group.replica(name, "--snapshot-entries", "50")
    count, total = expected()
    statuses = group.wait_state(count, total, ["r1", "r2", "r3"], timeout=90)
    assert len({s["state_digest"] for s in statuses.values()}) == 1
    assert all(s["counters"]["snapshots"] > 0 for s in statuses.values())
    stop_producers(producers)


def test_a_replica_on_an_empty_disk_takes_the_seat_of_a_lost_one(group):
    group.intermediary("inter-a")
    producers, leader = stream(group, "--snapshot-entries", "50", "--replace-after", "1",
                               producers=(1,))
    lost = next(name for name in ("r1", "r2", "r3") if name != leader)
    lost_id = group.status(lost)["id"]
    group.replicas.pop(lost).signal(signal.SIGKILL)
    # Another host, an empty disk: a new member, brought up to date by a snapshot stream.
    group.replica("r4", "--snapshot-entries", "50", "--replace-after", "1")
    new_id = group.status("r4")["id"]
    assert new_id != lost_id
    count = MESSAGES
    total = sum(range(1 << 40, (1 << 40) + MESSAGES))
    names = sorted(group.replicas)
    statuses = group.wait_state(count, total, names, timeout=90)
    wait_for(lambda: all(set(s["voters"]) == {st["id"] for st in statuses.values()}
                         and not s["learners"]
                         for s in map(group.status, names) if s), 30,
             "the lost replica's seat to pass to the new one")
    assert len({s["state_digest"] for s in statuses.values()}) == 1
    assert statuses["r4"]["counters"]["snapshots_installed"] >= 1
    stop_producers(producers)


def test_what_the_leader_emitted_reaches_the_downstream_consumer_once_across_a_failover(group):
    group.intermediary("inter-a")
    group.intermediary("inter-b")
    downstream = f"{group.channel}-out"
    group.intermediary("out-a", downstream)
    group.intermediary("out-b", downstream)
    consumer = group.consumer("downstream", downstream)
    producers, leader = stream(group, "--output", downstream, target=ECHO)
    group.replicas[leader].signal(signal.SIGKILL)
    group.leader(but=leader)
    count, total = expected()
    statuses = group.wait_state(count, total, [n for n in ("r1", "r2", "r3") if n != leader])
    progress = wait_for(lambda: (p := consumer.latest("progress")) and p["unique"] >= count
                        and p, 60, "every emitted message downstream")
    wait_for(lambda: all(s["outbox"] == 0 for s in map(group.status, statuses) if s), 30,
             "the outbox to be acknowledged")
    consumer.signal(signal.SIGTERM)
    assert consumer.wait(30) == 0
    final = consumer.latest("received")
    assert final["unique"] == count and final["duplicates"] == 0, final
    assert progress["unique"] == count
    stop_producers(producers)


def test_a_leader_stopped_with_sigterm_hands_over_and_the_group_drains_by_name(group):
    group.intermediary("inter-a")
    producers, leader = stream(group, producers=(1,))
    group.replicas[leader].signal(signal.SIGTERM)
    assert group.replicas[leader].wait(30) == 0, group.replicas[leader].log_tail()
    # Everything it received was applied and acknowledged (the intermediaries stopped routing
    # to it first), and it handed leadership over instead of leaving the group to time out.
    assert group.replicas[leader].latest("stopped")["left"] == 0
    assert "stopping: handing leadership to replica" in \
        group.replicas[leader].log_path.read_text()
    rest = [n for n in ("r1", "r2", "r3") if n != leader]
    statuses = group.wait_state(MESSAGES, sum(range(1 << 40, (1 << 40) + MESSAGES)), rest)
    assert len({s["state_digest"] for s in statuses.values()}) == 1
    stop_producers(producers)

    def shown() -> list[dict] | None:  # a process busy past the 1 s status timeout: ask again
        done = subprocess.run(group.fabric("status", "--json", "--ns", group.ns),
                              capture_output=True, text=True, timeout=60)
        rows = [r for r in json.loads(done.stdout)["processes"] if r["name"] == "counter"]
        return None if any("error" in r["status"] for r in rows) else rows
    rows = wait_for(shown, 30, "every replica process to answer fabric status")
    assert len(rows) == 2 and {r["kind"] for r in rows} == {"stateful"}
    assert sorted(r["status"]["replicas"][0]["role"] for r in rows) == ["follower", "leader"]
    drained = subprocess.run(group.fabric("drain", "counter", "--ns", group.ns),
                             capture_output=True, text=True, timeout=60)
    assert drained.returncode == 0, drained.stderr
    for name in rest:
        assert group.replicas[name].wait(30) == 0
