"""fabric data path vs plain pyzmq, measured in one run on one machine.

    python benchmarks/fabric_bench.py [--messages N] [--trials T] [--repeats R] [--curve] [--json]
    python benchmarks/fabric_bench.py --metrics-cost [--messages N] [--repeats R] [--json]

(a) plain pyzmq: 1 PUSH -> 2 processes running zmq.proxy (PULL -> PUSH) -> 1 PULL, one message
    per frame; (b) fabric: 1 OutputPort -> 2 ``fabric intermediary`` processes -> 1 InputPort
    with a no-op handler. 100-byte payloads, N messages each (default 1,000,000); throughput is
    counted at the receiver from its first to its last message; R runs of each, interleaved,
    the median is reported (the machine is shared: one run can be unlucky).
Latency: one-way, producer send -> receiver handler, at 1,000 msgs/s for 2 s, for both (the
timestamp is CLOCK_MONOTONIC, shared by all processes of the machine).
Failover: T trials (default 10); in each, 200,000 messages stream through fabric and one
intermediary is SIGKILLed after 30% have arrived; the gap is the longest pause between two
deliveries after the kill. Lost and duplicate messages are summed over all trials. Beyond the
keys the issue names, the JSON carries the same measures for T/3 trials with SIGSTOP (a silent
hang) instead of SIGKILL (``failover_gap_hang_ms``, ``hang_lost``, ``hang_duplicates``), the
recovery times (kill -> every earlier message delivered) and the load average at the end.
Peak RSS (VmHWM) of each fabric process is taken from the throughput run. ``--trials 0``
leaves the failover trials out.

``--curve`` adds fabric with CURVE on every socket, in the same invocation: each of the four
processes gets a key directory of its own (``FABRIC_KEYS``; all trusting each other), the
intermediaries advertise ``ENDPOINT;curve=KEY`` and the ports connect to that. Its throughput
runs are interleaved with the others (plain, then fabric without and with CURVE, each of these
two first in turn; R times), its latency is measured as fabric's; ``"curve"`` in the output
has its median throughput, its ratio to fabric without CURVE, its latency, the CPU time per
message of all four processes with and without, and the messages per batch (CURVE encrypts
per frame, and a frame is a batch). The runs without keys set an empty ``FABRIC_KEYS``:
insecure, whatever this process was given.

``--metrics-cost`` measures only what serving Prometheus metrics costs the data path: the
fabric throughput run, R times with metrics on and R times off, interleaved in one invocation
(on/off, then off/on, ...). On: both intermediaries, the producer and the consumer serve
``/metrics`` (the producer keeps its histograms), and a thread here scrapes all four every
``--scrape-interval`` seconds (default 1 s; Prometheus's usual is 15 s). It reports the medians
of both, their ratio (on / off), every run, the scrapes made and the load average before and
after (the machine is shared). Wall-clock throughput on a shared machine varies by tens of per
cent from run to run; so it also reports the CPU time all four processes spent on the stream
(producer and consumer from the first message to the last, the intermediaries over the same
span), per message: a cost that other load barely moves.

Each process role is this same file run with ``--role``; every child is killed on exit.
"""
from __future__ import annotations

import argparse
import array
import asyncio
import dataclasses
import json
import os
import resource
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _procs import Procs, line, proc_cpu_s

from nameservice.server.local import free_ports

ROOT = Path(__file__).resolve().parents[1]
FABRIC = str(Path(sys.executable).with_name("fabric"))
PAYLOAD = 100
STAMP = struct.Struct("<QQ")  # monotonic ns at send, message number


