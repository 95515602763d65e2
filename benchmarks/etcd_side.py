"""etcd side of the name-service benchmark (``ns_bench.py --vs-etcd``): a 3-member etcd cluster
on 127.0.0.1, its load generator and its failover trials.

Members run with etcd's defaults (heartbeat 100 ms, election 1000 ms, fsync on), each with its
data directory under the directory given. The client is grpc.aio with raw bytes: the few
protobuf messages used (PutRequest, RangeRequest, StatusResponse) are encoded and decoded here,
so no generated code and no protobuf package are needed.

Not a project dependency: ``apt-get install etcd-server`` and ``pip install -e .[bench]``
(grpcio).
"""
from __future__ import annotations

import asyncio
import functools
import os
import platform
import shutil
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from _clients import timed_clients

from nameservice.server.local import free_ports

try:
    import grpc
    import grpc.aio
except ImportError:  # available() says why
    grpc = None

PUT = "/etcdserverpb.KV/Put"
RANGE = "/etcdserverpb.KV/Range"
STATUS = "/etcdserverpb.Maintenance/Status"
HEARTBEAT_MS, ELECTION_MS = 100, 1000  # etcd's defaults, which the members run with
# etcd 3.4 refuses to start on other architectures unless this names runtime.GOARCH.
SUPPORTED_ARCHES = {"x86_64", "amd64", "ppc64le"}
GOARCH = {"aarch64": "arm64", "armv7l": "arm", "i686": "386", "i386": "386"}
# A restarted member is back within a second, not after gRPC's default 1 s+ backoff.
CHANNEL_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 50),
                   ("grpc.min_reconnect_backoff_ms", 50),
                   ("grpc.max_reconnect_backoff_ms", 200)]
PROBE_EVERY_S = 0.005  # as often as fabric's client retries (RETRY_DELAY_S)
PROBE_DEADLINE_S = 1.0


def available() -> str | None:
    """None when grpcio and ``etcd`` are there; else a one-line reason."""
    if grpc is None:
        return "python package grpcio not installed (pip install -e .[bench])"
    if shutil.which("etcd") is None:
        return "etcd not on PATH (apt-get install etcd-server)"
    return None


# --- protobuf, by hand ---------------------------------------------------------------------

