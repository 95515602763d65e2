"""Name-service benchmark: throughput and latency against a local 3-node cluster (fsync on),
and the failover time.

Load rows: puts/s, consistent gets/s and CAS/s with 1, 16 and 64 concurrent clients, and
puts/s with 1,000 requests in flight. A "client" is one coroutine issuing one request after
another; the coroutines are spread over ``--workers`` processes, each with one pipelined
``NameServiceClient`` (so a process sends many clients' requests in one frame). Latency is
measured per request, from the call to the answer.

CURVE (``--curve``): two more 3-node clusters side by side, one with CURVE on every socket
(``LocalCluster(secure=...)``: each node and the load generators have key directories that
trust each other) and one without; puts, then consistent gets, with 64 clients, each row on
one cluster then on the other (so that both see the same machine load; the order alternates),
``--curve-repeats`` times. The load processes of each are a pool of their own, configured once
(``configure``) with the generators' key directory or with none. ``"curve"`` in the report:
the medians of puts/s and gets/s with CURVE and ``ratio`` = puts/s with CURVE / without;
beyond these, the rates without, every row, the gets' ratio, the puts' p99 and the CPU time
the three nodes spent per operation (a cost that other load on the machine barely moves).

Failover: SIGKILL the leader, then time a put from the kill until it is acknowledged; restart
the killed node and wait until the cluster is whole again; ``--trials`` times.

etcd (``--vs-etcd``; ``apt-get install etcd-server`` and ``pip install -e .[bench]`` for
grpcio): the same invocation runs a 3-member etcd cluster on 127.0.0.1 with etcd's defaults
(heartbeat 100 ms, election 1000 ms, fsync on; ``benchmarks/etcd_side.py``) through the same
load generator: the put and get rows of ``--ops`` with the ``--clients`` counts (and 64), the
same ``--workers`` processes, duration and value size, one grpc.aio channel per process to the
leader (as fabric's client targets the leader), gets linearizable (Range, serializable false).
Failover as above, ``--trials`` times, the put sent to a surviving member: a new attempt every
5 ms (fabric's client retries as often), each with a 1 s deadline and earlier ones left
running, until one is acknowledged: the time is that of the first put the survivors accept,
not that of a deadline waited out. ``--no-load`` and ``--no-failover``
apply to both. ``"etcd"`` in the report: ``puts_s``, ``gets_s`` and their p99 at 64 clients,
``failover_p50_ms``, ``version``, every row and the failover summary; ``"ratios"``: fabric /
etcd for ``puts`` and ``gets`` (64 clients) and ``failover`` (p50; each side with its own
election timeout). Without etcd or grpcio: ``"etcd": {"skipped": REASON}`` and no ratios.

The report ends with the load average (1 minute) when it was written.

Usage:
    python benchmarks/ns_bench.py [--json] [--duration 3] [--election-timeout 150-300]
        [--trials 20] [--workers 2] [--no-load] [--no-failover] [--curve [--curve-repeats 3]]
        [--vs-etcd]
"""
from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import json
import multiprocessing
import os
import signal
import statistics
import sys
import tempfile
import time

from _clients import timed_clients
from _procs import proc_cpu_s

from nameservice.client import NameServiceClient
from nameservice.security.context import configure
from nameservice.server.local import LocalCluster

CURVE_CLIENTS = 64
COMPARED_CLIENTS = 64  # the row the etcd ratios compare


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]


async def _load(ns_arg: str, op: str, clients: int, worker: int, start_at: float,
                duration: float, value: bytes) -> tuple[int, list[float]]:
    async with NameServiceClient(ns_arg, timeout=30.0, max_in_flight=4096) as ns:
        keys = [b"bench/%d/%d" % (worker, i) for i in range(clients)]
        await asyncio.gather(*(ns.put(k, value) for k in keys))  # keys exist; session open
        if op == "put":
            requests = [functools.partial(ns.put, key, value) for key in keys]
        elif op == "get":
            requests = [functools.partial(ns.get, key) for key in keys]
        else:
            requests = [_CasChain(ns, key, value) for key in keys]
        latencies = await timed_clients(requests, start_at, duration)
        return len(latencies), latencies


class _CasChain:
    """One client's CAS requests: each sets its key from the value the last one set."""

    def __init__(self, ns: NameServiceClient, key: bytes, value: bytes) -> None:
        self.ns, self.key, self.current, self.n = ns, key, value, 0

    async def __call__(self) -> None:
        self.n += 1
        new = b"%d" % self.n
        result = await self.ns.cas(self.key, new, expect_value=self.current)
        if not result.succeeded:
            raise RuntimeError("a benchmark CAS failed: another writer?")
        self.current = new


