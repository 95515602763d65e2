"""A secured deployment for real-process tests, and the outsiders that try to get in.

``Secured``: three name-service nodes, an intermediary, a producer and a consumer, every one
with keys that trust each other (``LocalCluster(secure=...)``), messages flowing. This test
process is ``admin`` (a trusted key) except inside :func:`acting_as`. The outsiders: a process
with no keys, and a ``stranger`` with a pair of its own that trusts the servers' keys but is
trusted by none of them; and ``misled``, admin's own pair given certificates of other keys for
the nodes' addresses.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from fabric.butterfly.fleet import Fleet, Proc
from fabric.butterfly.scenario import CONSUMER, PRODUCER
from nameservice.client import NameServiceClient
from nameservice.control import control_request, process_name
from nameservice.names import Endpoint, Names
from nameservice.security.context import configure, split_endpoint
from nameservice.security.handshakes import parse_event
from nameservice.security.keys import KeyPair, generate, load_keys
from nameservice.security.sockets import secure_client
from nameservice.server.local import LocalCluster
from tests.waiting import wait_for

ROOT = str(Path(__file__).resolve().parents[2])
CHANNEL = "guarded"
PRODUCER_INDEX = 1
NO_KEY, STRANGER = "no-key", "unlisted-key"
OUTSIDERS = (NO_KEY, STRANGER)
REFUSAL = {NO_KEY: "refused: the node uses another security mechanism",
           STRANGER: "refused: the node refused this process's key"}
"""What the name-service client says to each outsider."""
COUNTERS = {NO_KEY: ("handshake_refused_mechanism", "handshake_failed_other"),
            STRANGER: ("zap_refused_unknown_key",)}
"""The server's counters of each outsider's refusals. A keyless peer is counted as refused
for its mechanism when its greeting reached the server, as a handshake cut short when it saw
the mismatch first and hung up (a race; nameservice/security/handshakes.py)."""
_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
           | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)


@dataclass
class Secured:
    tmp: Path
    cluster: LocalCluster
    fleet: Fleet
    intermediary: Proc
    producer: Proc
    consumer: Proc
    data_endpoint: str  # as registered: tcp://HOST:PORT;curve=KEY
    controls: dict[str, str] = field(default_factory=dict)  # process name -> its endpoint
    dirs: dict[str, Path | None] = field(default_factory=dict)  # outsider -> its key dir
    stranger: KeyPair | None = None

    @property
    def ns(self) -> str:
        return self.cluster.ns_arg

    def node_log(self, node_id: int) -> Path:
        return self.cluster.node_dir(node_id).with_suffix(".log")

    def admin(self, timeout: float = 10.0) -> NameServiceClient:
        return NameServiceClient(self.ns, timeout=timeout)

    async def node_security(self, node_id: int) -> dict:
        async with self.admin() as ns:
            return (await ns.status(self.cluster.addresses[node_id], timeout=5))["security"]

    async def process_security(self, name: str) -> dict:
        return (await control_request(self.controls[name], "status", 10))["security"]

    async def channel_entries(self) -> list[Endpoint]:
        async with self.admin() as ns:
            return await Names(ns).resolve(f"channel/{CHANNEL}")


def _stranger_dir(tmp: Path, admin_dir: Path) -> tuple[Path, KeyPair]:
    """A pair of its own, trusting everything admin trusts, trusted by nobody."""
    directory = tmp / "stranger"
    pair = generate(directory, "stranger")
    shutil.copytree(admin_dir / "trusted", directory / "trusted")
    return directory, pair


def _misled_dir(tmp: Path, admin_dir: Path, cluster: LocalCluster) -> Path:
    """Admin's own pair, but certificates of other keys for the nodes' addresses."""
    directory = tmp / "misled"
    (directory / "trusted").mkdir(parents=True, mode=0o700)
    for suffix in (".key", ".key_secret"):
        shutil.copy2(admin_dir / f"admin{suffix}", directory / f"admin{suffix}")
    for node_id, address in cluster.addresses.items():
        generate(tmp / "impostors" / str(node_id), f"node-{node_id}", address)
        shutil.copy2(tmp / "impostors" / str(node_id) / f"node-{node_id}.key",
                     directory / "trusted" / f"node-{node_id}.key")
    return directory


async def _controls(ns_arg: str, names: list[str]) -> dict[str, str]:
    async with NameServiceClient(ns_arg, timeout=10) as client:
        registry = Names(client)
        return {name: (await registry.resolve(process_name(name)))[0].endpoint
                for name in names}


@contextlib.contextmanager
def deployment(tmp: Path) -> Iterator[Secured]:
    """Start it all and wait for messages to flow; every process is killed at the end."""
    with LocalCluster(tmp / "ns", 3, secure=("admin", "inter", "prod", "cons")) as cluster, \
            Fleet(ROOT, tmp, {k: v for k, v in os.environ.items()
                              if k != "FABRIC_KEYS"}) as fleet:
        cluster.start()
        configure(cluster.keys["admin"])

        def fabric(name: str, keys: str, *args: str) -> Proc:
            return fleet.start(name, [sys.executable, "-m", "fabric", *args, "--name", name,
                                      "--ns", cluster.ns_arg, "--keys", str(cluster.keys[keys]),
                                      "--events"])

        def component(name: str, keys: str, target: str, **params: object) -> Proc:
            args = ["component", "run", target, "--param", f"channel={CHANNEL}"]
            for key, value in params.items():
                args += ["--param", f"{key}={value}"]
            return fabric(name, keys, *args)

        intermediary = fabric("int", "inter", "intermediary", "--channel", CHANNEL)
        _, registered = intermediary.wait_event("registered", 30)
        consumer = component("cons", "cons", CONSUMER, out=tmp / "cons.bin")
        consumer.wait_event("ready", 30)
        producer = component("prod", "prod", PRODUCER, index=PRODUCER_INDEX, rate=300)
        secured = Secured(tmp, cluster, fleet, intermediary, producer, consumer,
                          registered["endpoint"])
        wait_for(lambda: received(consumer) >= 100, 30, "messages to flow")
        secured.controls = asyncio.run(_controls(cluster.ns_arg, ["int", "ns-1"]))
        stranger_dir, secured.stranger = _stranger_dir(tmp, cluster.keys["admin"])
        secured.dirs = {NO_KEY: None, STRANGER: stranger_dir,
                        "misled": _misled_dir(tmp, cluster.keys["admin"], cluster)}
        yield secured


def received(consumer: Proc) -> int:
    """The unique messages a consumer says it has received so far."""
    found = consumer.latest("received") or consumer.latest("progress") or {}
    return int(found.get("unique", 0))


@contextlib.contextmanager
def acting_as(secured: Secured, directory: Path | None) -> Iterator[None]:
    """This process with the keys in ``directory`` (None: none) inside the block, admin
    after it. (Sockets made inside keep their keys.)"""
    configure(directory)
    try:
        yield
    finally:
        configure(secured.cluster.keys["admin"])


class RawPeer:
    """A DEALER made by hand, as an outsider (or admin) would: no keys (``pair`` None), or
    CURVE with ``pair`` expecting the server key of ``endpoint`` (``ENDPOINT;curve=KEY``)."""

    def __init__(self, ctx: zmq.asyncio.Context, endpoint: str, pair: KeyPair | None,
                 routing_id: bytes | None = None, server_key: bytes | None = None) -> None:
        plain, key = split_endpoint(endpoint)
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        if routing_id is not None:
            self.sock.setsockopt(zmq.ROUTING_ID, routing_id)
        if pair is not None:
            server = server_key or key
            assert server is not None, endpoint
            secure_client(self.sock, pair, server)
        self.monitor = self.sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | _FAILED)
        self.sock.connect(plain)

    async def handshake(self, timeout: float = 10.0) -> int:
        """The first handshake event: ``EVENT_HANDSHAKE_SUCCEEDED`` or a failure."""
        async def first() -> int:
            while True:
                parsed = parse_event(await self.monitor.recv_multipart())
                if parsed is not None:
                    return parsed[0]
        return await asyncio.wait_for(first(), timeout)

    async def answers(self, wait: float) -> list[list[bytes]]:
        """Whatever arrives within ``wait`` seconds."""
        got = []
        while await self.sock.poll(int(wait * 1000)):
            got.append(await self.sock.recv_multipart())
            wait = 0.05
        return got

    def close(self) -> None:
        self.sock.disable_monitor()
        self.monitor.close(0)
        self.sock.close(0)


@contextlib.asynccontextmanager
async def raw_peers() -> AsyncIterator[Callable[..., RawPeer]]:
    """``peer(endpoint, pair, ...)`` makes a :class:`RawPeer`; all are closed at the end."""
    ctx = zmq.asyncio.Context()
    peers: list[RawPeer] = []

    def peer(endpoint: str, pair: KeyPair | None, **options: Any) -> RawPeer:
        peers.append(RawPeer(ctx, endpoint, pair, **options))
        return peers[-1]

    try:
        yield peer
    finally:
        for made in peers:
            made.close()
        ctx.destroy(linger=0)  # and any socket a failed RawPeer() left behind


def refused(outsider: str, event: int) -> bool:
    """Whether a handshake event is the failure ``outsider`` meets: a keyless peer's greeting
    names another mechanism (or, when the server saw that first, its handshake is cut short);
    the stranger's key is refused by the server's ZAP handler."""
    if outsider == NO_KEY:
        return event in (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
    return event == zmq.EVENT_HANDSHAKE_FAILED_AUTH


def log_lines(path: Path, pattern: str) -> int:
    """How many lines of the log at ``path`` match ``pattern`` (a regular expression)."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return 0
    return len(re.findall(pattern, text))


def stranger_logged(key: bytes) -> str:
    """The pattern of a server's log line about the stranger's refused key."""
    return rf"refused a connection from 127\.0\.0\.1 \(key {re.escape(key.decode())}\): " \
           rf"key not allowed"


def keys_of(directory: Path | None) -> KeyPair | None:
    """The own pair of a key directory (None for None)."""
    return None if directory is None else load_keys(directory).own
