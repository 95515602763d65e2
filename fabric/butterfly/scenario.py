"""The butterfly failover scenario, with real processes on this machine.

    3 name-service nodes, 2 intermediaries (a, b), 2 producers, 2 consumers on channel
    "butterfly"; while the producers send, in turn:
    (a) SIGKILL intermediary a
    (b) start a again on a different port (the moved object): every port follows it
    (c) drain intermediary b
    (d) SIGKILL the name-service leader: the data path keeps flowing while it elects
    (e) once every message is delivered, drain every process

Each step waits for the previous one's effect (with a deadline) and for the delivered count
to reach its share of the messages, so the events are spread over the run. The result is
computed by :mod:`fabric.butterfly.report` from the consumers' record files.

``secure``: CURVE on every socket. Every process gets a key directory of its own, all made
before anything starts and all trusting each other (``IDENTITIES``; the nodes' are
``node-ID``; an intermediary started again keeps its identity's), given as ``FABRIC_KEYS``;
the scenario's own name-service and control requests (and ``fabric drain``) use
``butterfly``'s. Just before a process is stopped or killed, the scenario asks for its status
and keeps what it says of its security (for the nodes: whenever it asks them who leads).
"""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fabric.butterfly import report
from fabric.butterfly.fleet import Fleet, Proc
from fabric.butterfly.progress import Progress

CHANNEL = "butterfly"
# The components, by module: they run from an installed package, from any directory.
PRODUCER = "fabric.butterfly.producer:main"
CONSUMER = "fabric.butterfly.consumer:main"
# The delivered share of the messages at which each event happens.
TRIGGERS = {"a": 0.15, "b": 0.30, "c": 0.45, "d": 0.60}
START_TIMEOUT = 30.0
STEP_TIMEOUT = 30.0
SCENARIO = "butterfly"
"""The scenario's own identity, for its requests, with ``secure``."""
IDENTITIES = (SCENARIO, "intermediary-a", "intermediary-b", "producer-1", "producer-2",
              "consumer-1", "consumer-2")
"""One key pair each, with ``secure`` (the name-service nodes get theirs too)."""
STATUS_TIMEOUT = 2.0


class ScenarioError(Exception):
    """The scenario could not be run to the end (a process did not start or stop in time)."""


@dataclass
class Options:
    """What to run: ``messages`` in total over two producers, each sending ``rate`` msgs/s
    (0: ``messages`` spread over about ``duration`` seconds)."""

    messages: int = 100_000
    rate: float = 0.0
    duration: float = 10.0
    drain_timeout: float = 10.0
    work_dir: Path | None = None
    log_level: str = "info"  # every process's (their logs are NAME.log in the work directory)
    log_format: str = "text"
    secure: bool = False  # CURVE on every socket, one key pair per process

    def producer_rate(self) -> float:
        return self.rate or max(100.0, self.messages / 2 / self.duration)


@dataclass
class Outcome:
    """What happened: the result (``report.FIELDS``), the events, the per-intermediary timeline,
    the drain outcome of every process, and where the logs are."""

    result: dict[str, Any]
    events: list[tuple[float, str]] = field(default_factory=list)
    timeline: dict[str, list[int]] = field(default_factory=dict)
    intermediaries: dict[str, str] = field(default_factory=dict)  # endpoint -> name
    exits: dict[str, int] = field(default_factory=dict)
    start: float = 0.0
    work_dir: str = ""
    stalls: int = 0  # times a process saw itself frozen (the host stalled it)