def now_ns() -> int:
    return time.monotonic_ns()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_s() -> float:
    """CPU seconds (user + system) this process has used."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def emit(obj: dict) -> None:
    print(json.dumps(obj), flush=True)


def payload(i: int, stamped: bool) -> bytes:
    if not stamped:
        return b"x" * PAYLOAD
    return STAMP.pack(now_ns(), i).ljust(PAYLOAD, b"x")


class Receiver:
    """Counts messages and derives throughput, latency, gaps, loss and duplicates."""

    def __init__(self, count: int, mode: str) -> None:
        self.count = count
        self.mode = mode
        self.n = 0
        self.first = self.last = 0
        self.cpu_first = 0.0  # CPU seconds used when the first message arrived
        self.latencies: list[int] = []
        self.seen = bytearray(count)
        self.arrivals = array.array("q", bytes(8 * count)) if mode == "gaps" else None
        self.dups = 0
        self.gaps: list[tuple[int, int]] = []  # (end ns, length ns) of pauses > 1 ms

    def on(self, data: bytes) -> bool:
        if self.mode == "throughput":
            # Near no-op: a counter and two clock reads (first and last message).
            self.n += 1
            if self.n == 1:
                self.first = now_ns()
                self.cpu_first = cpu_s()
            if self.n >= self.count:
                self.last = now_ns()
                return True
            return False
        t = now_ns()
        if self.n == 0:
            self.first = t
        elif self.mode == "gaps" and t - self.last > 1_000_000:
            self.gaps.append((t, t - self.last))
        self.last = t
        self.n += 1
        if self.mode != "throughput":
            sent, i = STAMP.unpack_from(data)
            if self.mode == "latency":
                self.latencies.append(t - sent)
            elif self.seen[i]:
                self.dups += 1
            else:
                self.seen[i] = 1
                self.arrivals[i] = t
        return self.unique() >= self.count

    def unique(self) -> int:
        return self.n - self.dups

    def report(self) -> dict:
        out = {"n": self.n, "first": self.first, "last": self.last, "rss_mb": peak_rss_mb(),
               "cpu_s": cpu_s() - self.cpu_first}
        if self.mode == "latency":
            lat = sorted(self.latencies)
            out["p50_us"] = lat[len(lat) // 2] / 1000
            out["p99_us"] = lat[int(len(lat) * 0.99)] / 1000
        if self.mode == "gaps":
            out.update(gaps=self.gaps, dups=self.dups, lost=self.count - sum(self.seen))
            # Arrival time of every message, for the recovery time (too long for one line).
            with tempfile.NamedTemporaryFile(delete=False, suffix=".arrivals") as f:
                f.write(self.arrivals.tobytes())
                out["arrivals_file"] = f.name
        return out


# -- process roles --------------------------------------------------------------------------

def role_proxy() -> None:
    import zmq
    ctx = zmq.Context()
    front, back = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    front.bind("tcp://127.0.0.1:*")
    back.bind("tcp://127.0.0.1:*")
    emit({"front": front.last_endpoint.decode(), "back": back.last_endpoint.decode()})
    zmq.proxy(front, back)


def role_plain_push(args) -> None:
    import zmq
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    for ep in args.endpoints.split(","):
        sock.connect(ep)
    time.sleep(0.5)  # let both connections complete, so PUSH spreads over both
    stamped = args.mode != "throughput"
    fixed = payload(0, False)
    interval = 1e9 / args.rate if args.rate else 0
    start = now_ns()
    for i in range(args.count):
        if interval:
            _sleep_until(start + i * interval)
        sock.send(payload(i, True) if stamped else fixed)
    sock.close(linger=-1)
    ctx.term()


def role_plain_pull(args) -> None:
    import zmq
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    for ep in args.endpoints.split(","):
        sock.connect(ep)
    emit({"ready": True})
    rx = Receiver(args.count, args.mode)
    recv = sock.recv
    while not rx.on(recv()):
        pass
    emit(rx.report())


def _sleep_until(t_ns: float) -> None:
    delay = (t_ns - now_ns()) / 1e9
    if delay > 0:
        time.sleep(delay)


def _serve_metrics(args, port) -> object | None:
    """With ``--metrics HOST:PORT``: serve the port's metrics, as a component would."""
    if not args.metrics:
        return None
    from fabric.ports.metrics import PortCollector
    from nameservice.metrics import start_metrics

    return start_metrics(args.metrics, PortCollector([port]))