def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _bytes_field(number: int, data: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def put_request(key: bytes, value: bytes) -> bytes:
    """An encoded PutRequest (key = 1, value = 2)."""
    return _bytes_field(1, key) + _bytes_field(2, value)


def range_request(key: bytes) -> bytes:
    """An encoded RangeRequest for one key; serializable (7) left false: linearizable."""
    return _bytes_field(1, key)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def decode_fields(data: bytes) -> dict[int, int | bytes]:
    """A protobuf message's fields by number: varints as ints, the rest as bytes (last wins)."""
    fields: dict[int, int | bytes] = {}
    pos = 0
    while pos < len(data):
        tag, pos = _read_varint(data, pos)
        number, wire_type = tag >> 3, tag & 7
        if wire_type == 0:
            fields[number], pos = _read_varint(data, pos)
        elif wire_type == 2:
            length, pos = _read_varint(data, pos)
            fields[number], pos = data[pos:pos + length], pos + length
        elif wire_type in (1, 5):
            size = 8 if wire_type == 1 else 4
            fields[number], pos = data[pos:pos + size], pos + size
        else:
            raise ValueError(f"protobuf wire type {wire_type} not handled")
    return fields


@dataclass(frozen=True)
class Status:
    """The part of a member's StatusResponse the benchmark reads."""

    member_id: int
    leader: int
    term: int
    raft_index: int
    applied_index: int
    version: str


def parse_status(data: bytes) -> Status:
    """Decode a StatusResponse: header (member_id 2), version 2, leader 4, raftIndex 5,
    raftTerm 6, raftAppliedIndex 7."""
    fields = decode_fields(data)
    header = decode_fields(bytes(fields.get(1, b"")))

    def number(where: dict[int, int | bytes], key: int) -> int:
        value = where.get(key, 0)
        return value if isinstance(value, int) else 0

    return Status(member_id=number(header, 2), leader=number(fields, 4),
                  term=number(fields, 6), raft_index=number(fields, 5),
                  applied_index=number(fields, 7),
                  version=bytes(fields.get(2, b"")).decode())


# --- the cluster ---------------------------------------------------------------------------

def _etcd_env() -> dict[str, str]:
    # etcd reads every ETCD_* variable as a flag: none of the caller's may change the members.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
    machine = platform.machine().lower()
    if machine not in SUPPORTED_ARCHES:
        env["ETCD_UNSUPPORTED_ARCH"] = GOARCH.get(machine, machine)
    return env


class EtcdCluster:
    """``members`` etcd members on 127.0.0.1 with data under ``data_dir/NAME``; every member
    is killed on exit. Members are named ``etcd-0``, ``etcd-1``, ..."""

    def __init__(self, data_dir: str | os.PathLike[str], members: int = 3) -> None:
        self.data_dir = Path(data_dir)
        self.names = [f"etcd-{i}" for i in range(members)]
        ports = free_ports(2 * members)
        self.endpoints = {n: f"127.0.0.1:{p}" for n, p in zip(self.names, ports)}
        self.peers = {n: f"http://127.0.0.1:{p}" for n, p in zip(self.names, ports[members:])}
        self.procs: dict[str, subprocess.Popen] = {}
        self.token = f"ns-bench-{os.getpid()}-{time.time_ns()}"

    def _argv(self, name: str) -> list[str]:
        client_url = f"http://{self.endpoints[name]}"
        initial = ",".join(f"{n}={url}" for n, url in self.peers.items())
        argv = ["etcd", "--name", name, "--data-dir", str(self.data_dir / name),
                "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
                "--listen-peer-urls", self.peers[name],
                "--initial-advertise-peer-urls", self.peers[name],
                "--initial-cluster", initial, "--initial-cluster-token", self.token,
                "--initial-cluster-state", "new"]
        # The members die with this process even when it is killed (no __exit__ then).
        guard = ["setpriv", "--pdeathsig", "KILL"] if shutil.which("setpriv") else []
        return guard + argv

    def log_path(self, name: str) -> Path:
        """Where member ``name`` writes its log."""
        return self.data_dir / f"{name}.log"

    def start(self, name: str | None = None) -> None:
        """Start member ``name``, or every member not running (a restart keeps its data)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for n in [name] if name else [n for n in self.names if not self.running(n)]:
            with open(self.log_path(n), "ab") as log:
                self.procs[n] = subprocess.Popen(self._argv(n), stdin=subprocess.DEVNULL,
                                                 stdout=log, stderr=log, env=_etcd_env())

    def running(self, name: str) -> bool:
        """Whether member ``name``'s process is alive."""
        proc = self.procs.get(name)
        return proc is not None and proc.poll() is None

    def kill(self, name: str) -> None:
        """SIGKILL member ``name`` without waiting for it to exit."""
        if self.running(name):
            os.kill(self.procs[name].pid, signal.SIGKILL)

    def wait(self, name: str) -> None:
        """Wait until member ``name``'s process has exited."""
        self.procs[name].wait(timeout=30)

    def close(self) -> None:
        """Kill every member still running."""
        for name in self.procs:
            self.kill(name)
            self.wait(name)

    def tail(self, name: str, chars: int = 1500) -> str:
        """The end of member ``name``'s log."""
        path = self.log_path(name)
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def __enter__(self) -> EtcdCluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# --- asking the members --------------------------------------------------------------------

def open_channels(cluster: EtcdCluster) -> dict[str, grpc.aio.Channel]:
    """One channel per member (inside a running event loop: a channel is bound to it)."""
    return {n: grpc.aio.insecure_channel(ep, options=CHANNEL_OPTIONS)
            for n, ep in cluster.endpoints.items()}


async def close_channels(channels: dict[str, grpc.aio.Channel]) -> None:
    """Close every channel of :func:`open_channels`."""
    await asyncio.gather(*(channel.close() for channel in channels.values()))


async def status(channel: grpc.aio.Channel, timeout: float = 0.5) -> Status:
    """One member's status."""
    call = channel.unary_unary(STATUS)
    return parse_status(await call(b"", timeout=timeout))


async def _statuses(channels: dict[str, grpc.aio.Channel]) -> dict[str, Status]:
    """The members that answered, by name."""
    answers = await asyncio.gather(*(status(c) for c in channels.values()),
                                   return_exceptions=True)
    return {n: a for n, a in zip(channels, answers) if isinstance(a, Status)}


def _whole_leader(statuses: dict[str, Status], members: int) -> str | None:
    """The leader's name when every member answered, all name the same leader and each has
    applied the highest commit index any reports; else None."""
    if len(statuses) < members:
        return None
    leaders = {s.leader for s in statuses.values()}
    top = max(s.raft_index for s in statuses.values())
    if len(leaders) != 1 or 0 in leaders or any(s.applied_index < top
                                                for s in statuses.values()):
        return None
    return next((n for n, s in statuses.items() if s.member_id in leaders), None)


async def wait_whole(cluster: EtcdCluster, channels: dict[str, grpc.aio.Channel],
                     timeout: float = 60.0) -> tuple[str, Status]:
    """Wait until the cluster is whole (see :func:`_whole_leader`); the leader's name and
    status. RuntimeError with the members' logs after ``timeout`` s or when a member died."""
    deadline = time.monotonic() + timeout
    while True:
        statuses = await _statuses(channels)
        leader = _whole_leader(statuses, len(cluster.names))
        if leader is not None:
            return leader, statuses[leader]
        dead = [n for n in cluster.names if not cluster.running(n)]
        if dead or time.monotonic() > deadline:
            logs = "\n".join(f"{n}: {cluster.tail(n)}" for n in dead or cluster.names)
            raise RuntimeError(f"etcd cluster not whole (exited: {dead}):\n{logs}")
        await asyncio.sleep(0.05)


async def leader_and_term(cluster: EtcdCluster) -> tuple[str, int, str]:
    """Once the cluster is whole: the leader's name, its term and the etcd version."""
    channels = open_channels(cluster)
    try:
        leader, leader_status = await wait_whole(cluster, channels)
        return leader, leader_status.term, leader_status.version
    finally:
        await close_channels(channels)


# --- load ----------------------------------------------------------------------------------

async def load(endpoint: str, op: str, clients: int, worker: int, start_at: float,
               duration: float, value: bytes) -> tuple[int, list[float]]:
    """One load process's share of a row: ``clients`` coroutines, each issuing ``op`` ("put"
    or "get": a linearizable Range) on its own key one after another, on one channel to
    ``endpoint``, from ``start_at`` (wall clock) for ``duration`` s. The count and each
    request's latency (s)."""
    async with grpc.aio.insecure_channel(endpoint) as channel:
        put = channel.unary_unary(PUT)
        keys = [b"bench/%d/%d" % (worker, i) for i in range(clients)]
        await asyncio.gather(*(put(put_request(k, value), timeout=30) for k in keys))
        call = put if op == "put" else channel.unary_unary(RANGE)
        encode: Callable[[bytes], bytes] = (
            functools.partial(put_request, value=value) if op == "put" else range_request)
        requests = [functools.partial(call, encode(key), timeout=30) for key in keys]
        latencies = await timed_clients(requests, start_at, duration)
        return len(latencies), latencies


# --- failover ------------------------------------------------------------------------------

async def _first_ack(attempt: Callable[[], Awaitable[bytes]], give_up: float = 60.0) -> None:
    """Return once an attempt succeeds: a new one every ``PROBE_EVERY_S`` s, earlier ones
    left running. A put a follower forwarded to the dead leader waits out its deadline: one
    attempt after another would add up to a deadline to the time measured."""
    async def one() -> bytes:
        return await attempt()

    pending: set[asyncio.Task[bytes]] = set()
    deadline = time.monotonic() + give_up
    next_at = time.monotonic()
    try:
        while time.monotonic() < deadline:
            now = time.monotonic()
            if now >= next_at:  # on the cadence only: an attempt failing fast is not retried
                pending.add(asyncio.create_task(one()))
                next_at = now + PROBE_EVERY_S
            if not pending:
                await asyncio.sleep(next_at - now)
                continue
            done, pending = await asyncio.wait(pending, timeout=max(0.0, next_at - now),
                                               return_when=asyncio.FIRST_COMPLETED)
            if any(task.exception() is None for task in done):
                return
        raise RuntimeError(f"no put acknowledged within {give_up} s of the leader's death")
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


async def run_failover(cluster: EtcdCluster, trials: int) -> list[float]:
    """Failover times (ms): SIGKILL the leader → a put to a surviving member acknowledged;
    then restart the member and wait until the cluster is whole; ``trials`` times."""
    times = []
    channels = open_channels(cluster)
    try:
        for trial in range(trials):
            leader, _ = await wait_whole(cluster, channels)
            await asyncio.sleep(0.3)  # let the followers' election timers settle
            survivor = next(n for n in cluster.names if n != leader)
            put = channels[survivor].unary_unary(PUT)
            await put(put_request(b"failover/warm", b"%d" % trial), timeout=5)
            probe = put_request(b"failover/probe", b"%d" % trial)
            started = time.perf_counter()
            cluster.kill(leader)
            await _first_ack(functools.partial(put, probe, timeout=PROBE_DEADLINE_S))
            times.append((time.perf_counter() - started) * 1e3)
            cluster.wait(leader)
            cluster.start(leader)
    finally:
        await close_channels(channels)
    return times
