"""A 3-replica counting component fed by 2 producers through 2 intermediaries, every part a
real process: whatever is killed or frozen, every replica ends with exactly the messages sent —
none lost, none applied twice — and the replicas agree."""
from __future__ import annotations

import signal

from tests.stateful.conftest import producer_ids
from tests.waiting import wait_for

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


def test_the_leader_replica_killed_mid_stream_loses_and_repeats_nothing(group):
    group.intermediary("inter-a")
    group.intermediary("inter-b")
    for name in ("r1", "r2", "r3"):
        group.replica(name)
    group.wait_voters(3)
    producers = [group.producer(f"producer-{i}", i, MESSAGES, RATE) for i in (1, 2)]
    leader = group.leader()
    wait_for(lambda: (s := group.status(leader)) and s["state"]["count"] >= MESSAGES // 2,
             60, "the stream to be under way")
    group.replicas[leader].signal(signal.SIGKILL)
    group.leader(but=leader)  # a new one is elected
    group.replica(leader)  # back, with its disk
    count, total = expected()
    statuses = group.wait_state(count, total, ["r1", "r2", "r3"], timeout=90)
    assert len({s["state_digest"] for s in statuses.values()}) == 1
    stop_producers(producers)