async def _fabric_producer(args) -> None:
    from fabric.ports.output import OutputPort
    async with OutputPort("bench", args.endpoints.split(",")) as port:
        _serve_metrics(args, port)
        await asyncio.sleep(0.5)
        stamped = args.mode != "throughput"
        fixed = payload(0, False)
        interval = 1e9 / args.rate if args.rate else 0
        start = now_ns()
        cpu_start = cpu_s()
        send = port.send
        for i in range(args.count):
            if interval:
                delay = (start + i * interval - now_ns()) / 1e9
                if delay > 0:
                    await asyncio.sleep(delay)
            await send(payload(i, True) if stamped else fixed)
        await port.flush()
        emit({"rss_mb": peak_rss_mb(), "stats": dataclasses.asdict(port.stats),
              "cpu_s": cpu_s() - cpu_start})


async def _fabric_consumer(args) -> None:
    from fabric.ports.input import InputPort
    rx = Receiver(args.count, args.mode)
    done = asyncio.Event()

    progress_at = int(args.count * 0.3) if args.mode == "gaps" else -1

    def handler(msg) -> None:
        if rx.on(msg.payload):
            done.set()
        if rx.n == progress_at:
            emit({"progress": rx.n})

    async with InputPort("bench", args.endpoints.split(","), handler) as port:
        _serve_metrics(args, port)
        emit({"ready": True})
        await done.wait()
        emit(rx.report())
        await asyncio.sleep(0.05)  # let the last acks out


# -- orchestration --------------------------------------------------------------------------

def vm_hwm_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for text in f:
            if text.startswith("VmHWM:"):
                return int(text.split()[1]) / 1024
    return 0.0


def run_plain(count: int, mode: str, rate: int = 0) -> dict:
    with Procs(__file__) as procs:
        proxies = [line(procs.role("proxy")) for _ in range(2)]
        pull = procs.role("plain-pull", endpoints=",".join(p["back"] for p in proxies),
                          count=count, mode=mode)
        line(pull)
        procs.role("plain-push", endpoints=",".join(p["front"] for p in proxies), count=count,
                   mode=mode, rate=rate)
        return line(pull)


def keys_env(keys: dict[str, Path] | None, name: str) -> dict[str, str]:
    """The environment giving process ``name`` its key directory (``FABRIC_KEYS``); without
    ``keys``, an empty ``FABRIC_KEYS``: insecure mode, whatever this process was given."""
    return {"FABRIC_KEYS": str(keys[name]) if keys else ""}


def make_keys(base: str) -> dict[str, Path]:
    """Key directories under ``base`` for every fabric process of a run, trusting each other."""
    from nameservice.security.keyring import make_keyring

    return make_keyring(base, {}, ["intermediary-0", "intermediary-1", "producer", "consumer"])


def start_intermediaries(procs: Procs, metrics: list[str] | None = None,
                         keys: dict[str, Path] | None = None
                         ) -> tuple[list[subprocess.Popen], list[str]]:
    """Two ``fabric intermediary`` processes; with ``metrics``, each serves its metrics on
    its own of those addresses (through ``FABRIC_METRICS``); with ``keys`` (``make_keys``),
    each has its key directory and the endpoints carry their keys (``;curve=KEY``)."""
    inters, endpoints = [], []
    for i in range(2):
        env = keys_env(keys, f"intermediary-{i}")
        if metrics:
            env["FABRIC_METRICS"] = metrics[i]
        proc = procs.spawn([FABRIC, "intermediary", "--channel", "bench", "--listen",
                            "127.0.0.1:0", "--events"], env=env)
        endpoints.append(line(proc)["endpoint"])  # the event "listening"
        inters.append(proc)
        if keys and ";curve=" not in endpoints[-1]:
            raise RuntimeError(f"an intermediary with keys advertised {endpoints[-1]}")
    return inters, endpoints


