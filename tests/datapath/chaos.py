"""A randomized failure test of the data path: a seeded schedule of faults, a history, a checker.

A schedule is drawn from a seed alone (:func:`make_schedule`), so a seed replays the same faults
in the same order with the same durations; only the machine's timing differs. :class:`Chaos`
runs a cluster (producers → 3 intermediaries → consumers, real processes on 127.0.0.1), applies
the faults one at a time while the producers stream, stops everything cleanly and returns a
:class:`History`; :func:`check` turns the consumers' records and the history into a list of
problems (empty: the guarantees held).

Faults (never more than one at a time, so a live intermediary and a live consumer remain):

- ``kill_inter``: SIGKILL an intermediary, start a new one on the same endpoint;
- ``stop_inter``: SIGSTOP an intermediary for 0.2–1.0 s, then SIGCONT;
- ``drain_inter``: SIGTERM an intermediary (it must drain and exit 0), start a new one there;
- ``stop_consumer``: SIGSTOP a consumer for 0.1–1.5 s (below the consumer timeout) or
  2.5–4.0 s (above it: it is declared dead, its work redelivered flagged), then SIGCONT;
- ``kill_consumer``: SIGKILL a consumer, start a new one.
"""
from __future__ import annotations

import dataclasses
import random
import signal
import socket
import subprocess
import time
from collections import defaultdict

from tests.datapath.procs import read_records

KINDS = ("kill_inter", "stop_inter", "drain_inter", "stop_consumer", "kill_consumer")
CONSUMER_TIMEOUT = 2.0  # fabric.timing.Timing.consumer_timeout: a freeze past it is a death


@dataclasses.dataclass(frozen=True)
class Fault:
    """One fault: what, on which slot, for how long, after how long a pause."""

    kind: str
    target: int  # intermediary or consumer slot
    pause: float  # seconds of calm before it
    duration: float  # SIGSTOP length, or downtime before a restart

    def describe(self) -> str:
        what = "intermediary" if self.kind.endswith("inter") else "consumer"
        return f"{self.kind} {what}[{self.target}] for {self.duration:.2f} s"


def make_schedule(seed: int, faults: int, intermediaries: int = 3,
                  consumers: int = 2) -> list[Fault]:
    """The faults of ``seed``: a pure function of its arguments."""
    rng = random.Random(seed)
    schedule = []
    for _ in range(faults):
        kind = rng.choice(KINDS)
        pause = rng.uniform(0.3, 1.5)
        if kind == "stop_inter":
            duration = rng.uniform(0.2, 1.0)
        elif kind == "stop_consumer":
            duration = rng.choice([rng.uniform(0.1, 1.5), rng.uniform(2.5, 4.0)])
        else:
            duration = rng.uniform(0.0, 0.5)
        slots = intermediaries if kind.endswith("inter") else consumers
        schedule.append(Fault(kind, rng.randrange(slots), pause, duration))
    return schedule


@dataclasses.dataclass
class Event:
    """A fault as it happened: start and end on the test's clock (seconds since the start)."""

    fault: Fault
    start: float
    end: float
    victim: str  # the process name it hit
    note: str = ""


@dataclasses.dataclass
class History:
    """What the run did and what came out of it."""

    seed: int
    rate: float
    producer_start: list[float] = dataclasses.field(default_factory=list)
    sent: list[int] = dataclasses.field(default_factory=list)
    events: list[Event] = dataclasses.field(default_factory=list)
    outputs: dict[str, str] = dataclasses.field(default_factory=dict)  # consumer name → file
    victims: set[str] = dataclasses.field(default_factory=set)  # killed, or frozen past timeout
    exits: list[str] = dataclasses.field(default_factory=list)  # processes that did not exit 0
    stats: dict[str, dict] = dataclasses.field(default_factory=dict)

    def around(self, at: float, margin: float = 3.0) -> list[Event]:
        """The events within ``margin`` seconds of ``at``."""
        return [e for e in self.events if e.start - margin <= at <= e.end + margin]

    def schedule_text(self) -> str:
        return "\n".join(f"  t={e.start:6.2f}..{e.end:6.2f} {e.fault.describe()} -> {e.victim}"
                         f"{' (' + e.note + ')' if e.note else ''}" for e in self.events)


