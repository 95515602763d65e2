"""A host behind a cuttable cable: a Linux network namespace for real partition tests.

    root namespace ──veth── router namespace ──veth── host namespace
      10.A.B.C+1              10.A.B.C+2 | +5            10.A.B.C+6

``Island`` builds this (``ip netns``, ``veth`` pairs, one route in the root namespace), runs
commands on the host (``ip netns exec``), and cuts and restores the cable with :meth:`partition`
and :meth:`heal`. Everything it made is removed by :meth:`remove`, which the ``island`` fixture
always calls.

Why a router in between, and why ``pfifo limit 0``: a partition must be *silent*: packets
vanish on the wire, neither end is told (no RST, no ICMP, no error from ``send``). This kernel
has no ``netem`` and no packet classifiers, and there is no ``iptables``; a qdisc that holds no
packet (``pfifo limit 0``) is what remains. Put on a device of the sending host, it would drop
packets before they leave, and that host's TCP would know (a local drop: it retries every
500 ms instead of backing off) — not what a broken link looks like. Put on the router's two
devices, it drops packets in transit: both ends' TCP stacks believe they sent them, back off
and retransmit as over a cut cable. ``ip link set DEV down`` was rejected too: it removes the
routes, so the root namespace would send the host's packets to its default gateway instead.

If namespaces cannot be made (not root, no ``ip``, no ``CAP_NET_ADMIN``), the fixture skips
the test with the reason.
"""
from __future__ import annotations

import os
import random
import shutil
import subprocess

import pytest

QDISC = ("root", "pfifo", "limit", "0")


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