def _worker(job: tuple) -> tuple[int, list[float]]:
    """Run one load process's share of a row: ``job`` is the load coroutine function and its
    arguments (``_load``, or etcd_side's ``load``)."""
    # A load generator holds thousands of pending calls: keep the cyclic garbage collector
    # from rescanning them on every few thousand allocations (the daemon does the same).
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    load, *args = job
    return asyncio.run(load(*args))


def _secure(keys: str | None) -> None:
    """A load process's security, once when it starts: these keys, or none (insecure)."""
    configure(keys)


def run_curve(tmp: str, args, value: bytes) -> dict:
    """Puts and gets with ``CURVE_CLIENTS`` clients on a cluster with CURVE and on one
    without, row by row, ``--curve-repeats`` times (see the module docstring)."""
    ctx = multiprocessing.get_context("spawn")
    rates: dict[tuple[str, str], list[float]] = {}
    p99s: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}  # the nodes' CPU µs per operation
    with LocalCluster(os.path.join(tmp, "plain"), extra_args=args.node_args.split()) as plain, \
            LocalCluster(os.path.join(tmp, "curve"), extra_args=args.node_args.split(),
                         secure=("bench",)) as curve, \
            ctx.Pool(args.workers, _secure, (None,)) as plain_pool, \
            ctx.Pool(args.workers, _secure, (str(curve.keys["bench"]),)) as curve_pool:
        plain.start()
        curve.start()
        runs = [("plain", plain_pool, plain), ("curve", curve_pool, curve)]
        for i in range(args.curve_repeats):
            for op in ("put", "get"):
                for name, pool, cluster in (runs if i % 2 == 0 else runs[::-1]):
                    pids = [proc.pid for proc in cluster.procs.values()]
                    before = sum(proc_cpu_s(pid) for pid in pids)
                    row = run_load(pool, cluster.ns_arg, op, CURVE_CLIENTS, args.workers,
                                   args.duration, value)
                    used = sum(proc_cpu_s(pid) for pid in pids) - before
                    rates.setdefault((op, name), []).append(row["ops_s"])
                    p99s.setdefault((op, name), []).append(row["p99_ms"])
                    cpu.setdefault((op, name), []).append(
                        used / max(1, row["ops_s"] * args.duration) * 1e6)
                    if not args.json:
                        print(name, row, file=sys.stderr)
        plain.stop()
        curve.stop()

    def median(values: dict[tuple[str, str], list[float]], op: str, name: str) -> float:
        return statistics.median(values[op, name])

    return {
        "puts_s": round(median(rates, "put", "curve")),
        "gets_s": round(median(rates, "get", "curve")),
        "ratio": round(median(rates, "put", "curve") / median(rates, "put", "plain"), 2),
        "gets_ratio": round(median(rates, "get", "curve") / median(rates, "get", "plain"), 2),
        "without": {"puts_s": round(median(rates, "put", "plain")),
                    "gets_s": round(median(rates, "get", "plain"))},
        "runs_puts_s": rates["put", "curve"], "runs_puts_without_s": rates["put", "plain"],
        "runs_gets_s": rates["get", "curve"], "runs_gets_without_s": rates["get", "plain"],
        "put_p99_ms": median(p99s, "put", "curve"),
        "put_p99_without_ms": median(p99s, "put", "plain"),
        "nodes_cpu_us_per_put": round(median(cpu, "put", "curve"), 1),
        "nodes_cpu_us_per_put_without": round(median(cpu, "put", "plain"), 1),
        "nodes_cpu_us_per_get": round(median(cpu, "get", "curve"), 1),
        "nodes_cpu_us_per_get_without": round(median(cpu, "get", "plain"), 1),
        "clients": CURVE_CLIENTS, "repeats": args.curve_repeats,
    }