class Scraper:
    """Scrapes ``/metrics`` of ``addresses`` every ``interval`` seconds in a thread, until
    stopped; counts the scrapes that answered."""

    def __init__(self, addresses: list[str], interval: float) -> None:
        import threading

        self.urls = [f"http://{a}/metrics" for a in addresses]
        self.interval = interval
        self.scrapes = 0
        self.bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import urllib.request

        while not self._stop.wait(self.interval):
            for url in self.urls:
                try:
                    with urllib.request.urlopen(url, timeout=5) as reply:
                        self.bytes += len(reply.read())
                    self.scrapes += 1
                except OSError:
                    pass  # not serving yet, or gone

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def run_fabric(count: int, mode: str, rate: int = 0, kill_at: bool = False,
               how: int = signal.SIGKILL, scrape_interval: float | None = None,
               keys: dict[str, Path] | None = None) -> dict:
    """With ``scrape_interval``, every process serves metrics and they are scraped; with
    ``keys`` (``make_keys``), every process has its key directory: CURVE on every socket."""
    metrics = ([f"127.0.0.1:{port}" for port in free_ports(4)]
               if scrape_interval is not None else None)
    scraper = Scraper(metrics, scrape_interval) if metrics else None
    with Procs(__file__) as procs:
        inters, endpoints = start_intermediaries(procs, metrics, keys)
        eps = ",".join(endpoints)
        extra = {"metrics": metrics[2]} if metrics else {}
        consumer = procs.role("fabric-consumer", env=keys_env(keys, "consumer"), endpoints=eps,
                              count=count, mode=mode, **extra)
        line(consumer)
        inter_cpu = sum(proc_cpu_s(p.pid) for p in inters)
        extra = {"metrics": metrics[3]} if metrics else {}
        producer = procs.role("fabric-producer", env=keys_env(keys, "producer"), endpoints=eps,
                              count=count, mode=mode, rate=rate, **extra)
        killed_at = None
        if kill_at:
            line(consumer)  # the consumer reports when 30% of the stream has arrived
            killed_at = now_ns()
            inters[0].send_signal(how)
        result = line(consumer)
        result["killed_at"] = killed_at
        prod = line(producer)
        result["batches_sent"] = prod["stats"]["batches_sent"]
        if not kill_at:  # CPU seconds of the stream, per process kind
            result["cpu"] = {"producer": prod["cpu_s"], "consumer": result["cpu_s"],
                             "intermediaries": sum(proc_cpu_s(p.pid) for p in inters)
                             - inter_cpu}
        if scraper is not None:
            scraper.stop()
            result["scrapes"] = scraper.scrapes
            result["scraped_bytes"] = scraper.bytes
        result["rss"] = {"producer": prod["rss_mb"], "consumer": result["rss_mb"],
                         "intermediary": max(vm_hwm_mb(p.pid) for p in inters if p.poll() is None)}
        return result


