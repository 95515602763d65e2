"""Re-resolve benchmark: an intermediary moves; how long until every running port uses it?

A local 3-node name service, one intermediary that stays, one producer
(``fabric.butterfly.producer``, ``--rate`` msgs/s) and one consumer
(``fabric.butterfly.consumer``), all real processes started through the ``fabric`` command.
Each trial starts an intermediary on a fresh port (the moved object), waits until both ports
report their connection to it up (``connected`` lines), then SIGKILLs it
before the next trial. Re-resolve time = last port's connection up − the moment the new
intermediary began registering (lease grant and put included), both ``time.time()`` on this
host. ``removal_ms``: from the SIGKILL until both ports let go of the dead intermediary (its
lease expiring, TTL 2 s, is most of it). At the end the producer and consumer are drained and
``lost``/``duplicates`` are counted from the consumer's records.

Usage:
    python benchmarks/reresolve_bench.py [--json] [--trials 20] [--rate 2000]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from fabric.butterfly.fleet import Fleet
from fabric.butterfly.report import read_deliveries, summarize
from fabric.butterfly.scenario import CONSUMER, PRODUCER
from nameservice.server.local import LocalCluster

ROOT = Path(__file__).resolve().parents[1]
CHANNEL = "bench-reresolve"


def wait(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.005)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--rate", type=float, default=2000)
    args = parser.parse_args()
    fabric = [sys.executable, "-m", "fabric"]
    work = Path(tempfile.mkdtemp(prefix="reresolve-bench-"))
    env = {k: v for k, v in os.environ.items() if k != "FABRIC_NS"}
    with LocalCluster(work / "ns", 3) as cluster, Fleet(str(ROOT), work, env) as fleet:
        cluster.start()
        ns = cluster.ns_arg

        def intermediary(name: str) -> tuple[str, float]:
            proc = fleet.start(name, fabric + ["intermediary", "--channel", CHANNEL, "--name",
                                               name, "--ns", ns, "--events"])
            _, info = proc.wait_event("registered", 30)
            return info["endpoint"], info["began"]

        def component(name: str, target: str, **params) -> None:
            argv = fabric + ["component", "run", target, "--name", name, "--events",
                             "--ns", ns, "--param", f"channel={CHANNEL}"]
            for key, value in params.items():
                argv += ["--param", f"{key}={value}"]
            fleet.start(name, argv)

        intermediary("steady")
        component("consumer", CONSUMER, out=work / "consumer.bin")
        fleet.procs["consumer"].wait_event("ready", 30)
        component("producer", PRODUCER, index=1, rate=args.rate)
        ports = [fleet.procs["producer"], fleet.procs["consumer"]]

        def connected_at(endpoint: str) -> list[float] | None:
            times = []
            for proc in ports:
                ats = [ev["at"] for _, ev in proc.events("connected")
                       if endpoint in ev["endpoints"]]
                if not ats:
                    return None
                times.append(ats[-1])
            return times

        def removed(endpoint: str) -> bool:
            return all(any(endpoint in ev["removed"] for _, ev in proc.events("endpoints"))
                       for proc in ports)

        reresolve, removal = [], []
        for k in range(args.trials):
            endpoint, began = intermediary(f"moving-{k}")
            times = wait(lambda e=endpoint: connected_at(e), 30, f"ports to use {endpoint}")
            reresolve.append((max(times) - began) * 1000)
            killed = time.monotonic()
            fleet.procs[f"moving-{k}"].kill()
            wait(lambda e=endpoint: removed(e), 30, f"ports to let go of {endpoint}")
            removal.append((time.monotonic() - killed) * 1000)
            print(f"trial {k}: re-resolve {reresolve[-1]:.1f} ms, removal {removal[-1]:.0f} ms",
                  file=sys.stderr)

        for name in ("producer", "consumer"):
            fleet.procs[name].signal(signal.SIGTERM)
            if fleet.procs[name].wait(30) != 0:
                raise SystemExit(f"{name} did not drain cleanly")
        sent = fleet.procs["producer"].latest("sent")["count"]
        received = fleet.procs["consumer"].latest("received")
        vias = {int(k): v for k, v in received["vias"].items()}
        deliveries = read_deliveries((work / "consumer.bin").read_bytes(), vias)
        tally = summarize({1: sent}, deliveries, kill_at=None, reresolve_ms=None, drain_ms=None)

    result = {
        "trials": args.trials,
        "reresolve_ms": {"p50": round(statistics.median(reresolve), 1),
                         "p90": round(percentile(reresolve, 0.9), 1),
                         "max": round(max(reresolve), 1)},
        "removal_ms": {"p50": round(statistics.median(removal)),
                       "max": round(max(removal))},
        "sent": tally["sent"], "lost": tally["lost"], "duplicates": tally["duplicates"],
        "load_average": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
