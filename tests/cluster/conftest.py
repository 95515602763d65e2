"""Fixtures for the cluster tests: a name service and agents, each a real process on
127.0.0.1 (the five-host tests put them in network namespaces), everything killed at
teardown — including the instances the agents started, found by the cluster's unique
``--ns`` argument on their command lines."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fabric.butterfly.fleet import Fleet, Proc
from fabric.cluster import keys
from fabric.cluster.status import status_from_view
from nameservice.client.sync import SyncNameServiceClient
from nameservice.server.local import LocalCluster
from tests.waiting import wait_for

ROOT = str(Path(__file__).resolve().parents[2])
TTL = 2.0
"""The agents' lease in these tests (seconds)."""
POLL_S = 0.1
"""How often the tests look at the cluster's state or the instances' records."""


def wait(condition, timeout: float, what: str):
    """``wait_for`` at the pace these tests look at the cluster (``POLL_S``)."""
    return wait_for(condition, timeout, what, interval=POLL_S)


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
        self._client: SyncNameServiceClient | None = None

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

    @property
    def client(self) -> SyncNameServiceClient:
        """A client of the test's name service (made on first use; the tests read through it
        rather than starting a ``fabric`` process per look, which would load the machine)."""
        if self._client is None:
            self._client = SyncNameServiceClient(self.ns.split(","))
        return self._client

    def get(self, key: str) -> bytes | None:
        found = self.client.get(key)
        return None if found is None else found.value

    def status(self, network: str) -> dict:
        """What ``fabric network status NETWORK --json`` prints (an empty status once it is
        gone)."""
        kvs = {kv.key.decode(): kv for kv in self.client.range(keys.ROOT)}
        return status_from_view(kvs, network) or {"network": network, "instances": [],
                                                  "running": 0, "settled": False}

    def wait_settled(self, network: str, timeout: float = 60) -> dict:
        """The network's status once every instance runs its current incarnation."""
        def settled() -> dict | None:
            found = self.status(network)
            return found if found["settled"] else None
        return wait_for(settled, timeout, f"network {network} to settle", interval=POLL_S)

    def placements(self, network: str) -> dict[str, tuple[str, int]]:
        """Instance id -> (host, gen) as the status shows it."""
        return {row["id"]: (row["host"], row["gen"]) for row in self.status(network)["instances"]}

    def instance_pids(self) -> list[int]:
        """Every live process started for this cluster (its ``--ns`` is on the command line),
        agents and instances."""
        done = subprocess.run(["pgrep", "-f", "--", f"--ns {self.ns}"], capture_output=True,
                              text=True)
        return [int(pid) for pid in done.stdout.split()]

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def kill_everything(self) -> None:
        for pid in self.instance_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@contextlib.contextmanager
def running(tmp_path: Path, ns: LocalCluster) -> Iterator[Cluster]:
    """Start ``ns``; at the end kill every process of the cluster and stop ``ns``."""
    ns.start()
    (tmp_path / "logs").mkdir()
    fleet = Fleet(ROOT, tmp_path / "logs", env={**os.environ, "PYTHONPATH": ROOT})
    made = Cluster(tmp_path, ns, fleet)
    try:
        yield made
    finally:
        made.close()
        fleet.close()
        made.kill_everything()
        ns.stop()


@pytest.fixture
def cluster(tmp_path):
    """A three-node name service on 127.0.0.1 and no agent yet (``cluster.agent(HOST)``)."""
    with running(tmp_path, LocalCluster(tmp_path / "ns", 3)) as made:
        yield made
