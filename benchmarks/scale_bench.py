"""The cluster manager at scale on five hosts: deploy time, how long a lost host's instances
take to run again, and what the name service carries meanwhile.

    python benchmarks/scale_bench.py [--instances 50] [--intermediaries 3] [--watchers 1000]
                                     [--ttl 5] [--rate 50] [--steady 20] [--json]

Five hosts are network namespaces on one switch (``tests/netns.py``: needs root), the name
service runs on three of them, an agent on each. The network: ``instances`` probe components
(``fabric.cluster.probe``: one producer for every four consumers, each producer sending
``rate`` messages per second) and a channel with ``intermediaries``. ``watchers`` watches on
``names/process/`` (every registration change reaches each) are held open by this process
throughout, spread over ten clients.

* ``deploy_s``: from ``fabric deploy`` until every instance runs (the agent saw its process
  serve its control socket).
* ``msgs_s``: messages received per second by all consumers over ``steady`` seconds.
* ``ns_writes_s``: the name service's store revisions per second over the same window (each
  put and delete is one; lease renewals are not writes), beside ``ns_put_capacity_s``, what
  64 concurrent clients get from the same service at the end, and their ratio; also the write
  rate while deploying and the writes a host loss costs.
* ``replace_after_host_loss_ms``: a host without a name-service node, running the most
  instances, is cut off (silently: packets vanish, nobody is told); per instance it ran, the
  time from the cut until its next incarnation runs elsewhere; ``lease_ttl_s`` beside it, the
  target being TTL + 2 s.
* ``plan``: the manager's placement time (pure, in this process) for 50 instances on 5
  agents, 1,000 on 100 and 9,000 on 1,000.
* ``lost`` (acknowledged to a producer, never received), ``duplicates`` (received again
  without the redelivered flag), ``two_acting`` (two processes of one instance acting at once):
  from the probes' records once the network is removed.

The load average before and after is in the output: everything here shares the machine's
cores. An idle instance costs some 4% of a core here (its ports' 10 ms ticks), so 50 of them
keep two cores busy on their own; the name-service nodes run at ``--ns-nice`` (-10) with
``--election-timeout`` 1000-2000 ms, as a production cluster gives its coordination service
cores of its own and etcd's default election timeout is 1000 ms: starved of CPU among sixty
processes, a node at normal priority misses heartbeats and the leader flaps.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fabric.butterfly.fleet import Fleet  # noqa: E402
from fabric.cluster import keys  # noqa: E402
from fabric.cluster.probe import RECORD, audit, probe_network  # noqa: E402
from fabric.cluster.status import status_from_view  # noqa: E402
from nameservice.client import NameServiceClient  # noqa: E402
from nameservice.errors import NameServiceError  # noqa: E402
from nameservice.server.local import LocalCluster  # noqa: E402
from tests.netns import Hosts, NetnsUnavailable, netns_unavailable_reason  # noqa: E402

HOSTS = 5
NS_NODES = 3
PROGRESS: dict = {}
"""What a run measured so far: reported with the error when a phase does not finish."""


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def network_file(instances: int, intermediaries: int, rate: int) -> str:
    producers = max(1, instances // 5)
    return probe_network("scale", producers=producers,
                         consumers=max(1, instances - producers),
                         intermediaries=intermediaries, rate=rate)


def received(tmp: Path) -> int:
    return sum(p.stat().st_size for p in tmp.rglob("consumer-*.rec")) // RECORD.size


async def status(client: NameServiceClient) -> dict:
    kvs = {kv.key.decode(): kv for kv in await client.range(keys.ROOT)}
    return status_from_view(kvs, "scale") or {"instances": [], "settled": False}


async def revision(client: NameServiceClient) -> int:
    """The store's revision now (asked again through a busy moment)."""
    async def ask() -> int:
        return (await client.range_revision(keys.ROOT, limit=1))[1]
    return await wait_until(ask, 60, "the store's revision")


