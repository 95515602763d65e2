"""Fixtures for the cluster tests: a name service and agents, each a real process on
127.0.0.1 (the five-host tests put them in network namespaces), everything killed at
teardown — including the instances the agents started, found by the cluster's unique
``--ns`` argument on their command lines."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fabric.butterfly.fleet import Fleet, Proc
from nameservice.server.local import LocalCluster
from tests.waiting import wait_for

ROOT = str(Path(__file__).resolve().parents[2])
TTL = 2.0
"""The agents' lease in these tests (seconds)."""


def fabric(*args: str) -> list[str]:
    return [sys.executable, "-m", "fabric", *args]


class Cluster:
    """A name service and the agents of a test cluster."""

    def __init__(self, tmp: Path, ns: LocalCluster, fleet: Fleet) -> None:
        self.tmp = tmp
        self.names = ns
        self.ns = ns.ns_arg
        self.fleet = fleet
        self.agents: dict[str, Proc] = {}

    def agents_up(self, *hosts: str) -> None:
        """Start the agents of ``hosts`` together and wait until each registered."""
        started = [self.agent(host, wait=False) for host in hosts]
        for proc in started:
            proc.wait_event("agent", 30)

    def agent(self, host: str, *args: str, command: list[str] | None = None,
              ttl: float = TTL, wait: bool = True) -> Proc:
        """Start (or restart) the agent of ``host`` and wait until it registered."""
        data = self.tmp / host
        data.mkdir(exist_ok=True)
        argv = fabric("agent", "--name", host, "--ns", self.ns, "--data", str(data),
                      "--ttl", str(ttl), "--drain-timeout", "5", "--events", *args)
        proc = self.fleet.start(f"agent-{host}-{len(self.fleet.procs)}",
                                [*(command or []), *argv])
        if wait:
            proc.wait_event("agent", 30)
        self.agents[host] = proc
        return proc

    def cli(self, *args: str, timeout: float = 60, check: bool = True
            ) -> subprocess.CompletedProcess:
        done = subprocess.run(fabric(*args, "--ns", self.ns), capture_output=True, text=True,
                              timeout=timeout, cwd=ROOT)
        if check and done.returncode != 0:
            raise AssertionError(f"fabric {' '.join(args)} exited {done.returncode}: "
                                 f"{done.stderr[-2000:]}")
        return done

    def deploy(self, text: str, *, wait: float = 0) -> dict:
        path = self.tmp / "network.toml"
        path.write_text(text)
        done = self.cli("deploy", str(path), "--json", *(("--wait", str(wait)) if wait else ()),
                        timeout=wait + 60)
        return json.loads(done.stdout)

    def status(self, network: str) -> dict:
        return json.loads(self.cli("network", "status", network, "--json").stdout)

    def wait_settled(self, network: str, timeout: float = 60) -> dict:
        """The network's status once every instance runs its current incarnation."""
        def settled() -> dict | None:
            found = self.status(network)
            return found if found["settled"] else None
        return wait_for(settled, timeout, f"network {network} to settle")

    def placements(self, network: str) -> dict[str, tuple[str, int]]:
        """Instance id -> (host, gen) as the status shows it."""
        return {row["id"]: (row["host"], row["gen"]) for row in self.status(network)["instances"]}

    def instance_pids(self) -> list[int]:
        """Every live process started for this cluster (its ``--ns`` is on the command line),
        agents and instances."""
        done = subprocess.run(["pgrep", "-f", "--", f"--ns {self.ns}"], capture_output=True,
                              text=True)
        return [int(pid) for pid in done.stdout.split()]

    def kill_everything(self) -> None:
        for pid in self.instance_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def cluster(tmp_path):
    """A three-node name service on 127.0.0.1 and no agent yet (``cluster.agent(HOST)``)."""
    ns = LocalCluster(tmp_path / "ns", 3)
    ns.start()
    (tmp_path / "logs").mkdir()
    fleet = Fleet(ROOT, tmp_path / "logs", env={**os.environ, "PYTHONPATH": ROOT})
    made = Cluster(tmp_path, ns, fleet)
    try:
        yield made
    finally:
        fleet.close()
        made.kill_everything()
        ns.stop()
