"""Hosts behind cuttable cables: Linux network namespaces for real partition tests.

``Island``: one host behind a router, reachable from the root namespace (the test runner)::

    root namespace ──veth── router namespace ──veth── host namespace
      10.A.B.C+1              10.A.B.C+2 | +5            10.A.B.C+6

``Hosts``: N hosts on one L2 segment, with the root namespace on it too; each host's cable
is a namespace of its own, two devices joined by a bridge::

    host i ──veth── cable i (A ═bridge═ B) ──veth── switch (bridge) ──veth── root namespace
    10.A.B.(10+i)                                                              10.A.B.1

Both build with ``ip netns`` and ``veth`` pairs, run commands in a host (``ip netns exec``),
cut and restore a cable (``Island.partition``/``heal``, ``Hosts.cut``/``heal``) and remove
everything they made (``remove``, which the ``island`` and ``hosts`` fixtures always call).

Why a router or a cable in between, and why ``pfifo limit 0``: a partition must be *silent*: packets
vanish on the wire, neither end is told (no RST, no ICMP, no error from ``send``). This kernel
has no ``netem`` and no packet classifiers, and there is no ``iptables``; a qdisc that holds no
packet (``pfifo limit 0``) is what remains. Put on a device of the sending host, it would drop
packets before they leave, and that host's TCP would know (a local drop: it retries every
500 ms instead of backing off) — not what a broken link looks like. Put on the two devices of
the router (or of the cable), it drops packets in transit, one direction each: both ends' TCP
stacks believe they sent them, back off and retransmit as over a cut cable. ``ip link set DEV
down`` was rejected too: it removes the routes, so the root namespace would send the island's
packets to its default gateway instead. ``Hosts`` also makes every neighbour (ARP) entry
permanent: an unanswered ARP query makes the asking host fail its own packets ("No route to
host" on a connect after 3 s), a verdict a silent partition must not hand out.

If namespaces cannot be made (not root, no ``ip``, no ``CAP_NET_ADMIN``), the fixtures skip
the test with the reason.
"""
from __future__ import annotations

import ipaddress
import os
import random
import re
import shutil
import subprocess

import pytest

QDISC = ("root", "pfifo", "limit", "0")
CABLE_A, CABLE_B = "cable-a", "cable-b"  # a cable's devices: toward its host, its switch


class NetnsUnavailable(Exception):
    """Namespaces, veth pairs or qdiscs cannot be made here."""


def _ip(*args: str, netns: str | None = None) -> None:
    argv = ["ip", *(("-n", netns) if netns else ()), *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        raise NetnsUnavailable(f"`{' '.join(argv)}` failed: {done.stderr.strip()}")


def _tc(*args: str, netns: str) -> None:
    argv = ["ip", "netns", "exec", netns, "tc", *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        raise NetnsUnavailable(f"`{' '.join(argv[4:])}` failed: {done.stderr.strip()}")


def _used_prefixes() -> str:
    done = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True)
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True)
    return done.stdout + routes.stdout


