"""Fixtures for real-process tests of stateful components: a name service, intermediaries,
replicas and producers on 127.0.0.1, each a ``fabric`` process, all killed at teardown."""
from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import pytest

from fabric.butterfly.fleet import Fleet, Proc
from fabric.butterfly.scenario import CONSUMER, PRODUCER
from nameservice.control import control_request
from nameservice.server.local import LocalCluster
from tests.waiting import wait_for

ROOT = str(Path(__file__).resolve().parents[2])
COUNTER = "tests.stateful.counting:Counter"


def producer_ids(index: int, count: int) -> range:
    """The payloads the butterfly producer ``index`` sends first (``index << 40 | i``)."""
    return range(index << 40, (index << 40) + count)


class Group:
    """A name service plus the ``fabric`` processes of one stateful component."""

    def __init__(self, tmp: Path, cluster: LocalCluster, fleet: Fleet) -> None:
        self.tmp = tmp
        self.cluster = cluster
        self.fleet = fleet
        self.ns = cluster.ns_arg
        self.channel = f"counted-{os.getpid()}-{time.monotonic_ns()}"
        self.replicas: dict[str, Proc] = {}
        self.controls: dict[str, str] = {}

    def fabric(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "fabric", *args]

    def intermediary(self, name: str, channel: str | None = None) -> Proc:
        """Start an intermediary of the channel (or ``channel``) and wait until it is
        registered."""
        proc = self.fleet.start(name, self.fabric(
            "intermediary", "--channel", channel or self.channel, "--name", name,
            "--ns", self.ns, "--events"))
        proc.wait_event("registered", 30)
        return proc

    def replica(self, name: str, *args: str, data: str | None = None,
                target: str = COUNTER) -> Proc:
        """Start (or restart) replica ``name`` of ``target`` with its data in ``tmp/name`` (or
        ``data``) and wait until it runs."""
        proc = self.fleet.start(name, self.fabric(
            "component", "run", target, "--name", "counter", "--replicas", "3",
            "--data", str(self.tmp / (data or name)), "--input", self.channel,
            "--ns", self.ns, "--events", *args))
        _, control = proc.wait_event("control", 30)
        wait_for(lambda: len(proc.events("replica")) == self._partitions(args), 30,
                 f"{name}'s replicas to run")
        self.replicas[name] = proc
        self.controls[name] = control["endpoint"]
        return proc

    @staticmethod
    def _partitions(args: tuple[str, ...]) -> int:
        return int(args[args.index("--partitions") + 1]) if "--partitions" in args else 1

    def producer(self, name: str, index: int, messages: int, rate: int) -> Proc:
        return self.fleet.start(name, self.fabric(
            "component", "run", PRODUCER, "--name", name, "--events", "--ns", self.ns,
            "--param", f"channel={self.channel}", "--param", f"index={index}",
            "--param", f"messages={messages}", "--param", f"rate={rate}"))

    def consumer(self, name: str, channel: str) -> Proc:
        """Start a butterfly consumer of ``channel`` (it counts unique ids and duplicates)."""
        proc = self.fleet.start(name, self.fabric(
            "component", "run", CONSUMER, "--name", name, "--events", "--ns", self.ns,
            "--param", f"channel={channel}", "--param", f"out={self.tmp / (name + '.bin')}"))
        proc.wait_event("ready", 30)
        return proc

    def status(self, name: str) -> dict | None:
        """Replica ``name``'s status (its one partition), None if it does not answer."""
        found = self.status_all(name)
        return None if found is None else found[0]

    def status_all(self, name: str) -> list[dict] | None:
        """Replica ``name``'s status of each of its partitions, None if it does not answer."""
        try:
            answer = asyncio.run(control_request(self.controls[name], "status", timeout=1))
        except Exception:  # down, stopped, busy: the caller waits
            return None
        return answer["replicas"]

    def live_statuses(self) -> dict[str, dict]:
        out = {}
        for name, proc in self.replicas.items():
            if proc.alive:
                status = self.status(name)
                if status is not None:
                    out[name] = status
        return out

    def leader(self, timeout: float = 30, but: str | None = None) -> str:
        """The replica that leads (not ``but``), once exactly one of the live ones does."""
        def one() -> str | None:
            leaders = [n for n, s in self.live_statuses().items()
                       if s["role"] == "leader" and n != but]
            return leaders[0] if len(leaders) == 1 else None
        return wait_for(one, timeout, "one leader")

    def wait_voters(self, count: int, timeout: float = 30) -> None:
        wait_for(lambda: any(len(s.get("voters", ())) == count and not s["learners"]
                             for s in self.live_statuses().values()), timeout,
                 f"{count} voters")

    def wait_state(self, count: int, total: int, names: list[str], timeout: float = 60
                   ) -> dict[str, dict]:
        """Wait until every replica in ``names`` applied ``count`` messages summing to
        ``total``; their statuses."""
        def done() -> dict[str, dict] | None:
            statuses = {n: self.status(n) for n in names}
            if all(s is not None and s["state"] == {"count": count, "sum": total}
                   for s in statuses.values()):
                return statuses  # type: ignore[return-value]
            return None
        return wait_for(done, timeout, f"{names} to apply {count} messages")


@pytest.fixture
def group(tmp_path):
    with LocalCluster(tmp_path / "ns", 1) as cluster, Fleet(ROOT, tmp_path) as fleet:
        cluster.start()
        yield Group(tmp_path, cluster, fleet)