async def wait_until(check, timeout: float, what: str, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = await check()
        except NameServiceError:  # a busy moment (an election): look again
            found = None
        if found:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(every)


async def hold_watchers(ns: list[str], count: int, stop: asyncio.Event, seen: list[int]) -> None:
    clients = [NameServiceClient(ns) for _ in range(10)]
    for client in clients:
        await client.connect()
    watches = [clients[i % 10].watch("names/process/") for i in range(count)]

    async def drain(watch) -> None:
        async for _event in watch:
            seen[0] += 1

    tasks = [asyncio.ensure_future(drain(w)) for w in watches]
    await asyncio.gather(*(w.started() for w in watches))
    await stop.wait()
    for task in tasks:
        task.cancel()
    for watch in watches:
        await watch.close()
    for client in clients:
        await client.close()


async def put_capacity(ns: list[str], seconds: float = 3.0, clients: int = 64) -> float:
    made = [NameServiceClient(ns) for _ in range(clients)]
    for client in made:
        await client.connect()
    done = 0
    end = time.monotonic() + seconds

    async def one(client: NameServiceClient, n: int) -> None:
        nonlocal done
        i = 0
        while time.monotonic() < end:
            await client.put(f"bench/capacity/{n}/{i % 100}", b"x" * 64)
            done += 1
            i += 1

    started = time.monotonic()
    await asyncio.gather(*(one(c, n) for n, c in enumerate(made)))
    elapsed = time.monotonic() - started
    await made[0].delete_prefix("bench/capacity/")
    for client in made:
        await client.close()
    return done / elapsed


def plan_times() -> dict[str, dict[str, float]]:
    """How long the manager's placement takes (pure, in this process): placing every instance
    of a new network, a plan with nothing to do (every change the manager sees), and placing a
    lost host's share again; for 50 instances on 5 agents, 1,000 on 100, 9,000 on 1,000."""
    from fabric.cluster.keys import AgentInfo, Running
    from fabric.cluster.network import parse_network
    from fabric.cluster.placement import plan

    found = {}
    for instances, agents in ((50, 5), (1000, 100), (9_000, 1000)):
        groups = max(1, instances // 500)  # at most 1,000 instances per component
        network = parse_network('name = "scale"\n' + "".join(
            f'[components.c{g}]\nrun = "m:f"\ninstances = {instances // groups}\n'
            for g in range(groups)) + "[channels.jobs]\nintermediaries = 3\n")
        live = {f"h{i}": AgentInfo(f"h{i}", "10.0.0.1", instances, {"host": f"h{i}"})
                for i in range(agents)}
        started = time.perf_counter()
        first = plan({"scale": network}, live, {}, {}, 1)
        place_ms = (time.perf_counter() - started) * 1000
        placements = {(n, i): (p, r) for r, (n, i, p, _rev) in enumerate(first.writes, 1)
                      if p is not None}
        running = {(p.host, n, i): Running(p.host, n, i, p.gen, "running")
                   for (n, i), (p, _r) in placements.items()}
        started = time.perf_counter()
        idle = plan({"scale": network}, live, placements, running, 1)
        idle_ms = (time.perf_counter() - started) * 1000
        assert not idle.writes
        del live["h0"]
        started = time.perf_counter()
        again = plan({"scale": network}, live, placements, running, 1)
        loss_ms = (time.perf_counter() - started) * 1000
        found[f"{instances}x{agents}"] = {"place_all_ms": round(place_ms, 2),
                                          "nothing_to_do_ms": round(idle_ms, 2),
                                          "host_lost_ms": round(loss_ms, 2),
                                          "moved": len(again.writes)}
    return found


def troubles(tmp: Path) -> dict[str, int]:
    """From the logs: how often agents stopped their instances for want of a renewal
    (``fenced``), and how many times the name service's leader changed (``leader_changes``,
    as node 1 saw it)."""
    logs = "".join(p.read_text(errors="replace") for p in (tmp / "logs").glob("agent-*.log"))
    node = tmp / "ns" / "node-1.log"
    leaders = node.read_text(errors="replace").count("leader is now ") if node.exists() else 0
    return {"fenced": logs.count("stopping every instance"), "leader_changes": leaders}


def fabric(*args: str) -> list[str]:
    return [sys.executable, "-m", "fabric", *args]


async def run(args: argparse.Namespace, hosts: Hosts, tmp: Path) -> dict:
    names = [f"h{i}" for i in range(HOSTS)]
    ns_cluster = LocalCluster(tmp / "ns", NS_NODES, node_hosts=hosts.addresses[:NS_NODES],
                              wrap=lambda node, argv: ["nice", "-n", str(args.ns_nice),
                                                       *hosts.command(node - 1, argv)],
                              election_timeout=args.election_timeout)
    ns_cluster.start()
    ns = ns_cluster.ns_arg.split(",")
    (tmp / "logs").mkdir()
    fleet = Fleet(str(ROOT), tmp / "logs", env={**os.environ, "PYTHONPATH": str(ROOT)})
    stop_watchers = asyncio.Event()
    watch_events = [0]
    watchers = None
    try:
        slots = args.instances // HOSTS + args.intermediaries + 4
        agents = {}
        for i, host in enumerate(names):
            (tmp / host).mkdir()
            agents[host] = fleet.start(f"agent-{host}", hosts.command(i, fabric(
                "agent", "--name", host, "--address", hosts.addresses[i], "--ns",
                ns_cluster.ns_arg, "--data", str(tmp / host), "--ttl", str(args.ttl),
                "--slots", str(slots), "--events")))
        for proc in agents.values():
            proc.wait_event("agent", 60)
        watchers = asyncio.ensure_future(hold_watchers(ns, args.watchers, stop_watchers,
                                                       watch_events))
        async with NameServiceClient(ns) as client:
            path = tmp / "scale.toml"
            path.write_text(network_file(args.instances, args.intermediaries, args.rate))
            rev_start = await revision(client)
            started = time.monotonic()
            subprocess.run(fabric("deploy", str(path), "--ns", ns_cluster.ns_arg),
                           check=True, capture_output=True, cwd=ROOT)

            async def settled() -> dict | None:
                found = await status(client)
                return found if found["settled"] else None
            placed_count = len((await wait_until(settled, 300, "the network to run"))[
                "instances"])
            deploy_s = time.monotonic() - started
            PROGRESS.update(instances=placed_count, deploy_s=round(deploy_s, 2))

            # Steady state: messages and name-service writes per second.
            rev0 = await revision(client)
            deploy_writes_s = (rev0 - rev_start) / deploy_s
            count0, t0 = received(tmp), time.monotonic()
            await asyncio.sleep(args.steady)
            rev1 = await revision(client)
            elapsed = time.monotonic() - t0
            msgs_s = (received(tmp) - count0) / elapsed
            ns_writes_s = (rev1 - rev0) / elapsed
            PROGRESS.update(msgs_s=round(msgs_s, 1), ns_writes_s=round(ns_writes_s, 1))

            # A host lost: its instances run again elsewhere.
            before = {r["id"]: (r["host"], r["gen"]) for r in (await wait_until(
                lambda: status(client), 60, "the status"))["instances"]}
            candidates = names[NS_NODES:]
            victim = max(candidates, key=lambda h: sum(v[0] == h for v in before.values()))
            lost = [i for i, (h, _g) in before.items() if h == victim]
            back: dict[str, float] = {}
            cut_at = time.monotonic()
            hosts.cut(names.index(victim))

            async def all_back() -> bool:
                rows = {r["id"]: r for r in (await status(client))["instances"]}
                now = time.monotonic()
                for ident in lost:
                    row = rows.get(ident)
                    if ident not in back and row and row["host"] != victim and \
                            row["gen"] > before[ident][1] and row["state"] == "running":
                        back[ident] = (now - cut_at) * 1000
                return len(back) == len(lost)
            await wait_until(all_back, 120, "the lost host's instances to run again", 0.02)
            rev2 = await revision(client)
            loss_writes = rev2 - rev1
            hosts.heal(names.index(victim))

            async def registered() -> bool:
                return await client.get(keys.AGENTS + victim) is not None
            await wait_until(registered, 120, f"{victim} to register again")
            await wait_until(settled, 120, "the network to settle again")
            subprocess.run(fabric("network", "rm", "scale", "--wait", "120", "--ns",
                                  ns_cluster.ns_arg), check=True, capture_output=True,
                           cwd=ROOT)
            stop_watchers.set()
            await watchers
            watchers = None
            capacity = await put_capacity(ns)
        found = audit(tmp)
        times = sorted(back.values())
        return {**troubles(tmp),
            "hosts": HOSTS, "instances": placed_count, "intermediaries": args.intermediaries,
            "watchers": args.watchers, "watch_events": watch_events[0],
            "deploy_s": round(deploy_s, 2), "lease_ttl_s": args.ttl,
            "replace_after_host_loss_ms": {"p50": round(statistics.median(times), 1),
                                           "max": round(times[-1], 1),
                                           "instances": len(times)},
            "target_ms": (args.ttl + 2) * 1000,
            "lost": found["lost_count"], "duplicates": found["duplicates"],
            "redelivered_again": found["flagged"], "two_acting": len(found["two_acting"]),
            "acked": found["acked"], "msgs_s": round(msgs_s, 1),
            "ns_writes_s": round(ns_writes_s, 1),
            "ns_writes_during_deploy_s": round(deploy_writes_s, 1),
            "ns_writes_for_host_loss": loss_writes,
            "ns_put_capacity_s": round(capacity, 1),
            "ns_write_load": round(ns_writes_s / capacity, 4) if capacity else None,
        }
    finally:
        PROGRESS.update(troubles(tmp))
        stop_watchers.set()
        if watchers is not None:
            watchers.cancel()
        fleet.close()
        leftovers = subprocess.run(["pgrep", "-f", "--", f"--ns {ns_cluster.ns_arg}"],
                                   capture_output=True, text=True).stdout.split()
        for pid in leftovers:
            try:
                os.kill(int(pid), 9)
            except ProcessLookupError:
                pass
        ns_cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=50)
    parser.add_argument("--intermediaries", type=int, default=3)
    parser.add_argument("--watchers", type=int, default=1000)
    parser.add_argument("--ttl", type=float, default=5.0)
    parser.add_argument("--rate", type=int, default=50)
    parser.add_argument("--steady", type=float, default=20.0)
    parser.add_argument("--election-timeout", default="1000-2000",
                        help="the name service's, in ms (etcd's default is 1000)")
    parser.add_argument("--ns-nice", type=int, default=-10,
                        help="the name-service nodes' niceness (a production cluster gives "
                             "its coordination service cores of its own)")
    parser.add_argument("--keep", metavar="DIR", help="work in DIR (a new directory) and keep "
                                                      "it: the processes' logs and records")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    reason = netns_unavailable_reason()
    if reason:
        sys.exit(f"scale_bench: {reason}")
    # SIGTERM unwinds like Ctrl-C: the namespaces and every process are removed.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    hosts = Hosts(HOSTS)
    load_before = loadavg()
    try:
        hosts.create()
    except NetnsUnavailable as exc:
        hosts.remove()
        sys.exit(f"scale_bench: cannot build the five hosts: {exc}")
    try:
        if args.keep:
            Path(args.keep).mkdir(parents=True)
            result = asyncio.run(run(args, hosts, Path(args.keep)))
        else:
            with tempfile.TemporaryDirectory(prefix="scale-bench-") as tmp:
                result = asyncio.run(run(args, hosts, Path(tmp)))
    except (TimeoutError, NameServiceError) as exc:  # a phase did not finish: which, and
        # what was measured until then
        result = {"error": str(exc), "hosts": HOSTS, "instances_asked": args.instances,
                  "lease_ttl_s": args.ttl, **PROGRESS}
    finally:
        hosts.remove()
    result["plan"] = plan_times()
    result["load_before"], result["load_after"] = load_before, loadavg()
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:28} {value}")
    if "error" in result:
        sys.exit(1)


if __name__ == "__main__":
    main()