class Island:
    """A host namespace reachable from the root namespace through a router namespace."""

    def __init__(self) -> None:
        token = f"{os.getpid() % 10_000:04d}{random.randrange(16 ** 3):03x}"
        self.host = f"fph{token}"  # namespace names; device names must stay within 15 bytes
        self.router = f"fpr{token}"
        self._root_dev = f"fpa{token}"
        self._made: list[str] = []  # namespaces to delete
        self._route: str | None = None
        # A /29 in 10.200.0.0/13 that nothing on this machine uses (random: parallel runs).
        used = _used_prefixes()
        for _ in range(100):
            a, b, c = random.randrange(200, 208), random.randrange(256), random.randrange(32) * 8
            base = f"10.{a}.{b}."
            if f"{base}{c}/" not in used and f"{base}{c + 1}/" not in used:
                break
        self._net = base
        self._c = c
        self.root_address = f"{base}{c + 1}"
        self.address = f"{base}{c + 6}"  # the host's address: what its servers listen on
        self.partitioned = False

    def create(self) -> "Island":
        """Make the namespaces, links and routes; raises :class:`NetnsUnavailable`."""
        net, c = self._net, self._c
        router_root, router_host = f"fpb{self.host[3:]}", f"fpc{self.host[3:]}"
        host_dev = f"fpd{self.host[3:]}"
        for ns in (self.router, self.host):
            _ip("netns", "add", ns)
            self._made.append(ns)
            _ip("link", "set", "lo", "up", netns=ns)
        _ip("link", "add", self._root_dev, "type", "veth", "peer", "name", router_root,
            "netns", self.router)
        _ip("link", "add", router_host, "netns", self.router, "type", "veth", "peer", "name",
            host_dev, "netns", self.host)
        _ip("addr", "add", f"{net}{c + 1}/30", "dev", self._root_dev)
        _ip("link", "set", self._root_dev, "up")
        _ip("addr", "add", f"{net}{c + 2}/30", "dev", router_root, netns=self.router)
        _ip("addr", "add", f"{net}{c + 5}/30", "dev", router_host, netns=self.router)
        _ip("addr", "add", f"{net}{c + 6}/30", "dev", host_dev, netns=self.host)
        for ns, dev in ((self.router, router_root), (self.router, router_host),
                        (self.host, host_dev)):
            _ip("link", "set", dev, "up", netns=ns)
        _ip("route", "add", "default", "via", f"{net}{c + 5}", netns=self.host)
        self._route = f"{net}{c + 4}/30"
        _ip("route", "add", self._route, "via", f"{net}{c + 2}", "dev", self._root_dev)
        done = subprocess.run(["ip", "netns", "exec", self.router, "sysctl", "-qw",
                               "net.ipv4.ip_forward=1"], capture_output=True, text=True)
        if done.returncode != 0:
            raise NetnsUnavailable(f"cannot enable forwarding: {done.stderr.strip()}")
        self._router_devs = (router_root, router_host)
        # Check the qdisc works here before any test relies on it.
        self.partition()
        self.heal()
        return self

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the host namespace (``ip netns exec`` replaces itself with it,
        so the process id is the command's own)."""
        return ["ip", "netns", "exec", self.host, *argv]

    def partition(self) -> None:
        """Cut the cable: every packet between the host and the rest is silently dropped."""
        for dev in self._router_devs:
            _tc("qdisc", "add", "dev", dev, *QDISC, netns=self.router)
        self.partitioned = True

    def heal(self) -> None:
        """Restore the cable (packets queued nowhere: what was dropped is retransmitted by TCP)."""
        for dev in self._router_devs:
            _tc("qdisc", "del", "dev", dev, "root", netns=self.router)
        self.partitioned = False

    def remove(self) -> None:
        """Delete everything made (deleting a namespace deletes its devices and their peers,
        and with them the route in the root namespace)."""
        for ns in reversed(self._made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self._made.clear()
        subprocess.run(["ip", "link", "del", self._root_dev], capture_output=True)


def _free_net24() -> str:
    """``10.A.B.`` of a /24 in 10.200.0.0/13 that no address or route here overlaps (routes
    wider than a /16, a VPN's 10.0.0.0/8 say, are only shadowed for that /24)."""
    used = [ipaddress.ip_network(found, strict=False)
            for found in re.findall(r"\b\d+\.\d+\.\d+\.\d+(?:/\d+)?", _used_prefixes())]
    used = [net for net in used if net.prefixlen >= 16]
    for _ in range(100):  # random: parallel runs must not pick the same one
        base = f"10.{random.randrange(200, 208)}.{random.randrange(256)}."
        if not any(net.overlaps(ipaddress.ip_network(f"{base}0/24")) for net in used):
            return base
    raise NetnsUnavailable("no free /24 in 10.200.0.0/13")


def _mac(address: str) -> str:
    """A locally administered MAC address made of an IPv4 address."""
    return "02:00:" + ":".join(f"{int(byte):02x}" for byte in address.split("."))


def _neighbour(address: str, dev: str, netns: str | None = None) -> None:
    _ip("neigh", "replace", address, "lladdr", _mac(address), "dev", dev, "nud", "permanent",
        netns=netns)


class Hosts:
    """``count`` host namespaces on one L2 segment with the root namespace, each host's
    cable cuttable on its own."""

    def __init__(self, count: int = 5) -> None:
        if not 1 <= count <= 240:
            raise ValueError(f"between 1 and 240 hosts, not {count}")
        token = f"fpn{os.getpid() % 10_000:04d}{random.randrange(16 ** 5):05x}"
        self.names = [f"{token}h{i}" for i in range(count)]  # the hosts' namespaces
        self.cables = [f"{token}c{i}" for i in range(count)]
        self.switch = f"{token}s"
        self.root_device = token  # the only device in the root namespace: 12 bytes of 15
        self._made: list[str] = []  # namespaces to delete
        self._net = _free_net24()
        self.root_address = f"{self._net}1"
        self.addresses = [f"{self._net}{10 + i}" for i in range(count)]
        self._cut: set[int] = set()

    def create(self) -> "Hosts":
        """Make the namespaces, bridges and links; raises :class:`NetnsUnavailable`."""
        self._namespace(self.switch)
        _ip("link", "add", "br0", "type", "bridge", netns=self.switch)
        _ip("link", "set", "br0", "up", netns=self.switch)
        # Other devices are named alike in every namespace: only the root's must be unique.
        _ip("link", "add", self.root_device, "type", "veth", "peer", "name", "root",
            "netns", self.switch)
        _ip("link", "set", "root", "master", "br0", "up", netns=self.switch)
        _ip("addr", "add", f"{self.root_address}/24", "dev", self.root_device)
        _ip("link", "set", self.root_device, "address", _mac(self.root_address), "up")
        for i, (host, cable) in enumerate(zip(self.names, self.cables)):
            self._namespace(host)
            self._namespace(cable)
            _ip("link", "add", CABLE_A, "type", "veth", "peer", "name", "eth0", "netns", host,
                netns=cable)
            _ip("link", "add", CABLE_B, "type", "veth", "peer", "name", f"p{i}", "netns",
                self.switch, netns=cable)
            _ip("link", "add", "br0", "type", "bridge", netns=cable)
            for dev in (CABLE_A, CABLE_B):
                _ip("link", "set", dev, "master", "br0", "up", netns=cable)
            _ip("link", "set", "br0", "up", netns=cable)
            _ip("link", "set", f"p{i}", "master", "br0", "up", netns=self.switch)
            _ip("addr", "add", f"{self.addresses[i]}/24", "dev", "eth0", netns=host)
            _ip("link", "set", "eth0", "address", _mac(self.addresses[i]), "up", netns=host)
        # Permanent neighbours: a host whose ARP queries go unanswered for 3 s fails its own
        # packets to that address (a connect gets "No route to host"): a cut must not tell.
        for i, host in enumerate(self.names):
            for other in (self.root_address, *self.addresses[:i], *self.addresses[i + 1:]):
                _neighbour(other, "eth0", host)
        for address in self.addresses:
            _neighbour(address, self.root_device)
        # Check the qdisc works here before any test relies on it.
        self.cut(0)
        self.heal(0)
        return self

    def _namespace(self, name: str) -> None:
        _ip("netns", "add", name)
        self._made.append(name)
        _ip("link", "set", "lo", "up", netns=name)

    def command(self, i: int, argv: list[str]) -> list[str]:
        """``argv`` run inside host ``i`` (``ip netns exec`` replaces itself with it, so the
        process id is the command's own)."""
        return ["ip", "netns", "exec", self.names[i], *argv]

    def cut(self, i: int) -> None:
        """Cut host ``i``'s cable: every packet to or from it is silently dropped."""
        if i in self._cut:
            return
        # Each device's qdisc drops what leaves through it: A toward the host, B from it.
        for dev in (CABLE_A, CABLE_B):
            _tc("qdisc", "add", "dev", dev, *QDISC, netns=self.cables[i])
        self._cut.add(i)

    def heal(self, i: int) -> None:
        """Restore host ``i``'s cable (what was dropped is retransmitted by TCP)."""
        if i not in self._cut:
            return
        for dev in (CABLE_A, CABLE_B):
            _tc("qdisc", "del", "dev", dev, "root", netns=self.cables[i])
        self._cut.discard(i)

    def is_cut(self, i: int) -> bool:
        """Whether host ``i``'s cable is cut."""
        return i in self._cut

    def remove(self) -> None:
        """Delete everything made; safe to call again, and after a failed :meth:`create`."""
        # The root's device first: a namespace's devices go only once the kernel gets to it.
        subprocess.run(["ip", "link", "del", self.root_device], capture_output=True)
        for ns in reversed(self._made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self._made.clear()
        self._cut.clear()


def netns_unavailable_reason() -> str | None:
    """Why namespaces cannot be used here, or None if they (probably) can."""
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_NET_ADMIN)"
    for tool in ("ip", "tc", "sysctl"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    return None


@pytest.fixture
def island():
    """An :class:`Island`, removed at teardown; skips the test if one cannot be made."""
    reason = netns_unavailable_reason()
    if reason:
        pytest.skip(reason)
    made = Island()
    try:
        made.create()
    except NetnsUnavailable as exc:
        made.remove()
        pytest.skip(f"cannot build a network namespace here: {exc}")
    try:
        yield made
    finally:
        made.remove()


@pytest.fixture(name="hosts")
def hosts_fixture():
    """A :class:`Hosts` of five, removed at teardown; skips the test if it cannot be made.
    Import it as ``hosts_fixture``: tests take it as ``hosts`` without shadowing the import."""
    reason = netns_unavailable_reason()
    if reason:
        pytest.skip(reason)
    try:
        made = Hosts()
    except NetnsUnavailable as exc:
        pytest.skip(f"cannot build network namespaces here: {exc}")
    try:
        made.create()
    except NetnsUnavailable as exc:
        made.remove()
        pytest.skip(f"cannot build network namespaces here: {exc}")
    try:
        yield made
    finally:
        made.remove()