def failover_trial(count: int, how: int = signal.SIGKILL) -> dict:
    # A steady 200k msgs/s stream, so that the kill lands mid-stream.
    result = run_fabric(count, "gaps", rate=200_000, kill_at=True, how=how)
    kill = result["killed_at"]
    after = [length for end, length in result["gaps"] if end > kill]
    gap = max(after, default=0)
    # Recovery: from the kill until every message numbered below the highest one delivered
    # before the kill has been delivered (0 if none was missing): the claim round plus the
    # resend of whatever the dead intermediary held.
    arrivals = array.array("q")
    with open(result["arrivals_file"], "rb") as f:
        arrivals.frombytes(f.read())
    os.unlink(result["arrivals_file"])
    before = [i for i, t in enumerate(arrivals) if 0 < t < kill]
    last_before = max(before, default=0)
    recovery = max(0, max(arrivals[:last_before + 1]) - kill)
    # The pause that spans the kill is included: it ends after the kill.
    return {"gap_ms": gap / 1e6, "recovery_ms": recovery / 1e6, "lost": result["lost"],
            "dups": result["dups"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--trials", type=int, default=10,
                        help="failover trials with SIGKILL (a third as many with SIGSTOP; "
                             "0: none)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="throughput runs of each (median reported)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--metrics-cost", action="store_true",
                        help="only the throughput with metrics on and off, interleaved")
    parser.add_argument("--scrape-interval", type=float, default=1.0,
                        help="with --metrics-cost: seconds between scrapes of each process")
    parser.add_argument("--curve", action="store_true",
                        help="also fabric with CURVE on every socket (throughput, latency)")
    parser.add_argument("--metrics", default="", help=argparse.SUPPRESS)
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("--endpoints", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="throughput", help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        roles = {"proxy": lambda: role_proxy(), "plain-push": lambda: role_plain_push(args),
                 "plain-pull": lambda: role_plain_pull(args),
                 "fabric-producer": lambda: asyncio.run(_fabric_producer(args)),
                 "fabric-consumer": lambda: asyncio.run(_fabric_consumer(args))}
        roles[args.role]()
        return
    if args.metrics_cost:
        metrics_cost(args)
        return
    with tempfile.TemporaryDirectory(prefix="fabric-bench-keys-") as tmp:
        report(args, make_keys(tmp) if args.curve else None)


def msgs_s(result: dict, n: int) -> float:
    """Messages per second at the receiver, from its first message to its last."""
    return n / ((result["last"] - result["first"]) / 1e9)


def cpu_us_per_msg(results: list[dict], n: int) -> float:
    """The median over ``results`` of the CPU time all four processes spent per message."""
    return statistics.median(sum(r["cpu"].values()) / n * 1e6 for r in results)


def report(args, keys: dict[str, Path] | None) -> None:
    """The whole benchmark; with ``keys``, fabric with CURVE as well (``"curve"``)."""
    n = args.messages
    plain_rates, fabric_rates, curve_rates, fabs, curves = [], [], [], [], []
    for i in range(args.repeats):  # interleaved, so that all see the same machine load
        plain_rates.append(msgs_s(run_plain(n, "throughput"), n))
        # Fabric with CURVE and without, one after the other, each first in turn.
        order = [False, True] if i % 2 == 0 else [True, False]
        for secured in order if keys else [False]:
            runs, rates = (curves, curve_rates) if secured else (fabs, fabric_rates)
            runs.append(run_fabric(n, "throughput", keys=keys if secured else None))
            rates.append(msgs_s(runs[-1], n))
    plain_rate = statistics.median(plain_rates)
    fabric_rate = statistics.median(fabric_rates)
    print("throughput runs: plain " + ", ".join(f"{r:,.0f}" for r in plain_rates)
          + "; fabric " + ", ".join(f"{r:,.0f}" for r in fabric_rates)
          + ("; fabric with CURVE " + ", ".join(f"{r:,.0f}" for r in curve_rates)
             if keys else ""), file=sys.stderr)
    fab = {"rss": {k: max(f["rss"][k] for f in fabs) for k in fabs[0]["rss"]}}
    plain_lat = run_plain(2000, "latency", rate=1000)
    fabric_lat = run_fabric(2000, "latency", rate=1000)
    curve_lat = run_fabric(2000, "latency", rate=1000, keys=keys) if keys else {}
    failed_over = failover(args.trials) if args.trials else {}
    out = {
        "plain_msgs_s": round(plain_rate),
        "fabric_msgs_s": round(fabric_rate),
        "ratio": round(fabric_rate / plain_rate, 2),
        "plain_latency_p50_us": round(plain_lat["p50_us"], 1),
        "fabric_latency_p50_us": round(fabric_lat["p50_us"], 1),
        "fabric_latency_p99_us": round(fabric_lat["p99_us"], 1),
        **failed_over,
        "peak_rss_mb": {k: round(v, 1) for k, v in fab["rss"].items()},
    }
    if keys:
        curve_rate = statistics.median(curve_rates)
        # Beyond the keys the issue names: p99, every run, and the CPU time per message of
        # all four processes with CURVE and without (a cost that other load barely moves).
        out["curve"] = {
            "fabric_msgs_s": round(curve_rate),
            "ratio": round(curve_rate / fabric_rate, 2),
            "latency_p50_us": round(curve_lat["p50_us"], 1),
            "latency_p99_us": round(curve_lat["p99_us"], 1),
            "runs_msgs_s": [round(r) for r in curve_rates],
            "runs_without_msgs_s": [round(r) for r in fabric_rates],
            "cpu_us_per_msg": round(cpu_us_per_msg(curves, n), 3),
            "cpu_us_per_msg_without": round(cpu_us_per_msg(fabs, n), 3),
            "msgs_per_batch": round(n * len(curves) / sum(r["batches_sent"] for r in curves)),
        }
    out["load_average"] = round(os.getloadavg()[0], 2)
    if args.json:
        print(json.dumps(out))
    else:
        for key, value in out.items():
            print(f"{key:24} {value}")


def failover(count: int) -> dict:
    """``count`` SIGKILL trials and ``count // 3`` (at least one) SIGSTOP trials."""
    trials = [failover_trial(200_000) for _ in range(count)]
    gaps = [t["gap_ms"] for t in trials]
    out = {"failover_gap_ms": {"p50": round(statistics.median(gaps), 1),
                               "max": round(max(gaps), 1)},
           "lost": sum(t["lost"] for t in trials),
           "duplicates": sum(t["dups"] for t in trials)}
    recovery = [t["recovery_ms"] for t in trials]
    print(f"SIGKILL: recovery (kill -> all earlier messages delivered) p50 "
          f"{statistics.median(recovery):.1f} ms, max {max(recovery):.1f} ms", file=sys.stderr)
    hangs = [failover_trial(200_000, signal.SIGSTOP) for _ in range(max(1, count // 3))]
    hang_gaps = [t["gap_ms"] for t in hangs]
    # Beyond the keys the issue asks for: the hang's gap (its target is 500 ms) and its counts.
    out["failover_gap_hang_ms"] = {"p50": round(statistics.median(hang_gaps), 1),
                                   "max": round(max(hang_gaps), 1)}
    out["hang_lost"] = sum(t["lost"] for t in hangs)
    out["hang_duplicates"] = sum(t["dups"] for t in hangs)
    out["recovery_ms"] = {"kill_p50": round(statistics.median(recovery), 1),
                          "hang_p50": round(statistics.median(t["recovery_ms"] for t in hangs), 1)}
    return out


def metrics_cost(args) -> None:
    """The fabric throughput with metrics on and off, interleaved (see module docstring)."""
    n = args.messages
    load_before = os.getloadavg()
    rates: dict[str, list[float]] = {"on": [], "off": []}
    cpu: dict[str, list[float]] = {"on": [], "off": []}  # µs of CPU per message, all processes
    scrapes = scraped = 0
    for i in range(args.repeats):
        for which in (("on", "off") if i % 2 == 0 else ("off", "on")):
            result = run_fabric(n, "throughput", scrape_interval=(
                args.scrape_interval if which == "on" else None))
            rates[which].append(n / ((result["last"] - result["first"]) / 1e9))
            cpu[which].append(sum(result["cpu"].values()) / n * 1e6)
            scrapes += result.get("scrapes", 0)
            scraped += result.get("scraped_bytes", 0)
    on, off = statistics.median(rates["on"]), statistics.median(rates["off"])
    out = {
        "messages": n, "repeats": args.repeats,
        "metrics_on_msgs_s": round(on), "metrics_off_msgs_s": round(off),
        "ratio": round(on / off, 3),
        "runs_on_msgs_s": [round(r) for r in rates["on"]],
        "runs_off_msgs_s": [round(r) for r in rates["off"]],
        "cpu_us_per_msg_on": round(statistics.median(cpu["on"]), 3),
        "cpu_us_per_msg_off": round(statistics.median(cpu["off"]), 3),
        "cpu_ratio": round(statistics.median(cpu["on"]) / statistics.median(cpu["off"]), 3),
        "scrape_interval_s": args.scrape_interval, "scrapes": scrapes,
        "scraped_bytes": scraped,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
    }
    if args.json:
        print(json.dumps(out))
    else:
        for key, value in out.items():
            print(f"{key:24} {value}")


if __name__ == "__main__":
    main()