def free_port(low: int = 20000, high: int = 32000) -> int:
    """A free TCP port below the ephemeral range, so no outgoing connection can take it while
    an intermediary on it is down (a restart binds the same port)."""
    while True:
        port = random.randrange(low, high)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue


class Chaos:
    """One run: a cluster, a schedule, a history."""

    def __init__(self, cluster, seed: int, faults: int, *, producers: int = 2,
                 consumers: int = 2, rate: float = 25_000) -> None:
        self.cluster = cluster
        self.seed = seed
        self.schedule = make_schedule(seed, faults, 3, consumers)
        self.n_producers = producers
        self.n_consumers = consumers
        self.history = History(seed, rate)
        self.t0 = time.monotonic()
        self.inters: list[subprocess.Popen] = []
        self.ports: list[int] = []
        self.endpoints: list[str] = []
        self.consumers: list[tuple[subprocess.Popen, str]] = []  # slot → (process, name)
        self.names: dict[int, str] = {}  # pid → name
        self.producers: list[subprocess.Popen] = []

    def now(self) -> float:
        return time.monotonic() - self.t0

    def _intermediary(self, slot: int) -> None:
        proc, endpoint = self.cluster.intermediary("--drain-timeout", "10",
                                                   port=self.ports[slot])
        self.names[proc.pid] = f"intermediary[{slot}] pid {proc.pid}"
        if slot < len(self.inters):
            self.inters[slot] = proc
        else:
            self.inters.append(proc)
            self.endpoints.append(endpoint)

    def _consumer(self, slot: int) -> None:
        name = f"consumer{len(self.history.outputs)}"
        proc, out = self.cluster.consumer(self.endpoints, name, "--drain-timeout", "20")
        self.history.outputs[name] = out
        self.names[proc.pid] = name
        if slot < len(self.consumers):
            self.consumers[slot] = (proc, name)
        else:
            self.consumers.append((proc, name))

    def start(self) -> None:
        self.ports = [free_port() for _ in range(3)]
        for slot in range(3):
            self._intermediary(slot)
        for slot in range(self.n_consumers):
            self._consumer(slot)
        self.t0 = time.monotonic()
        for k in range(self.n_producers):
            proc = self.cluster.producer(self.endpoints, k, 0, "--rate", str(self.history.rate),
                                         "--drain-timeout", "30", "--await-links")
            self.history.producer_start.append(self.now())
            self.names[proc.pid] = f"producer{k}"
            self.producers.append(proc)
        from tests.datapath.conftest import read_event
        for k, proc in enumerate(self.producers):
            read_event(proc, 20, f"producer{k}", "ready")  # SIGTERM now drains it

    def _exited(self, proc: subprocess.Popen, name: str, timeout: float) -> str:
        """Wait for ``proc`` to exit; note it in the history unless it exited 0."""
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.history.exits.append(f"{name} did not exit within {timeout} s")
            return ""
        if proc.returncode != 0:
            tail = self.cluster.stderr_of(proc)[-1500:]
            self.history.exits.append(f"{name} exited {proc.returncode}: {tail}")
        return out.decode()

    def apply(self, fault: Fault) -> None:
        time.sleep(fault.pause)
        start = self.now()
        note = ""
        if fault.kind.endswith("inter"):
            proc = self.inters[fault.target]
            victim = self.names[proc.pid]
            if fault.kind == "stop_inter":
                proc.send_signal(signal.SIGSTOP)
                time.sleep(fault.duration)
                proc.send_signal(signal.SIGCONT)
            else:
                if fault.kind == "kill_inter":
                    proc.kill()
                    proc.wait()
                else:
                    proc.send_signal(signal.SIGTERM)
                    out = self._exited(proc, victim, 30)
                    note = f"drained in {self.now() - start:.2f} s"
                    self._stats(victim, out)
                time.sleep(fault.duration)
                self._intermediary(fault.target)
        else:
            proc, victim = self.consumers[fault.target]
            if fault.kind == "stop_consumer":
                proc.send_signal(signal.SIGSTOP)
                time.sleep(fault.duration)
                proc.send_signal(signal.SIGCONT)
                frozen = self.now() - start
                note = f"frozen {frozen:.2f} s"
                # Past the consumer timeout it may be declared dead (flagged redelivery);
                # a margin for the test's own lateness under load.
                if frozen >= CONSUMER_TIMEOUT * 0.9:
                    self.history.victims.add(victim)
            else:
                proc.kill()
                proc.wait()
                self.history.victims.add(victim)
                time.sleep(fault.duration)
                self._consumer(fault.target)
        self.history.events.append(Event(fault, start, self.now(), victim, note))

    def _stats(self, name: str, out: str) -> None:
        from tests.datapath.conftest import events_from
        for stats in events_from(out, "stats"):
            self.history.stats[name] = stats
        for sent in events_from(out, "sent"):
            self.history.sent.append(sent["count"])

    def run(self) -> History:
        """Start, apply every fault, stop everything cleanly; the history."""
        self.start()
        for fault in self.schedule:
            self.apply(fault)
        time.sleep(0.5)
        for proc in self.producers:
            proc.send_signal(signal.SIGTERM)
        for k, proc in enumerate(self.producers):
            self._stats(f"producer{k}", self._exited(proc, f"producer{k}", 60))
        for proc, name in self.consumers:
            proc.send_signal(signal.SIGTERM)
            self._stats(name, self._exited(proc, name, 30))
        for proc in self.inters:
            proc.send_signal(signal.SIGTERM)
            name = self.names[proc.pid]
            self._stats(name, self._exited(proc, name, 30))
        return self.history


