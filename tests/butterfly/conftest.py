"""Fixtures for real-process tests of components: a name service and fabric processes on
127.0.0.1, all killed at teardown whatever happened."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from fabric.butterfly.fleet import Fleet, Proc
from fabric.butterfly.scenario import CONSUMER
from nameservice.server.local import LocalCluster

ROOT = str(Path(__file__).resolve().parents[2])


class Deployment:
    """A name service plus fabric processes started through the ``fabric`` command."""

    def __init__(self, tmp: Path, cluster: LocalCluster, fleet: Fleet) -> None:
        self.tmp = tmp
        self.cluster = cluster
        self.fleet = fleet
        self.ns = cluster.ns_arg
        self.channel = f"test-{os.getpid()}-{time.monotonic_ns()}"

    def fabric(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "fabric", *args]

    def intermediary(self, name: str) -> tuple[Proc, str]:
        """Start an intermediary and wait until it is registered; (process, endpoint)."""
        proc = self.fleet.start(name, self.fabric(
            "intermediary", "--channel", self.channel, "--name", name, "--ns", self.ns,
            "--events"))
        _, registered = proc.wait_event("registered", 30)
        return proc, registered["endpoint"]

    def component(self, name: str, target: str, **params) -> Proc:
        argv = self.fabric("component", "run", target, "--name", name, "--events",
                           "--ns", self.ns, "--param", f"channel={self.channel}")
        for key, value in params.items():
            argv += ["--param", f"{key}={value}"]
        return self.fleet.start(name, argv)

    def consumer(self, name: str) -> tuple[Proc, Path]:
        out = self.tmp / f"{name}.bin"
        proc = self.component(name, CONSUMER, out=out)
        proc.wait_event("ready", 30)
        return proc, out

    @staticmethod
    def progress(proc: Proc) -> dict:
        """A consumer's counts: final once it reported them, else its latest progress."""
        return (proc.latest("received") or proc.latest("progress")
                or {"unique": 0, "delivered": 0, "duplicates": 0})


@pytest.fixture
def deployment(tmp_path):
    with LocalCluster(tmp_path / "ns", 1) as cluster, Fleet(ROOT, tmp_path) as fleet:
        cluster.start()
        yield Deployment(tmp_path, cluster, fleet)
