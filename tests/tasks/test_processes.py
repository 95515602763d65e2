"""The queue with every part a real process: 3 queue replicas, 3 workers (two of type A, one
of type B only), a client in the test. 10,000 tasks, some delayed, one periodic; a worker
SIGKILLed mid-task, the queue's leader SIGKILLed, a worker SIGSTOPped past its lease and
SIGCONTed (its late results are refused). Every task completes exactly once, none is lost, B
tasks ran only on the B worker, the periodic task fired once per period."""
from __future__ import annotations

import random
import signal
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from fabric.butterfly.fleet import Fleet, Proc
from fabric.tasks import TaskQueue, TaskSpec
from nameservice.client import NameServiceClient
from nameservice.control import control_request
from nameservice.names import Names
from nameservice.server.local import LocalCluster
from tests.waiting import async_wait_for

ROOT = str(Path(__file__).resolve().parents[2])
LEASE_S = 3.0
N = 10_000
PERIOD_S = 1.0


class Queue:
    """The processes of one queue test."""

    def __init__(self, tmp: Path, ns: str, fleet: Fleet) -> None:
        self.tmp, self.ns, self.fleet = tmp, ns, fleet
        self.runs = tmp / "runs"
        self.runs.mkdir()
        self.replicas: dict[str, Proc] = {}
        self.workers: dict[str, Proc] = {}
        self.controls: dict[str, str] = {}

    def fabric(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "fabric", *args, "--ns", self.ns, "--events"]

    def replica(self, name: str) -> Proc:
        proc = self.fleet.start(name, self.fabric(
            "queue", "run", "--name", "jobs", "--data", str(self.tmp / name),
            "--lease", str(LEASE_S), "--replace-after", "60"))
        _, control = proc.wait_event("control", 30)
        proc.wait_event("queue", 30)
        self.replicas[name], self.controls[name] = proc, control["endpoint"]
        return proc

    def worker(self, name: str, types: str, concurrency: int = 8) -> Proc:
        proc = self.fleet.start(name, self.fabric(
            "worker", "run", "tests.tasks.jobs", "--queue", "jobs", "--types", types,
            "--concurrency", str(concurrency), "--name", name),
            env={"FABRIC_TEST_RUNS": str(self.runs)})
        _, control = proc.wait_event("control", 30)
        proc.wait_event("worker", 30)
        self.workers[name], self.controls[name] = proc, control["endpoint"]
        return proc

    async def status(self, name: str) -> dict | None:
        try:
            return await control_request(self.controls[name], "status", timeout=1)
        except Exception:  # down, stopped, busy: the caller waits
            return None

    async def leader(self) -> str:
        async def one() -> str | None:
            leaders = [n for n, p in self.replicas.items() if p.alive
                       and (s := await self.status(n)) is not None and s.get("role") == "leader"
                       and s.get("work", {}).get("leading")]
            return leaders[0] if len(leaders) == 1 else None
        return await async_wait_for(one, 30, "one leading replica")

    def executions(self) -> list[tuple[str, int, str, int]]:
        out = []
        for log in self.runs.glob("*.log"):
            for line in log.read_text().splitlines():
                task_id, epoch, kind, pid = line.split()
                out.append((task_id, int(epoch), kind, int(pid)))
        return out


@pytest.fixture
def queue(tmp_path):
    with LocalCluster(tmp_path / "ns", 1) as cluster, Fleet(ROOT, tmp_path) as fleet:
        cluster.start()
        yield Queue(tmp_path, cluster.ns_arg, fleet)