def check(history: History) -> list[str]:
    """The guarantees, from the records: every message sent handled at least once; one handled
    twice only if flagged redelivered on every copy but one, that one at a consumer killed or
    frozen past the consumer timeout (or every copy flagged, one at such a consumer); every
    process that should have exited 0 did. Returns the problems found."""
    problems = list(history.exits)
    if len(history.sent) != len(history.producer_start):
        problems.append(f"producers reported {len(history.sent)} 'sent' lines")
        return problems
    copies: dict[int, list[tuple[str, int]]] = defaultdict(list)
    for name, path in history.outputs.items():
        for payload, red in read_records(path):
            copies[payload].append((name, red))
    expected = {(k << 32) | i for k, n in enumerate(history.sent) for i in range(n)}
    lost = sorted(expected - copies.keys())
    extra = sorted(copies.keys() - expected)
    if lost:
        problems.append(f"{len(lost)} messages lost: " + explain(history, lost, copies))
    if extra:
        problems.append(f"{len(extra)} messages handled that were never sent: "
                        + ", ".join(hex(m) for m in extra[:10]))
    bad = []
    for payload, where in copies.items():
        if len(where) < 2:
            continue
        plain = [name for name, red in where if not red]
        at_victim = [name for name, _ in where if name in history.victims]
        if len(plain) > 1 or (plain and plain[0] not in history.victims) or not at_victim:
            bad.append(payload)
    if bad:
        problems.append(f"{len(bad)} messages handled more than once without a consumer's "
                        "death to explain it: " + explain(history, sorted(bad), copies))
    return problems


def explain(history: History, ids: list[int], copies, limit: int = 8) -> str:
    """Which consumers handled ``ids`` (r: flagged redelivered), and the faults around the time
    each was sent (estimated from the producer's pace)."""
    lines = []
    for payload in ids[:limit]:
        k, seq = payload >> 32, payload & 0xFFFFFFFF
        at = history.producer_start[k] + seq / history.rate
        handled = ", ".join(f"{n}{'(r)' if r else ''}" for n, r in copies.get(payload, [])) \
            or "nobody"
        lines.append(f"\n  producer{k} seq {seq} (sent at t≈{at:.2f} s or later): "
                     f"handled by {handled}")
        for e in history.around(at):
            lines.append(f"\n    t={e.start:6.2f}..{e.end:6.2f} {e.fault.describe()} "
                         f"-> {e.victim} {e.note}")
    if len(ids) > limit:
        lines.append(f"\n  ... and {len(ids) - limit} more")
    return "".join(lines)
