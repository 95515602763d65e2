"""A cluster of name-service daemons on this machine, one process per node.

Used by ``fabric ns local``, the benchmark and the real-process tests: it picks free ports,
gives each node its own data directory, starts ``python -m nameservice.server`` processes,
waits until each has bound its port, and can kill (SIGKILL), stop (SIGTERM) and restart nodes.
``close()`` ends every process it started.
"""
from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from nameservice.errors import Unavailable


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct TCP ports that were free a moment ago."""
    socks, ports = [], []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


class LocalCluster:
    """``nodes`` daemons on ``host`` with data under ``data_dir/node-ID``.

    ``ports``: one per node (default: free ports picked now); each node's control socket gets a
    free port picked now too (``controls``; ``extra_args`` may override it).
    ``secure``: names of the processes that will use the cluster (``"admin"``, ...): every
    node and each of them gets a key directory (``keys[NAME]``; a node's is ``node-ID``), all
    trusting each other, and the nodes run with CURVE on, each with a peer port of its own
    (``peer_ports``; ``member(ID)`` is a node's ``HOST:PORT/PEERPORT``).
    ``election_timeout``: ``LO-HI`` in milliseconds. ``cluster_name``: advertise the nodes with
    zeroconf under this name (default: do not advertise, so test clusters stay out of each
    other's way). ``node_hosts``: each node's own address (nodes on several hosts, e.g. network
    namespaces; the ports are picked on ``host``), and ``wrap(ID, argv)`` the command that
    starts node ID there (``ip netns exec NS ...``).
    """

    def __init__(self, data_dir: str | os.PathLike[str], nodes: int = 3, *,
                 host: str = "127.0.0.1", ports: list[int] | None = None,
                 election_timeout: str = "150-300", extra_args: list[str] | None = None,
                 cluster_name: str | None = None, secure: tuple[str, ...] | None = None,
                 node_hosts: list[str] | None = None,
                 wrap: Callable[[int, list[str]], list[str]] | None = None) -> None:
        if nodes < 1:
            raise ValueError("a cluster needs at least one node")
        # The control sockets' ports are picked with the nodes' own: a node binding "any port"
        # could otherwise take the port picked for a node not started yet.
        # Peer ports too, in the same call: ports picked in two calls may coincide.
        peers = nodes if secure is not None else 0
        picked = free_ports((2 * nodes if not ports else nodes) + peers, host)
        ports = ports or picked[nodes:2 * nodes]
        if len(ports) != nodes:
            raise ValueError(f"{nodes} nodes need {nodes} ports, got {len(ports)}")
        self.data_dir = Path(data_dir)
        self.ids = list(range(1, nodes + 1))
        hosts = node_hosts or [host] * nodes
        if len(hosts) != nodes:
            raise ValueError(f"{nodes} nodes need {nodes} hosts, got {len(hosts)}")
        self.addresses = {i: f"{h}:{port}" for i, h, port in zip(self.ids, hosts, ports)}
        self.controls = {i: f"{h}:{port}" for i, h, port in zip(self.ids, hosts, picked[:nodes])}
        self.wrap = wrap
        self.election_timeout = election_timeout
        self.extra_args = list(extra_args or [])
        self.cluster_name = cluster_name
        self.extra_args += ["--cluster-name", cluster_name] if cluster_name else ["--no-advertise"]
        self.procs: dict[int, subprocess.Popen] = {}
        self.joined: set[int] = set()  # nodes added later: started with --join
        self.host = host
        self.peer_ports: dict[int, int] = {}
        """Node id -> its peer port (secured clusters: the peers' Raft frames apart)."""
        if secure is not None:
            self.peer_ports = dict(zip(self.ids, picked[len(picked) - peers:]))
        self.keys: dict[str, Path] = {}
        if secure is not None:
            from nameservice.security.keyring import make_keyring

            self.keys = make_keyring(self.data_dir / "keys",
                                     {f"node-{i}": a for i, a in self.addresses.items()},
                                     list(secure))

    def member(self, node_id: int) -> str:
        """Node ``node_id``'s member address: ``HOST:PORT``, or ``HOST:PORT/PEERPORT``."""
        peer = self.peer_ports.get(node_id)
        return self.addresses[node_id] + (f"/{peer}" if peer else "")

    @property
    def cluster_arg(self) -> str:
        """The ``--cluster`` value of the nodes it started with: ``ID=MEMBER,...``."""
        return ",".join(f"{i}={self.member(i)}" for i in self.addresses if i not in self.joined)

    @property
    def ns_arg(self) -> str:
        """The ``--ns`` / ``FABRIC_NS`` value: ``HOST:PORT,...``."""
        return ",".join(self.addresses.values())

    def node_dir(self, node_id: int) -> Path:
        """The data directory of a node."""
        return self.data_dir / f"node-{node_id}"

    def add(self, node_id: int) -> str:
        """Make room for node ``node_id``, to be added to the running cluster: its port and
        control port; ``start(node_id)`` then starts it with ``--join``. Its address."""
        if node_id in self.addresses:
            raise ValueError(f"node {node_id} is known already")
        port, control, peer = free_ports(3, self.host)
        if self.peer_ports:
            self.peer_ports[node_id] = peer
        self.ids.append(node_id)
        self.addresses[node_id] = f"{self.host}:{port}"
        self.controls[node_id] = f"{self.host}:{control}"
        self.joined.add(node_id)
        return self.addresses[node_id]

    def forget(self, node_id: int) -> None:
        """Node ``node_id`` was removed from the cluster (and has stopped): leave it out."""
        self.kill(node_id)
        self.ids.remove(node_id)
        self.joined.discard(node_id)
        del self.addresses[node_id], self.controls[node_id]
        self.peer_ports.pop(node_id, None)

    def _membership_args(self, node_id: int) -> list[str]:
        if node_id not in self.joined:
            return ["--cluster", self.cluster_arg]
        others = ",".join(a for i, a in self.addresses.items() if i != node_id)
        return ["--join", others, "--listen", self.member(node_id)]

    def start(self, node_id: int | None = None, timeout: float = 10.0) -> None:
        """Start one node (or every node not running) and wait until each listens."""
        ids = [node_id] if node_id is not None else [i for i in self.ids if not self.running(i)]
        for i in ids:
            self.node_dir(i).mkdir(parents=True, exist_ok=True)
            log = open(self.node_dir(i).with_suffix(".log"), "ab")
            cmd = [sys.executable, "-m", "nameservice.server", "--id", str(i),
                   *self._membership_args(i), "--data-dir", str(self.node_dir(i)),
                   "--election-timeout", self.election_timeout, "--control", self.controls[i],
                   *self.extra_args]
            env = dict(os.environ)
            env.pop("FABRIC_KEYS", None)
            if self.keys:
                env["FABRIC_KEYS"] = str(self.keys[f"node-{i}"])
            try:
                if self.wrap is not None:
                    cmd = self.wrap(i, cmd)
                self.procs[i] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log,
                                                 stdin=subprocess.DEVNULL, env=env)
            finally:
                log.close()
        for i in ids:
            self._wait_listening(i, timeout)

    def _wait_listening(self, node_id: int, timeout: float) -> None:
        proc = self.procs[node_id]
        stdout = proc.stdout
        assert stdout is not None  # started with stdout=PIPE
        deadline = time.monotonic() + timeout
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or proc.poll() is not None:
                raise Unavailable(f"node {node_id} did not start (exit code {proc.poll()}); "
                                  f"see {self.node_dir(node_id).with_suffix('.log')}")
            if select.select([stdout], [], [], min(left, 0.1))[0]:
                chunk = os.read(stdout.fileno(), 1)
                if not chunk:
                    continue
                line += chunk
        if not line.startswith(b"listening"):
            raise Unavailable(f"node {node_id} said {line!r} instead of listening")

    def running(self, node_id: int) -> bool:
        """Whether the node's process is alive."""
        proc = self.procs.get(node_id)
        return proc is not None and proc.poll() is None

    def kill(self, node_id: int, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to a node and, unless it is SIGSTOP/SIGCONT, wait for it to exit."""
        proc = self.procs.get(node_id)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        if sig not in (signal.SIGSTOP, signal.SIGCONT):
            proc.wait(timeout=30)

    def stop(self, timeout: float = 10.0) -> dict[int, int]:
        """SIGTERM every node, wait for them to exit (SIGKILL after ``timeout``); exit codes."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.terminate()
        codes = {}
        for i, proc in self.procs.items():
            try:
                codes[i] = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[i] = proc.wait()
        return codes

    def close(self) -> None:
        """Kill every process still running and release their pipes."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
