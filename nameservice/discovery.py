"""Finding name-service nodes with zeroconf (mDNS/DNS-SD), so nobody has to type addresses.

Each daemon advertises its client endpoint as a ``_fabric-ns._tcp`` service whose TXT record
names its cluster and node id; a client given neither ``--ns`` nor ``FABRIC_NS`` browses for
it. mDNS is multicast: by default it runs on the loopback interface only (a single machine,
and the test suite), because announcing on every interface of a shared network is something
an operator should choose. ``FABRIC_DISCOVERY_INTERFACES=all`` (or a comma-separated list of
local addresses) extends it to the LAN.
"""
from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass

from zeroconf import (
    InterfaceChoice,
    IPVersion,
    ServiceBrowser,
    ServiceInfo,
    ServiceListener,
    Zeroconf,
)

SERVICE_TYPE = "_fabric-ns._tcp.local."
DEFAULT_CLUSTER = "default"
INTERFACES_ENV = "FABRIC_DISCOVERY_INTERFACES"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A name-service node found on the network."""

    host: str
    port: int
    node_id: int
    cluster: str
    size: int = 0  # the cluster's size as this node knows it (0: not advertised)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def interfaces_from_env(value: str | None = None) -> list[str] | InterfaceChoice:
    """The interfaces mDNS runs on: loopback unless FABRIC_DISCOVERY_INTERFACES says more."""
    value = os.environ.get(INTERFACES_ENV, "") if value is None else value
    value = value.strip()
    if not value or value == "loopback":
        return ["127.0.0.1"]
    if value == "all":
        return InterfaceChoice.All
    return [part.strip() for part in value.split(",") if part.strip()]


def _zeroconf(interfaces) -> Zeroconf:
    return Zeroconf(interfaces=interfaces, ip_version=IPVersion.V4Only)


class Advertiser:
    """Announces one node's client endpoint until closed (a goodbye is sent on close)."""

    def __init__(
        self,
        node_id: int,
        host: str,
        port: int,
        cluster: str = DEFAULT_CLUSTER,
        interfaces: list[str] | InterfaceChoice | None = None,
        size: int = 0,
    ):
        self.endpoint = Endpoint(host, port, node_id, cluster, size)
        self._interfaces = interfaces if interfaces is not None else interfaces_from_env()
        self._zc: Zeroconf | None = None
        self._info = ServiceInfo(
            SERVICE_TYPE,
            f"fabric-ns-{cluster}-{node_id}.{SERVICE_TYPE}",
            addresses=[socket.inet_aton(_advertised_host(host))],
            port=port,
            properties={"cluster": cluster, "id": str(node_id), "v": "1", "size": str(size)},
            server=f"fabric-ns-{cluster}-{node_id}.local.",
        )

    def start(self) -> "Advertiser":
        self._zc = _zeroconf(self._interfaces)
        self._zc.register_service(self._info, allow_name_change=True)
        return self

    def close(self) -> None:
        if self._zc is not None:
            zc, self._zc = self._zc, None
            try:
                zc.unregister_service(self._info)
            finally:
                zc.close()

    def __enter__(self) -> "Advertiser":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def _advertised_host(host: str) -> str:
    if host in ("", "0.0.0.0", "*"):
        return "127.0.0.1"
    try:
        return socket.gethostbyname(host)
    except OSError:
        return host


class _Collector(ServiceListener):
    def __init__(self) -> None:
        self.names: list[str] = []
        self.changed = threading.Event()

    def add_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        self.names.append(name)
        self.changed.set()

    def update_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        pass

    def remove_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        pass


def discover(
    cluster: str | None = None,
    timeout: float = 2.0,
    settle: float = 0.3,
    interfaces: list[str] | InterfaceChoice | None = None,
) -> list[Endpoint]:
    """Browse for name-service nodes (of ``cluster``, or any) and return those found.

    Returns as soon as nothing new has appeared for ``settle`` seconds after the first find
    (of ``cluster``, judged by its service name) and every member the nodes found advertise
    (their cluster ``size``) has answered, or after ``timeout`` seconds; an empty list means
    none answered. (Answers of one cluster can arrive far apart on a busy host: the size keeps
    a slow member from being left out.)
    """
    # Other clusters' nodes answering first must not end the wait for this one's.
    wanted = f"fabric-ns-{cluster}-" if cluster is not None else ""
    zc = _zeroconf(interfaces if interfaces is not None else interfaces_from_env())
    collector = _Collector()
    browser = ServiceBrowser(zc, SERVICE_TYPE, collector)
    deadline = time.monotonic() + timeout
    try:
        while True:
            _settle(collector, wanted, settle, deadline)
            found = _resolve_all(zc, collector.names, cluster, deadline)
            missing = max((e.size for e in found), default=0) > len(found)
            if cluster is None or not missing or time.monotonic() >= deadline:
                return found
    finally:
        browser.cancel()
        zc.close()


def _settle(collector: _Collector, wanted: str, settle: float, deadline: float) -> None:
    """Wait until nothing new has appeared for ``settle`` seconds after a first name that
    starts with ``wanted``, or until ``deadline``."""
    while time.monotonic() < deadline:
        wait = deadline - time.monotonic()
        found_any = any(name.startswith(wanted) for name in collector.names)
        if found_any:
            wait = min(wait, settle)
        collector.changed.clear()
        if not collector.changed.wait(max(0.0, wait)) and found_any:
            return


def _resolve_all(zc: Zeroconf, names: list[str], cluster: str | None,
                 deadline: float) -> list[Endpoint]:
    """The endpoints of ``names`` (of ``cluster``, if given), sorted by cluster and node id."""
    found: list[Endpoint] = []
    for name in dict.fromkeys(names):
        endpoint = _resolve(zc, name, max(0.2, deadline - time.monotonic()))
        if endpoint is not None and (cluster is None or endpoint.cluster == cluster):
            found.append(endpoint)
    return sorted(found, key=lambda e: (e.cluster, e.node_id))


def _resolve(zc: Zeroconf, name: str, timeout: float) -> Endpoint | None:
    info = zc.get_service_info(SERVICE_TYPE, name, timeout=int(timeout * 1000))
    if info is None or info.port is None or not info.parsed_addresses():
        return None
    props = {k.decode(): (v or b"").decode() for k, v in info.properties.items()}
    try:
        node_id = int(props.get("id", "0"))
        size = int(props.get("size") or "0")
    except ValueError:
        return None  # not one of ours, or garbled: skip it
    return Endpoint(info.parsed_addresses()[0], info.port, node_id, props.get("cluster", ""),
                    max(0, size))
