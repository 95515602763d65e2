"""How long draining an intermediary under load takes, and what it costs the stream.

    python benchmarks/drain_bench.py [--messages N] [--rate R] [--trials T] [--json]

Each trial: 1 producer (OutputPort, R msgs/s, default 100,000) -> 2 ``fabric intermediary``
processes -> 1 consumer (InputPort, no-op handler), N messages (default 200,000). When 30% have
arrived, one intermediary gets SIGTERM. Measured: ``drain_ms`` (SIGTERM -> the process exited
0), the intermediary's own report (``report_ms``), the longest pause between two deliveries
after the SIGTERM (``gap_ms``), and over all trials the messages lost, duplicated, flagged
redelivered, and the batches the producer resent (all should be 0). Medians and maxima of T
trials (default 5).

Each process role is this same file run with ``--role``; every child is killed on exit.
"""
from __future__ import annotations

import argparse
import array
import asyncio
import dataclasses
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _procs import Procs, line

ROOT = Path(__file__).resolve().parents[1]
FABRIC = str(Path(sys.executable).with_name("fabric"))


def emit(obj: dict) -> None:
    print(json.dumps(obj), flush=True)


async def _producer(args) -> None:
    from fabric.ports.output import OutputPort
    async with OutputPort("drainbench", args.endpoints.split(",")) as port:
        await asyncio.sleep(0.3)
        start = time.monotonic()
        for i in range(args.count):
            if i % 100 == 0:
                delay = start + i / args.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            await port.send(i)
        await port.flush()
        emit({"stats": dataclasses.asdict(port.stats)})


async def _consumer(args) -> None:
    from fabric.ports.input import InputPort
    seen = bytearray(args.count)
    times = array.array("d")
    state = {"n": 0, "dup": 0, "red": 0}
    done = asyncio.Event()

    def handler(msg) -> None:
        i = msg.payload
        if seen[i]:
            state["dup"] += 1
        else:
            seen[i] = 1
            state["n"] += 1
        state["red"] += msg.redelivered
        times.append(time.monotonic())
        if state["n"] == int(args.count * 0.3):
            emit({"progress": state["n"]})
        if state["n"] == args.count:
            done.set()

    async with InputPort("drainbench", args.endpoints.split(","), handler):
        emit({"ready": True})
        try:
            await asyncio.wait_for(done.wait(), 120)
        except asyncio.TimeoutError:
            pass
        mark = float(Path(args.mark).read_text())
        after = [t for t in times if t >= mark]
        gaps = [b - a for a, b in zip([mark, *after], after)]
        emit({"delivered": state["n"], "lost": args.count - state["n"],
              "duplicates": state["dup"], "redelivered": state["red"],
              "gap_ms": max(gaps, default=0) * 1000})


def trial(count: int, rate: int, mark_file: str) -> dict:
    with Procs(__file__) as procs:
        inters, endpoints = [], []
        for _ in range(2):
            proc = procs.spawn([FABRIC, "intermediary", "--channel", "drainbench", "--events"])
            endpoints.append(line(proc)["endpoint"])  # the event "listening"
            line(proc)  # the event "control"
            inters.append(proc)
        eps = ",".join(endpoints)
        consumer = procs.role("consumer", endpoints=eps, count=count, mark=mark_file)
        line(consumer)
        producer = procs.role("producer", endpoints=eps, count=count, rate=rate)
        line(consumer)  # 30% delivered
        started = time.monotonic()
        Path(mark_file).write_text(repr(started))
        inters[0].send_signal(signal.SIGTERM)
        out, _ = inters[0].communicate(timeout=60)
        drain_ms = (time.monotonic() - started) * 1000
        report = next(event for event in map(json.loads, out.splitlines())
                      if event.get("event") == "drained")
        result = line(consumer)
        stats = line(producer)["stats"]
        return {"drain_ms": drain_ms, "report_ms": report["elapsed_ms"],
                "exit_code": inters[0].returncode, "complete": report["complete"],
                "resent": stats["batches_resent"], **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--rate", type=int, default=100_000)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("--endpoints", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--mark", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "producer":
        return asyncio.run(_producer(args))
    if args.role == "consumer":
        return asyncio.run(_consumer(args))
    with tempfile.TemporaryDirectory() as tmp:
        trials = [trial(args.messages, args.rate, os.path.join(tmp, f"mark{t}"))
                  for t in range(args.trials)]
    summary = {
        "messages": args.messages, "rate": args.rate, "trials": args.trials,
        "drain_ms_p50": round(statistics.median(t["drain_ms"] for t in trials), 1),
        "drain_ms_max": round(max(t["drain_ms"] for t in trials), 1),
        "report_ms_p50": round(statistics.median(t["report_ms"] for t in trials), 1),
        "gap_ms_p50": round(statistics.median(t["gap_ms"] for t in trials), 1),
        "gap_ms_max": round(max(t["gap_ms"] for t in trials), 1),
        "incomplete_drains": sum(not t["complete"] or t["exit_code"] != 0 for t in trials),
        "lost": sum(t["lost"] for t in trials),
        "duplicates": sum(t["duplicates"] for t in trials),
        "redelivered": sum(t["redelivered"] for t in trials),
        "batches_resent": sum(t["resent"] for t in trials),
    }
    if args.json:
        emit(summary)
    else:
        for key, value in summary.items():
            print(f"{key:>20}: {value}")


if __name__ == "__main__":
    sys.exit(main())
