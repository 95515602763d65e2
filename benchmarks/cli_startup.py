"""What one ``fabric`` command costs to start: wall time and CPU of real processes.

Starts a local 3-node name service, puts one key, then runs each command ``--runs`` times as a
subprocess (rounds interleave the commands, so a busy moment of the machine costs each the
same) and reports per command the median and p90 wall time and the median CPU (user + sys,
from ``resource.getrusage(RUSAGE_CHILDREN)``). The anchors, measured in the same run: a bare
``python -c pass`` (interpreter start, the venv's site included) and ``python -c "import zmq,
msgpack"`` (what any name-service client must load), and the floor of a click command line
with an asyncio client (``import click, asyncio, logging, zmq.asyncio, msgpack``). Ratios are
against the first two; ``above_floor_ms`` is what fabric's own code adds to the floor. The load
average before and after says how busy the machine was. The packages' bytecode is compiled
first, as an installation does (``PYTHONDONTWRITEBYTECODE`` would otherwise make every run
compile the modules changed since the last cache).

Usage:
    python benchmarks/cli_startup.py [--json] [--runs 20]
"""
from __future__ import annotations

import argparse
import compileall
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import fabric
import nameservice
from nameservice.server.local import LocalCluster

TARGET_MS = 150.0
"""The goal for ``fabric kv get KEY``'s median wall time."""
KEY = "bench/startup"
FLOOR = "python -c 'import click, asyncio, logging, zmq.asyncio, msgpack'"
"""What any asyncio name-service client with a click command line loads before its own code."""


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds of one run; the command must succeed."""
    cpu = _cpu()
    began = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"{argv} exited {done.returncode}: {done.stderr.decode()[-500:]}")
    return wall, _cpu() - cpu


def _summary(walls: list[float], cpus: list[float]) -> dict[str, float]:
    ordered = sorted(walls)
    return {"median_ms": round(statistics.median(walls) * 1000, 1),
            "p90_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))] * 1000, 1),
            "cpu_median_ms": round(statistics.median(cpus) * 1000, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the JSON report only")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    command = str(Path(sys.executable).with_name("fabric"))
    python = sys.executable
    commands = {
        "python -c pass": [python, "-c", "pass"],
        "python -c 'import zmq, msgpack'": [python, "-c", "import zmq, msgpack"],
        FLOOR: [python, "-c", "import click, asyncio, logging, zmq.asyncio, msgpack"],
        "fabric --version": [command, "--version"],
        "fabric kv get KEY": [command, "kv", "get", KEY],
        "fabric kv put KEY V": [command, "kv", "put", KEY, "v"],
    }
    for package in (fabric, nameservice):
        compileall.compile_dir(str(Path(package.__file__).parent), quiet=1)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="cli-startup-") as work, \
            LocalCluster(work, 3) as cluster:
        cluster.start()
        env = dict(os.environ, FABRIC_NS=cluster.ns_arg)
        deadline = time.monotonic() + 30
        while subprocess.run([command, "kv", "put", KEY, "v"], env=env,
                             capture_output=True).returncode != 0:
            if time.monotonic() > deadline:
                raise SystemExit("the local name service never took a write")
        walls: dict[str, list[float]] = {name: [] for name in commands}
        cpus: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, argv in commands.items():
                wall, cpu = _run(argv, env)
                walls[name].append(wall)
                cpus[name].append(cpu)
        cluster.stop()
    results = {name: _summary(walls[name], cpus[name]) for name in commands}
    bare = results["python -c pass"]["median_ms"]
    anchor = results["python -c 'import zmq, msgpack'"]["median_ms"]
    report = {
        "command": "python benchmarks/cli_startup.py --json" + (
            f" --runs {args.runs}" if args.runs != 20 else ""),
        "runs": args.runs, "python": sys.version.split()[0], "cpus": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "results": results,
        "ratio_to_python": {name: round(r["median_ms"] / bare, 2) for name, r in results.items()},
        "ratio_to_zmq_import": {name: round(r["median_ms"] / anchor, 2)
                                for name, r in results.items()},
        "above_floor_ms": {name: round(r["median_ms"] - results[FLOOR]["median_ms"], 1)
                           for name, r in results.items() if name.startswith("fabric")},
        "target_kv_get_ms": TARGET_MS,
        "kv_get_within_target": results["fabric kv get KEY"]["median_ms"] <= TARGET_MS,
    }
    print(json.dumps(report) if args.json else json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