class Scenario:
    """Runs the scenario once; :meth:`run` returns an :class:`Outcome`."""

    def __init__(self, options: Options, progress: Progress) -> None:
        self.options = options
        self.progress = progress
        self.events: list[tuple[float, str]] = []
        self.intermediaries: dict[str, str] = {}
        self.exits: dict[str, int] = {}
        self.start = time.time()
        self._timeline: dict[str, list[int]] = {}
        self.keys: dict[str, Path] = {}  # identity -> key directory (``secure`` only)
        self.security: dict[str, dict[str, Any]] = {}  # process -> its status's "security"

    # -- helpers ----------------------------------------------------------------------------

    def _event(self, text: str) -> float:
        at = time.time()
        self.events.append((at, text))
        self.progress.event(text)
        return at

    def _fabric(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "fabric", "--log-level", self.options.log_level,
                "--log-format", self.options.log_format, *args]

    def _delivered(self) -> int:
        total = 0
        for name in ("consumer-1", "consumer-2"):
            proc = self.fleet.procs[name]
            counts = proc.latest("received") or proc.latest("progress")
            total += counts["unique"] if counts else 0
        return total

    def _env(self, identity: str) -> dict[str, str]:
        """The variables of a process running as ``identity``: its key directory, if secure."""
        return {"FABRIC_KEYS": str(self.keys[identity])} if self.keys else {}

    def _keep_security(self, name: str, label: str = "") -> None:
        """With keys: ask ``name`` for its status over its control socket and keep its
        ``security`` (as ``label``, default ``name``); a process that does not answer is
        recorded as such."""
        if not self.keys:
            return
        from nameservice.control import control_request

        control = self.fleet.procs[name].latest("control")
        found: dict[str, Any] = {"mode": "?", "error": "no control socket announced"}
        if control is not None:
            try:
                status = asyncio.run(control_request(control["endpoint"], "status",
                                                     STATUS_TIMEOUT))
                found = status.get("security", {"mode": "?", "error": "no security status"})
            except Exception as exc:  # reported, never a reason to stop the scenario
                found = {"mode": "?", "error": str(exc) or type(exc).__name__}
        self.security[label or name] = found

    def _wait(self, condition, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            self.progress.update(self._delivered())
            if value:
                return value
            if time.monotonic() > deadline:
                raise ScenarioError(f"timed out after {timeout:.0f} s waiting for {what}")
            for name, proc in self.fleet.procs.items():
                if name in self._must_live and not proc.alive():
                    raise ScenarioError(f"{proc.name} exited with code {proc.popen.poll()}; "
                                        f"{proc.log_tail()}")
            time.sleep(0.02)

    def _wait_delivered(self, share: float) -> None:
        want = int(self.options.messages * share)
        self._wait(lambda: self._delivered() >= want, STEP_TIMEOUT + self.options.duration,
                   f"{want} messages delivered")

    # -- processes --------------------------------------------------------------------------

    def _intermediary(self, name: str, avoid: str = "") -> tuple[Proc, str, float]:
        """Start an intermediary on a free port (never the one of ``avoid``: the kernel may
        hand out a port again); wait until it is registered. Its process, data endpoint and
        when it began registering."""
        while True:
            proc = self.fleet.start(name, self._fabric(
                "intermediary", "--channel", CHANNEL, "--listen", "127.0.0.1:0", "--name",
                name, "--ns", self.ns, "--events"), self._env(name))
            _, info = proc.wait_event("registered", START_TIMEOUT)
            if info["endpoint"] != avoid:
                break
            proc.kill()
        self._must_live.add(name)
        self.intermediaries[info["endpoint"]] = name
        return proc, info["endpoint"], info["began"]

    def _component(self, name: str, target: str, **params: Any) -> Proc:
        argv = self._fabric("component", "run", target, "--name", name, "--ns", self.ns,
                            "--drain-timeout", str(self.options.drain_timeout), "--events")
        for key, value in params.items():
            argv += ["--param", f"{key}={value}"]
        self._must_live.add(name)
        return self.fleet.start(name, argv, self._env(name))

    def _stop(self, name: str, *, how: int = signal.SIGTERM, timeout: float | None = None) -> float:
        """SIGTERM (drain) ``name`` and wait for its exit; the milliseconds it took."""
        proc = self.fleet.procs[name]
        self._keep_security(name)
        self._must_live.discard(name)
        began = time.monotonic()
        proc.signal(how)
        code = proc.wait(timeout or self.options.drain_timeout + 10)
        self.exits[name] = code
        if code != 0:
            raise ScenarioError(f"{name} exited with code {code} when drained; {proc.log_tail()}")
        return (time.monotonic() - began) * 1000

    def _drain_by_name(self, name: str) -> tuple[float, float]:
        """Run ``fabric drain NAME`` and wait for the process to exit 0; the drain's own
        duration (its report) and the whole command's, in milliseconds."""
        proc = self.fleet.procs[name]
        self._keep_security(name)
        self._must_live.discard(name)
        began = time.monotonic()
        done = subprocess.run(
            self._fabric("drain", name, "--ns", self.ns,
                         "--timeout", str(self.options.drain_timeout + 5)),
            capture_output=True, timeout=self.options.drain_timeout + 30, cwd=self.fleet.cwd,
            env={**self.fleet.env, **self._env(SCENARIO)})
        command_ms = (time.monotonic() - began) * 1000
        if done.returncode != 0:
            raise ScenarioError(f"fabric drain {name} exited {done.returncode}: "
                                f"{done.stderr.decode(errors='replace').strip()}")
        code = proc.wait(self.options.drain_timeout + 10)
        self.exits[name] = code
        if code != 0:
            raise ScenarioError(f"{name} exited with code {code} after its drain; "
                                f"{proc.log_tail()}")
        report = proc.latest("drained") or {}
        return float(report.get("elapsed_ms", command_ms)), command_ms

    # -- the scenario -----------------------------------------------------------------------

    def run(self) -> Outcome:
        """Run every step; processes are gone when it returns (or raises)."""
        from nameservice.security.context import configure
        from nameservice.server.local import LocalCluster

        work = self.options.work_dir or Path(tempfile.mkdtemp(prefix="fabric-butterfly-"))
        work.mkdir(parents=True, exist_ok=True)
        self._must_live: set[str] = set()
        # Every process's keys (or none) are the scenario's to give.
        env = {k: v for k, v in os.environ.items() if k not in ("FABRIC_NS", "FABRIC_KEYS")}
        node_logs = ["--log-level", self.options.log_level,
                     "--log-format", self.options.log_format]
        with LocalCluster(work / "ns", 3, extra_args=node_logs,
                          secure=IDENTITIES if self.options.secure else None) as cluster, \
                Fleet(os.getcwd(), work, env) as fleet:
            self.fleet = fleet
            self.keys = cluster.keys
            configure(self.keys[SCENARIO] if self.keys else None)
            try:
                if self.keys:
                    self._event(f"keys: one CURVE key pair per process, in "
                                f"{work / 'ns' / 'keys'}")
                cluster.start(timeout=START_TIMEOUT)
                self.ns = cluster.ns_arg
                self._event(f"name service: 3 nodes at {self.ns}")
                result = self._steps(cluster, work)
            finally:
                configure(None)
        return Outcome(result=result, events=self.events, intermediaries=self.intermediaries,
                       exits=self.exits, start=self.start, work_dir=str(work),
                       timeline=self._timeline, stalls=count_stalls(work))

    def _steps(self, cluster: Any, work: Path) -> dict[str, Any]:
        opts = self.options
        _, endpoint_a, _ = self._intermediary("intermediary-a")
        _, endpoint_b, _ = self._intermediary("intermediary-b")
        self._event(f"intermediaries: a at {endpoint_a}, b at {endpoint_b}")
        for i in (1, 2):
            self._component(f"consumer-{i}", CONSUMER, out=work / f"consumer-{i}.bin")
        for i in (1, 2):
            self.fleet.procs[f"consumer-{i}"].wait_event("ready", START_TIMEOUT)
        per_producer = opts.messages // 2
        rate = opts.producer_rate()
        for i in (1, 2):
            self._component(f"producer-{i}", PRODUCER, index=i,
                            messages=per_producer if i == 1 else opts.messages - per_producer,
                            rate=rate)
        self._event(f"2 consumers, 2 producers: {opts.messages:,} messages at "
                    f"{2 * rate:,.0f} msgs/s")

        self._wait_delivered(TRIGGERS["a"])
        self._keep_security("intermediary-a", "intermediary-a-killed")
        kill_at = self._event("(a) SIGKILL intermediary a")
        self._must_live.discard("intermediary-a")
        self.fleet.procs["intermediary-a"].kill()

        self._wait_delivered(TRIGGERS["b"])
        self.intermediaries[endpoint_a] = "intermediary-a (killed)"
        self._event("(b) start intermediary a again, on another port")
        killed = self.fleet.procs.pop("intermediary-a")
        killed.name = "intermediary-a-killed"
        self.fleet.procs[killed.name] = killed
        _, endpoint_a2, registered_at = self._intermediary("intermediary-a", avoid=endpoint_a)
        self._event(f"    a registered at {endpoint_a2}")
        followed = self._wait(lambda: self._adopted(endpoint_a2), STEP_TIMEOUT,
                              f"every port to use {endpoint_a2}")
        reresolve_ms = max(0.0, (max(followed) - registered_at) * 1000)
        self._event(f"    every producer and consumer uses it {reresolve_ms:.1f} ms after "
                    "it began registering")

        self._wait_delivered(TRIGGERS["c"])
        self._event("(c) drain intermediary b: fabric drain intermediary-b")
        drain_ms, command_ms = self._drain_by_name("intermediary-b")
        self._event(f"    b drained in {drain_ms:.0f} ms and exited 0 ({command_ms:.0f} ms "
                    "for the whole command)")

        self._wait_delivered(TRIGGERS["d"])
        leader = self._wait(lambda: self._leader(cluster, quiet=True), STEP_TIMEOUT,
                            "a name-service leader")
        before = self._delivered()
        self._event(f"(d) SIGKILL the name-service leader (node {leader})")
        cluster.kill(leader)
        total = self.options.messages
        if before >= total:
            # A slow machine: the producers were done before the kill (the steps wait for
            # shares of the messages, not for time). Nothing is left to show delivery going on.
            self._event("    every message was delivered before the kill")
        else:
            self._wait(lambda: self._delivered() > before, STEP_TIMEOUT,
                       "delivery to go on without the old leader")
        new_leader = self._wait(lambda: self._leader(cluster, quiet=True), STEP_TIMEOUT,
                                "a new name-service leader")
        self._event(f"    delivery went on; node {new_leader} leads now")

        self._wait(lambda: self._delivered() >= opts.messages,
                   STEP_TIMEOUT + opts.duration * 2, "every message to be delivered")
        self._event("(e) every message delivered: drain every process")
        for name in ("producer-1", "producer-2", "consumer-1", "consumer-2", "intermediary-a"):
            ms = self._stop(name)
            self._event(f"    {name} drained in {ms:.0f} ms")
        self._stop_name_service(cluster)
        return self._result(work, kill_at, reresolve_ms, drain_ms)

    def _stop_name_service(self, cluster: Any) -> None:
        """SIGTERM the running nodes one at a time, the leader first (it hands its leadership
        over before it exits); each must exit 0."""
        running = [i for i in cluster.ids if cluster.running(i)]
        leader = self._leader(cluster, quiet=True)
        for node in sorted(running, key=lambda i: i != leader):
            began = time.monotonic()
            cluster.kill(node, signal.SIGTERM)
            code = cluster.procs[node].returncode
            self._event(f"    name-service node {node}{' (leader)' if node == leader else ''} "
                        f"stopped in {(time.monotonic() - began) * 1000:.0f} ms, exit code {code}")
            if code != 0:
                raise ScenarioError(f"name-service node {node} exited with code {code}; see "
                                    f"{cluster.node_dir(node).with_suffix('.log')}")

    def _adopted(self, endpoint: str) -> list[float] | None:
        """When each port's connection to ``endpoint`` was up; None until all four were."""
        times = []
        for name in ("producer-1", "producer-2", "consumer-1", "consumer-2"):
            added = [found["at"] for _, found in self.fleet.procs[name].events("connected")
                     if endpoint in found["endpoints"]]
            if not added:
                return None
            times.append(added[-1])
        return times

    def _leader(self, cluster: Any, quiet: bool = False) -> int | None:
        from nameservice.client import NameServiceClient

        async def ask() -> int | None:
            alive = [a for i, a in cluster.addresses.items() if cluster.running(i)]
            found = None
            async with NameServiceClient(alive, timeout=2.0) as client:
                for address in alive:
                    try:
                        status = await client.status(address, timeout=1.0)
                    except Exception:
                        continue
                    if self.keys:  # every node is asked, and its security kept
                        self.security[f"node-{status['id']}"] = status.get(
                            "security", {"mode": "?", "error": "no security status"})
                    if status.get("role") == "leader" and found is None:
                        found = int(status["id"])
                        if not self.keys:
                            break
            return found

        leader = asyncio.run(ask())
        if leader is None and not quiet:
            raise ScenarioError("no name-service leader found")
        return leader

    def _result(self, work: Path, kill_at: float, reresolve_ms: float,
                drain_ms: float) -> dict[str, Any]:
        sent = {}
        for i in (1, 2):
            info = self.fleet.procs[f"producer-{i}"].latest("sent")
            if info is None:
                raise ScenarioError(f"producer-{i} did not say how much it sent")
            sent[info["index"]] = info["count"]
        deliveries: list[report.Delivery] = []
        for i in (1, 2):
            received = self.fleet.procs[f"consumer-{i}"].latest("received")
            if received is None:
                raise ScenarioError(f"consumer-{i} did not report what it received")
            vias = {int(k): v for k, v in received["vias"].items()}
            deliveries += report.read_deliveries((work / f"consumer-{i}.bin").read_bytes(), vias)
        self._timeline = report.timeline(deliveries, self.start)
        result: dict[str, Any] = report.summarize(
            sent, deliveries, kill_at=kill_at, reresolve_ms=reresolve_ms, drain_ms=drain_ms,
            secure=bool(self.keys))
        if self.keys:
            result["security"] = report.security_summary(self.security)
        return result



def count_stalls(work: Path) -> int:
    """How many times the processes of a run logged that they had been frozen (their own
    timers fired far too late: the host stalled them, e.g. under heavy load)."""
    total = 0
    for log in work.glob("*.log"):
        with open(log, errors="replace") as f:
            total += sum("frozen" in line for line in f)
    return total
