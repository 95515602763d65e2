"""The task queue's throughput, dispatch latency and delayed-task lateness, beside Celery + Redis
where installed, in one run on one machine.

    python benchmarks/task_bench.py [--tasks N] [--workers W] [--concurrency C]
                                    [--vs-celery] [--json]

Every part is a real process: a one-node name service, three ``fabric queue run`` replicas
(fsync on: each entry on a quorum's disks before anything is answered), W ``fabric worker
run`` processes (default 2) of async no-op handlers with C slots each (default 512), and the client
in this process.

* throughput: N no-op tasks (default 20,000) submitted in batches of 500, four batches in
  flight; ``submit_s`` = N / the time until every submit was answered (recorded on a quorum);
  ``tasks_s`` = N / the time from the first submit until the queue recorded every completion
  (submitted, dispatched, run, completed and recorded).
* dispatch latency, at light load: 300 tasks one at a time; from the client's ``submit`` call
  to the handler's start (the handler returns ``time.time()``; one machine, one clock).
* delayed lateness: 300 tasks with delays of 0.3-2 s submitted together; from the time each
  was due to its handler's start.
* ``lost``: tasks not done at the end; ``completed_twice``: completions the queue recorded
  beyond one per task; ``zombie_results_refused``: the queue's count.
* ``--vs-celery`` (celery and redis-server installed: ``apt-get install redis-server``,
  ``pip install celery redis``; not a dependency): the same no-op workload through Celery +
  Redis in the same invocation (``benchmarks/celery_side.py``: acks_late, prefetch 1, Redis
  appendfsync everysec, W solo workers), giving ``celery_tasks_s`` and ``ratio``.

The load average before and after is in the output (the machine may be shared).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
BATCH = 500
IN_FLIGHT = 4


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Processes:
    """The queue's and workers' processes; all killed on exit."""

    def __init__(self, ns: str, tmp: str) -> None:
        self.ns, self.tmp = ns, tmp
        self.procs: list[subprocess.Popen] = []

    def start(self, *args: str) -> subprocess.Popen:
        env = dict(os.environ, PYTHONPATH=str(ROOT), FABRIC_LOG_LEVEL="warning")
        proc = subprocess.Popen([sys.executable, "-m", "fabric", *args, "--ns", self.ns,
                                 "--events"], cwd=HERE, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
        self.procs.append(proc)
        return proc

    def wait_event(self, proc: subprocess.Popen, kind: str) -> dict:
        while True:
            text = proc.stdout.readline() if proc.stdout else ""
            if not text:
                raise RuntimeError(f"a process exited early ({proc.wait()})")
            if text.startswith("{") and json.loads(text).get("event") == kind:
                return json.loads(text)

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


async def measure(names, args) -> dict:
    from fabric.tasks import TaskQueue, TaskSpec

    async with TaskQueue(names, "bench", timeout=60) as queue:
        await queue.submit("stamp", 0)  # a leader and workers ready
        await (await queue.submit("stamp", 0)).result(timeout=60)
        base = (await queue.stats())["counters"]["completed"]

        # Throughput.
        specs = [TaskSpec("noop", i) for i in range(args.tasks)]
        chunks = [specs[i:i + BATCH] for i in range(0, len(specs), BATCH)]
        gate = asyncio.Semaphore(IN_FLIGHT)

        async def submit(chunk):
            async with gate:
                return await queue.submit_many(chunk)
        start = time.perf_counter()
        handles = [h for got in await asyncio.gather(*map(submit, chunks)) for h in got]
        submitted = time.perf_counter()
        while True:
            stats = await queue.stats()
            if stats["counters"]["completed"] - base >= args.tasks:
                break
            await asyncio.sleep(0.05)
        finished = time.perf_counter()

        # Dispatch latency at light load.
        latencies = []
        for _ in range(300):
            asked = time.time()
            handle = await queue.submit("stamp", 0)
            started = await handle.result(timeout=30)
            latencies.append((started - asked) * 1000)
            await asyncio.sleep(0.005)

        # Delayed lateness.
        delays = [0.3 + 1.7 * i / 300 for i in range(300)]
        now = time.time()
        delayed = await queue.submit_many([TaskSpec("stamp", 0, run_at=now + d)
                                           for d in delays])
        lateness = []
        for handle, delay in zip(delayed, delays):
            started = await handle.result(timeout=30)
            lateness.append((started - (now + delay)) * 1000)

        states = []
        for first in range(0, len(handles), 200):  # every task asked after, 200 at a time
            states += await asyncio.gather(*(queue.get(h.id) for h in handles[first:first + 200]))
        stats = await queue.stats()
    lost = sum(1 for t in states if t is None or t["state"] != "done")
    completed = stats["counters"]["completed"] - base - 1 - len(latencies) - len(lateness)
    return {
        "tasks": args.tasks, "tasks_s": round(args.tasks / (finished - start), 1),
        "submit_s": round(args.tasks / (submitted - start), 1),
        "dispatch_latency_ms": {"p50": round(statistics.median(latencies), 2),
                                "p99": round(percentile(latencies, 0.99), 2)},
        "delay_lateness_ms": {"p50": round(statistics.median(lateness), 2),
                              "p99": round(percentile(lateness, 0.99), 2),
                              "max": round(max(lateness), 2)},
        "lost": lost, "completed_twice": max(0, completed - args.tasks),
        "zombie_results_refused": stats["counters"]["zombie_results_refused"],
    }


async def run_fabric(args) -> dict:
    from nameservice.client import NameServiceClient
    from nameservice.names import Names
    from nameservice.server.local import LocalCluster

    with tempfile.TemporaryDirectory() as tmp, LocalCluster(Path(tmp) / "ns", 1) as cluster:
        cluster.start()
        with Processes(cluster.ns_arg, tmp) as procs:
            replicas = [procs.start("queue", "run", "--name", "bench", "--data",
                                    f"{tmp}/q{i}") for i in range(3)]
            for proc in replicas:
                procs.wait_event(proc, "queue")
            workers = [procs.start("worker", "run", "bench_tasks", "--queue", "bench",
                                   "--concurrency", str(args.concurrency))
                       for _ in range(args.workers)]
            for proc in workers:
                procs.wait_event(proc, "worker")
            async with NameServiceClient(cluster.ns_arg.split(",")) as client:
                return await measure(Names(client), args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=512)
    parser.add_argument("--vs-celery", action="store_true")
    parser.add_argument("--celery-tasks", type=int, default=10_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    load_before = loadavg()
    out = asyncio.run(run_fabric(args))
    out.update(workers=args.workers, concurrency=args.concurrency, replicas=3, fsync=True)
    if args.vs_celery:
        sys.path.insert(0, str(HERE))
        import celery_side

        reason = celery_side.available()
        if reason is not None:
            out["celery"] = f"not run: {reason}"
        else:
            got = celery_side.run_celery(args.celery_tasks, workers=args.workers)
            out.update(got)
            out["ratio"] = round(out["tasks_s"] / got["celery_tasks_s"], 2)
    out.update(load_before=load_before, load_after=loadavg(), cpus=os.cpu_count())
    print(json.dumps(out, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
