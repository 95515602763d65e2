"""A stateful component's throughput, failover gap and recovery, beside a stateless consumer,
in one run on one machine.

    python benchmarks/stateful_bench.py [--messages N] [--repeats R] [--trials T]
                                        [--partitions 1,2] [--json]

Every process is real: a one-node name service, two ``fabric intermediary`` processes per
channel, three replica processes (``fabric component run ...:BenchCounter --replicas 3``, fsync
on: each log entry is on a quorum's disks before its messages are acknowledged), one producer
(an ``OutputPort``), 100-byte payloads.

(a) stateless: the producer -> 2 intermediaries -> 1 consumer (an ``InputPort``, no-op
    handler); (b) stateful: the producer -> 2 intermediaries -> the leader replica of a
    3-replica counting component. Throughput: N messages (default 200,000) from the first send
    to the producer's last acknowledgement (an acknowledgement comes only once the message is
    handled: (b) committed and applied). R runs of each, interleaved, medians reported, with the
    ratio (b)/(a). ``partitions``: (b) with K groups for each K of ``--partitions``, the
    producer routing by key (``send(payload, key=i)``) to the channel of each partition.
Failover: T trials (default 5) on one group: a producer sends at 20,000 msgs/s; after 30%
    the leader replica is SIGKILLed (and restarted with its disk after the trial); the gap is
    the longest pause between two acknowledgements the producer receives, from the last one
    before the kill on (an acknowledgement comes only from a leader, after commit and apply).
Correctness, over everything each group applied: ``lost`` (sent and never applied),
    ``applied_twice``, ``replicas_equal`` (the three state digests).
Recovery: every replica SIGKILLed, then restarted with its disk; the time until a leader has
    applied everything again, per million messages in the state (snapshot + log replay).

The load average before and after is in the output (the machine may be shared).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _procs import Procs, line

ROOT = Path(__file__).resolve().parents[1]
FABRIC = str(Path(sys.executable).with_name("fabric"))
PAYLOAD = 100
TARGET = f"{Path(__file__).resolve().with_name('bench_counter.py')}:BenchCounter"


def emit(obj: dict) -> None:
    print(json.dumps(obj), flush=True)


def payload(i: int) -> bytes:
    return i.to_bytes(8, "little") + bytes(PAYLOAD - 8)


# -- roles ----------------------------------------------------------------------------------

async def _producer(args) -> None:
    from fabric.ports.output import OutputPort

    channels = args.channels.split(",")
    endpoints = [e.split("+") for e in args.endpoints.split(",")]
    base = args.base
    if len(channels) == 1:
        port = OutputPort(channels[0], endpoints[0])
        await port.start()
        send = port.send
        ports = [port]
    else:
        from fabric.ports.partitioned import PartitionedOutput

        part = PartitionedOutput(args.channel, [OutputPort(c, e)
                                                for c, e in zip(channels, endpoints)])
        await part.start()
        ports = part.ports

        async def send(p: bytes, _i=None) -> None:  # type: ignore[misc]
            await part.send(p, key=_i)
    await asyncio.sleep(0.3)  # connections up
    interval = 1.0 / args.rate if args.rate else 0.0
    acks: list[tuple[float, int]] = []
    sampling = asyncio.ensure_future(_sample_acks(ports, acks)) if args.rate else None
    start = time.monotonic()
    kill_at = int(args.count * 0.3)
    for i in range(args.count):
        if interval:
            delay = start + i * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        if i == kill_at and args.rate:
            emit({"kill": time.monotonic()})
        if len(channels) == 1:
            await send(payload(base + i))
        else:
            await send(payload(base + i), base + i)
    for port in ports:
        await port.flush(timeout=120)
    elapsed = time.monotonic() - start
    if sampling is not None:
        sampling.cancel()
    emit({"elapsed_s": elapsed, "acks": acks if args.rate else []})
    for port in ports:
        await port.close()


async def _sample_acks(ports, acks: list) -> None:
    last = -1
    while True:
        acked = sum(port.stats.messages_acked for port in ports)
        if acked != last:
            acks.append((time.monotonic(), acked))
            last = acked
        await asyncio.sleep(0.002)


async def _consumer(args) -> None:
    from fabric.ports.input import InputPort
    count = 0
    done = asyncio.Event()

    def handler(msg) -> None:
        nonlocal count
        count += 1
        if count >= args.count:
            done.set()

    async with InputPort(args.channels, args.endpoints.split("+"), handler):
        emit({"ready": True})
        await done.wait()
        await asyncio.sleep(0.1)  # the last acks out


# -- orchestration --------------------------------------------------------------------------

class Bench:
    def __init__(self, tmp: Path, procs: Procs, ns: str) -> None:
        self.tmp = tmp
        self.procs = procs
        self.ns = ns
        self.runs = 0
        self.live: list[subprocess.Popen] = []  # this run's processes, stopped at its end

    def intermediaries(self, channel: str) -> list[str]:
        endpoints = []
        for _ in range(2):
            proc = self.procs.spawn([FABRIC, "intermediary", "--channel", channel, "--listen",
                                     "127.0.0.1:0", "--ns", self.ns, "--events"])
            self.live.append(proc)
            while (got := line(proc)).get("event") != "registered":
                pass
            endpoints.append(got["endpoint"])
        return endpoints

    def group(self, name: str, channel: str, partitions: int = 1,
              snapshot_entries: int = 10_000) -> dict[str, dict]:
        """Three replica processes; name -> {proc, control, data}."""
        members = {}
        for r in range(3):
            data = self.tmp / f"{name}-r{r}"
            members[f"r{r}"] = self.replica(name, channel, data, partitions, snapshot_entries)
        wait(lambda: all(len(self.voters(m, p)) == 3 for m in members.values()
                         for p in range(partitions)), 60, "three voters")
        if partitions > 1:  # measured once the leaders are spread over the processes
            wait(lambda: self.leaders_spread(members, partitions), 60, "leaders spread")
        return members

    def leaders_spread(self, members: dict, partitions: int) -> bool:
        leading = []
        for member in members.values():
            status = self.status(member)
            if status is None:
                return False
            leading.append(sum(s["role"] == "leader" for s in status))
        return sum(leading) == partitions and max(leading) <= -(-partitions // len(members))

    def replica(self, name: str, channel: str, data: Path, partitions: int = 1,
                snapshot_entries: int = 10_000) -> dict:
        proc = self.procs.spawn([FABRIC, "component", "run", TARGET, "--name", name,
                                 "--replicas", "3", "--data", str(data), "--input", channel,
                                 "--partitions", str(partitions), "--ns", self.ns, "--events",
                                 "--snapshot-entries", str(snapshot_entries)])
        control = None
        ready = 0
        while ready < partitions:
            got = line(proc)
            if got.get("event") == "control":
                control = got["endpoint"]
            elif got.get("event") == "replica":
                ready += 1
        return {"proc": proc, "control": control, "data": data, "name": name,
                "channel": channel, "partitions": partitions,
                "snapshot_entries": snapshot_entries}

    def end_run(self) -> None:
        """Stop what this run started: idle processes still tick, and the next run would
        share the CPU with them."""
        for proc in self.live:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.live:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.live = []

    def status(self, member: dict) -> list[dict] | None:
        from nameservice.control import control_request
        try:
            return asyncio.run(control_request(member["control"], "status",
                                               timeout=2))["replicas"]
        except Exception:
            return None

    def voters(self, member: dict, partition: int) -> list[int]:
        status = self.status(member)
        return status[partition].get("voters", []) if status else []

    def produce(self, channels: list[str], endpoints: list[list[str]], count: int,
                base: int, rate: int = 0, on_kill=None, channel: str = "") -> dict:
        proc = self.procs.spawn([sys.executable, __file__, "--role", "producer", "--channels",
                                 ",".join(channels), "--channel", channel,
                                 "--endpoints", ",".join("+".join(e) for e in endpoints),
                                 "--count", str(count), "--base", str(base),
                                 "--rate", str(rate)])
        while True:
            got = line(proc)
            if "kill" in got and on_kill is not None:
                on_kill()
            if "elapsed_s" in got:
                proc.wait()
                return got


def wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run_stateless(bench: Bench, count: int) -> float:
    bench.runs += 1
    channel = f"sl{bench.runs}"
    endpoints = bench.intermediaries(channel)
    consumer = bench.procs.role("consumer", channels=channel, endpoints="+".join(endpoints),
                                count=count)
    line(consumer)  # ready
    result = bench.produce([channel], [endpoints], count, 0)
    consumer.wait(30)
    bench.end_run()
    return count / result["elapsed_s"]


def partition_channels(channel: str, k: int) -> list[str]:
    if k == 1:
        return [channel]
    from fabric.ports.partitioned import partition_channel
    return [partition_channel(channel, p, k) for p in range(k)]


def run_stateful(bench: Bench, count: int, k: int) -> tuple[float, dict]:
    bench.runs += 1
    channel = f"sf{bench.runs}"
    channels = partition_channels(channel, k)
    endpoints = [bench.intermediaries(c) for c in channels]
    group = bench.group(f"g{bench.runs}", channel, k)
    result = bench.produce(channels, endpoints, count, 0, channel=channel)
    check = settle(bench, group, k, count, sum(range(count)))
    for member in group.values():
        member["proc"].send_signal(signal.SIGTERM)
    for member in group.values():
        member["proc"].wait(30)
    bench.end_run()
    return count / result["elapsed_s"], check


def settle(bench: Bench, group: dict, k: int, count: int, total: int,
           timeout: float = 60) -> dict:
    """Wait (bounded) until every replica of every partition applied the same; compare."""
    def states():
        out = []
        for member in group.values():
            status = bench.status(member)
            if status is None:
                return None
            out.append(status)
        return out
    deadline = time.monotonic() + timeout
    while True:
        got = states()
        if got is not None:
            counts = [sum(s[p]["state"]["count"] for p in range(k)) for s in got]
            digests = [tuple(s[p]["state_digest"] for p in range(k)) for s in got]
            sums = [sum(s[p]["state"]["sum"] for p in range(k)) for s in got]
            if (min(counts) >= count and len(set(digests)) == 1) \
                    or time.monotonic() > deadline:
                applied = max(counts)
                return {"lost": max(0, count - min(counts)),
                        "applied_twice": max(0, applied - count)
                        + (0 if max(sums) == total or applied != count else 1),
                        "replicas_equal": len(set(digests)) == 1}
        elif time.monotonic() > deadline:
            return {"lost": count, "applied_twice": 0, "replicas_equal": False}
        time.sleep(0.1)


def failover(bench: Bench, trials: int) -> dict:
    bench.runs += 1
    channel = f"fo{bench.runs}"
    endpoints = bench.intermediaries(channel)
    group = bench.group(f"g{bench.runs}", channel)
    gaps = []
    per_trial = 60_000
    sent = 0
    for _ in range(trials):
        victim: list[str] = []
        killed_at: list[float] = []

        def kill(victim: list[str] = victim, killed_at: list[float] = killed_at) -> None:
            def leader() -> str | None:
                for name, member in group.items():
                    status = bench.status(member)
                    if status and status[0]["role"] == "leader":
                        return name
                return None
            name = wait(leader, 10, "a leader to kill")  # (a transient election may run)
            group[name]["proc"].send_signal(signal.SIGKILL)
            killed_at.append(time.monotonic())
            victim.append(name)
        result = bench.produce([channel], [endpoints], per_trial, sent, rate=20_000,
                               on_kill=kill)
        sent += per_trial
        if not victim:
            raise RuntimeError(f"no leader to kill: {[bench.status(m) for m in group.values()]}")
        killed = group[victim[0]]
        killed["proc"].wait(10)
        gaps.append(_gap_after_kill(result["acks"], killed_at[0]))
        group[victim[0]] = bench.replica(killed["name"], channel, killed["data"])
    check = settle(bench, group, 1, sent, sum(range(sent)))
    recovery = recover(bench, group, sent)
    for member in group.values():
        member["proc"].send_signal(signal.SIGTERM)
    for member in group.values():
        member["proc"].wait(30)
    bench.end_run()
    return {"gaps_ms": [round(g * 1000, 1) for g in gaps], "check": check,
            "recovery": recovery, "messages": sent}


def _gap_after_kill(acks: list, killed_at: float) -> float:
    """The longest pause between two acknowledgements the producer received, from the last
    one before the kill on (CLOCK_MONOTONIC is the same in every process of the machine)."""
    times = [t for t, _ in acks]
    start = max(0, sum(1 for t in times if t < killed_at) - 1)
    times = times[start:]
    return max((b - a for a, b in zip(times, times[1:])), default=0.0)


def recover(bench: Bench, group: dict, count: int) -> dict:
    for member in group.values():
        member["proc"].send_signal(signal.SIGKILL)
    for member in group.values():
        member["proc"].wait(10)
    started = time.monotonic()
    for name, member in list(group.items()):
        group[name] = bench.replica(member["name"], member["channel"], member["data"])

    def applied() -> bool:
        for member in group.values():
            status = bench.status(member)
            if status and status[0]["role"] == "leader" \
                    and status[0]["state"]["count"] >= count:
                return True
        return False
    wait(applied, 120, "recovery")
    elapsed = time.monotonic() - started
    return {"seconds": round(elapsed, 3), "messages": count,
            "s_per_million": round(elapsed / (count / 1e6), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--role", choices=["producer", "consumer"])
    parser.add_argument("--channels", default="")
    parser.add_argument("--channel", default="")
    parser.add_argument("--endpoints", default="")
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--base", type=int, default=0)
    parser.add_argument("--rate", type=int, default=0)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--partitions", default="1,2")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.role == "producer":
        asyncio.run(_producer(args))
        return
    if args.role == "consumer":
        asyncio.run(_consumer(args))
        return
    report(args)


def report(args) -> None:
    from nameservice.server.local import LocalCluster

    ks = [int(k) for k in args.partitions.split(",") if k]
    load_before = loadavg()
    with tempfile.TemporaryDirectory(prefix="stateful-bench-") as tmp, \
            LocalCluster(Path(tmp) / "ns", 1) as cluster, Procs(__file__) as procs:
        cluster.start()
        bench = Bench(Path(tmp), procs, cluster.ns_arg)
        stateless, stateful = [], {k: [] for k in ks}
        checks = []
        for _ in range(args.repeats):
            stateless.append(run_stateless(bench, args.messages))
            for k in ks:
                rate, check = run_stateful(bench, args.messages, k)
                stateful[k].append(rate)
                checks.append(check)
        fo = failover(bench, args.trials) if args.trials else None
    checks += [fo["check"]] if fo else []
    one = statistics.median(stateful[ks[0]])
    out = {
        "stateless_msgs_s": round(statistics.median(stateless)),
        "stateful_msgs_s": round(one),
        "ratio": round(one / statistics.median(stateless), 3),
        "partitions": [{"k": k, "msgs_s": round(statistics.median(stateful[k]))} for k in ks],
        "failover_gap_ms": ({"p50": statistics.median(fo["gaps_ms"]), "max": max(fo["gaps_ms"]),
                             "trials": fo["gaps_ms"]} if fo else None),
        "lost": sum(c["lost"] for c in checks),
        "applied_twice": sum(c["applied_twice"] for c in checks),
        "replicas_equal": all(c["replicas_equal"] for c in checks),
        "recovery_s_per_million": fo["recovery"]["s_per_million"] if fo else None,
        "recovery": fo["recovery"] if fo else None,
        "runs": {"stateless": [round(x) for x in stateless],
                 "stateful": {str(k): [round(x) for x in v] for k, v in stateful.items()}},
        "messages": args.messages, "payload_bytes": PAYLOAD, "repeats": args.repeats,
        "load_before": load_before, "load_after": loadavg(), "cpus": os.cpu_count(),
    }
    print(json.dumps(out, indent=None if args.json else 2))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