def run_load(pool, ns_arg: str, op: str, clients: int, workers: int, duration: float,
             value: bytes, load=_load) -> dict:
    """One load row: ``clients`` coroutines over ``workers`` processes for ``duration`` s;
    ``load`` is the coroutine function each process runs (``ns_arg`` is its first argument)."""
    workers = min(workers, clients)
    share = [clients // workers + (1 if w < clients % workers else 0) for w in range(workers)]
    start_at = time.time() + 1.0
    jobs = [(load, ns_arg, op, share[w], w, start_at, duration, value) for w in range(workers)]
    results = pool.map(_worker, jobs)
    count = sum(r[0] for r in results)
    latencies = sorted(x for r in results for x in r[1])
    return {
        "op": op, "clients": clients, "ops_s": round(count / duration),
        "p50_ms": round(_percentile(latencies, 0.50) * 1e3, 2),
        "p99_ms": round(_percentile(latencies, 0.99) * 1e3, 2),
    }


async def _leader(ns: NameServiceClient, cluster: LocalCluster) -> int:
    while True:
        for node_id, address in cluster.addresses.items():
            if not cluster.running(node_id):
                continue
            try:
                status = await ns.status(address, timeout=0.5)
            except Exception:
                continue
            if status["role"] == "leader":
                return node_id
        await asyncio.sleep(0.02)


async def _whole(ns: NameServiceClient, cluster: LocalCluster) -> None:
    """Wait until every node runs, knows the same leader and has applied its commit index."""
    while True:
        statuses = []
        for address in cluster.addresses.values():
            try:
                statuses.append(await ns.status(address, timeout=0.5))
            except Exception:
                break
        if len(statuses) == len(cluster.addresses):
            leaders = {s["leader"] for s in statuses}
            top = max(s["commit_index"] for s in statuses)
            if len(leaders) == 1 and 0 not in leaders and all(
                    s["applied_index"] >= top for s in statuses):
                return
        await asyncio.sleep(0.05)


async def _terms(cluster: LocalCluster) -> int:
    """The highest term any node has reached (once a leader is elected)."""
    async with NameServiceClient(cluster.ns_arg) as ns:
        await ns.put(b"bench/term", b"")  # waits for a leader
        terms = []
        for address in cluster.addresses.values():
            terms.append((await ns.status(address))["term"])
        return max(terms)


async def run_failover(cluster: LocalCluster, trials: int) -> list[float]:
    """Failover times (ms): SIGKILL the leader → the next put acknowledged."""
    times = []
    async with NameServiceClient(cluster.ns_arg, timeout=10.0, attempt_timeout=0.5) as ns:
        for trial in range(trials):
            await _whole(ns, cluster)
            await asyncio.sleep(0.3)  # let the followers' election timers settle
            leader = await _leader(ns, cluster)
            await ns.put(b"failover/warm", b"%d" % trial)  # the client now targets the leader
            started = time.perf_counter()
            os.kill(cluster.procs[leader].pid, signal.SIGKILL)
            await ns.put(b"failover/probe", b"%d" % trial)
            times.append((time.perf_counter() - started) * 1e3)
            cluster.procs[leader].wait()
            cluster.start(leader)
    return times


def _failover_summary(times: list[float]) -> dict:
    """The p50, p90 and max of sorted failover times (ms), and their count."""
    return {
        "trials": len(times),
        "p50_ms": round(_percentile(times, 0.5), 1),
        "p90_ms": round(_percentile(times, 0.9), 1),
        "max_ms": round(times[-1], 1),
    }


def _row(rows: list[dict], op: str, clients: int) -> dict | None:
    """The first row of ``op`` with ``clients`` clients, if any."""
    return next((r for r in rows if r["op"] == op and r["clients"] == clients), None)


def run_etcd(tmp: str, args, value: bytes) -> dict:
    """The put and get rows and the failover trials on a 3-member etcd cluster (see the
    module docstring); ``{"skipped": REASON}`` without etcd or grpcio, or when the cluster
    does not start."""
    import etcd_side  # needs grpcio: imported only with --vs-etcd

    reason = etcd_side.available()
    if reason is not None:
        return {"skipped": reason}
    with etcd_side.EtcdCluster(os.path.join(tmp, "etcd")) as cluster:
        try:
            cluster.start()
            leader, first_term, version = asyncio.run(etcd_side.leader_and_term(cluster))
        except (OSError, RuntimeError) as exc:  # the fabric rows still get reported
            return {"skipped": f"etcd did not start: {str(exc)[-600:]}"}
        out: dict = {"version": version, "heartbeat_ms": etcd_side.HEARTBEAT_MS,
                     "election_timeout_ms": etcd_side.ELECTION_MS}
        if not args.no_load:
            rows = _etcd_rows(cluster, leader, args, value)
            for op, key in (("put", "puts"), ("get", "gets")):
                row = _row(rows, op, COMPARED_CLIENTS)
                if row is not None:
                    out.update({f"{key}_s": row["ops_s"], f"{op}_p99_ms": row["p99_ms"]})
            out["load"] = rows
            _, last_term, _ = asyncio.run(etcd_side.leader_and_term(cluster))
            out["leader_changes_under_load"] = last_term - first_term
        if not args.no_failover and args.trials:
            times = sorted(asyncio.run(etcd_side.run_failover(cluster, args.trials)))
            out["failover"] = _failover_summary(times)
            out["failover_p50_ms"] = out["failover"]["p50_ms"]
    return out


def _etcd_rows(cluster, leader: str, args, value: bytes) -> list[dict]:
    """etcd's load rows: the puts and gets of ``--ops`` with the ``--clients`` counts and
    ``COMPARED_CLIENTS``, through the leader; each with the CPU time the members spent per
    operation (which other load on the machine barely moves)."""
    import etcd_side

    counts = [int(c) for c in args.clients.split(",")]
    counts += [COMPARED_CLIENTS] if COMPARED_CLIENTS not in counts else []
    rows = []
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(args.workers) as pool:
        for op in (op for op in args.ops.split(",") if op in ("put", "get")):
            for clients in counts:
                pids = [proc.pid for proc in cluster.procs.values()]
                before = sum(proc_cpu_s(pid) for pid in pids)
                row = run_load(pool, cluster.endpoints[leader], op, clients, args.workers,
                               args.duration, value, load=etcd_side.load)
                used = sum(proc_cpu_s(pid) for pid in pids) - before
                row["members_cpu_us_per_op"] = round(
                    used / max(1, row["ops_s"] * args.duration) * 1e6, 1)
                rows.append(row)
                if not args.json:
                    print("etcd", rows[-1], file=sys.stderr)
    return rows


def ratios(report: dict) -> dict:
    """fabric / etcd: puts/s and gets/s at ``COMPARED_CLIENTS`` clients, failover p50; each
    where both sides measured it."""
    etcd, out = report["etcd"], {}
    for op, key in (("put", "puts"), ("get", "gets")):
        fabric_row = _row(report.get("load", []), op, COMPARED_CLIENTS)
        if fabric_row is not None and etcd.get(f"{key}_s"):
            out[key] = round(fabric_row["ops_s"] / etcd[f"{key}_s"], 2)
    if "failover" in report and etcd.get("failover_p50_ms"):
        out["failover"] = round(report["failover"]["p50_ms"] / etcd["failover_p50_ms"], 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the JSON report only")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per load row")
    parser.add_argument("--workers", type=int, default=2, help="load-generating processes")
    parser.add_argument("--clients", default="1,16,64", help="client counts per op")
    parser.add_argument("--in-flight", type=int, default=1000, help="the in-flight put row")
    parser.add_argument("--ops", default="put,get,cas")
    parser.add_argument("--value-size", type=int, default=64)
    parser.add_argument("--election-timeout", default="150-300", help="LO-HI ms (failover)")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--node-args", default="", help="extra daemon arguments")
    parser.add_argument("--no-load", action="store_true")
    parser.add_argument("--no-failover", action="store_true")
    parser.add_argument("--curve", action="store_true",
                        help="also puts and gets, 64 clients, with CURVE and without")
    parser.add_argument("--curve-repeats", type=int, default=3,
                        help="with --curve: rows of each (median reported)")
    parser.add_argument("--vs-etcd", action="store_true",
                        help="also the puts, gets and failover of a 3-member etcd cluster")
    args = parser.parse_args()
    value = b"v" * args.value_size
    report: dict = {}
    with tempfile.TemporaryDirectory(prefix="ns-bench-") as tmp:
        if not args.no_load:
            with LocalCluster(os.path.join(tmp, "load"),
                              extra_args=args.node_args.split()) as cluster:
                cluster.start()
                first_term = asyncio.run(_terms(cluster))
                rows = []
                ctx = multiprocessing.get_context("spawn")
                with ctx.Pool(args.workers) as pool:
                    for op in args.ops.split(","):
                        for clients in (int(c) for c in args.clients.split(",")):
                            rows.append(run_load(pool, cluster.ns_arg, op, clients,
                                                 args.workers, args.duration, value))
                            if not args.json:
                                print(rows[-1], file=sys.stderr)
                    if args.in_flight:
                        rows.append(run_load(pool, cluster.ns_arg, "put", args.in_flight,
                                             args.workers, args.duration, value))
                        if not args.json:
                            print(rows[-1], file=sys.stderr)
                report["load"] = rows
                report["leader_changes_under_load"] = asyncio.run(_terms(cluster)) - first_term
                cluster.stop()
        if args.curve:
            report["curve"] = run_curve(tmp, args, value)
        if not args.no_failover and args.trials:
            with LocalCluster(os.path.join(tmp, "failover"),
                              election_timeout=args.election_timeout,
                              extra_args=args.node_args.split()) as cluster:
                cluster.start()
                times = sorted(asyncio.run(run_failover(cluster, args.trials)))
                lo, hi = (int(x) for x in args.election_timeout.split("-"))
                report["failover"] = {"election_timeout_ms": [lo, hi],
                                      **_failover_summary(times)}
                cluster.stop()
        if args.vs_etcd:
            report["etcd"] = run_etcd(tmp, args, value)
            if "skipped" not in report["etcd"]:
                report["ratios"] = ratios(report)
    report["load_average"] = round(os.getloadavg()[0], 2)
    print(json.dumps(report) if args.json else json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