async def test_ten_thousand_tasks_through_kills_and_a_zombie(queue):
    for name in ("q1", "q2", "q3"):
        queue.replica(name)
    await queue.leader()
    w1, w2, w3 = queue.worker("w1", "A"), queue.worker("w2", "A"), queue.worker("w3", "B")
    b_pid = w3.pid
    rng = random.Random(7)
    async with NameServiceClient(queue.ns.split(",")) as client:
        async with TaskQueue(Names(client), "jobs", timeout=60) as tq:
            tick = await tq.submit("B", "tick", key="tick", every=PERIOD_S)
            specs = []
            for i in range(N):
                kind = "A" if i % 2 else "B"
                delay = rng.uniform(0.2, 3.0) if i % 20 == 0 else None
                payload = {"n": i, "sleep": 0.5} if kind == "A" and i % 97 == 1 else i
                specs.append(TaskSpec(kind, payload, key=f"task-{i}", delay=delay))
            handles = []
            for start in range(0, N, 500):
                handles += await tq.submit_many(specs[start:start + 500])
                if start == 2000:  # a worker dies mid-task, and comes back
                    await _until_running(queue, "w1")
                    w1.signal(signal.SIGKILL)
                    w1 = queue.worker("w1", "A")
                if start == 4000:  # the queue's leader dies, and comes back with its disk
                    leader = await queue.leader()
                    queue.replicas[leader].signal(signal.SIGKILL)
                    queue.replica(leader)
            # A zombie: w2 stopped past its lease while it runs slow tasks.
            slow = await tq.submit_many([TaskSpec("A", {"n": N + i, "sleep": 1.0},
                                                  key=f"slow-{i}") for i in range(16)])
            await _until_running(queue, "w2")
            w2.signal(signal.SIGSTOP)
            zombie_pid = w2.pid
            stopped_at = time.monotonic()
            await async_wait_for(lambda: time.monotonic() - stopped_at > LEASE_S * 2.5, 10,
                                 "the lease to lapse")
            w2.signal(signal.SIGCONT)
            all_handles = handles + slow
            ids = [h.id for h in all_handles]
            assert len(set(ids)) == N + 16

            async def all_done() -> bool:
                done = [t for kind in "AB" for t in
                        await tq.list(state="done", type=kind, limit=10_000) if not t["parent"]]
                return len(done) >= N + 16
            try:
                await async_wait_for(all_done, 180, "every task to be done")
            except AssertionError:
                print(await tq.stats(), [await queue.status(w) for w in queue.workers])
                raise
            tasks = {i: await tq.get(i) for i in ids}
            schedule = await tq.get(tick.id)
            children = [t for t in await tq.list(type="B", limit=10_000) if t["parent"]]
            stats = await tq.stats()
    # Exactly once: every task done, with one accepted attempt; nothing lost.
    assert all(t["state"] == "done" for t in tasks.values())
    for i, task_id in enumerate(ids[:N]):
        task = tasks[task_id]
        expected = ["b", i] if i % 2 == 0 else i * 2
        assert task["result"] == expected, task
    runs = queue.executions()
    by_task: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for task_id, epoch, kind, pid in runs:
        by_task[task_id].append((epoch, pid))
        if kind == "B":
            assert pid == b_pid, f"B task {task_id} ran on {pid}, not the B worker"
        else:
            assert pid != b_pid, f"A task {task_id} ran on the B worker"
    for task_id, task in tasks.items():
        epochs = [e for e, _ in by_task[task_id]]
        assert task["recorded"] in epochs  # the accepted result came from a real attempt
        assert len(epochs) == len(set(epochs))  # each attempt ran once
        if len(epochs) > 1:
            assert task["redelivered"] or task["errors"], task
    # The zombie's late results were refused.
    assert stats["counters"]["zombie_results_refused"] >= 1
    assert any(pid == zombie_pid and epoch != tasks[task_id]["recorded"]
               for task_id, epoch, _, pid in runs if task_id in tasks), \
        "no attempt of the stopped worker was taken over"
    # The periodic task fired once per period: one child per slot, none twice.
    slots = sorted(t["run_at"] for t in children)
    assert len(slots) == len(set(slots)) and len(slots) >= 3
    gaps = [round((b - a) / PERIOD_S) for a, b in zip(slots, slots[1:])]
    assert all(g >= 1 for g in gaps)
    assert sum(g - 1 for g in gaps) <= schedule["skipped"]
    assert Counter(t["state"] for t in children)["done"] >= len(children) - 2
    # The replicas agree (the periodic task goes on firing: compare at one applied index).
    async def agree() -> bool:
        found = {(s["applied_index"], s["state_digest"])
                 for n in queue.replicas if (s := await queue.status(n)) is not None}
        return len(found) == 1
    await async_wait_for(agree, 30, "the replicas to agree")


async def _until_running(queue: Queue, worker: str) -> None:
    async def running() -> bool:
        status = await queue.status(worker)
        return status is not None and status["running"] > 0
    await async_wait_for(running, 60, f"{worker} to run a task")
