"""Where the name service is: ``--ns``, else ``FABRIC_NS``, else zeroconf browsing.

Browsing (``nameservice.discovery``) accepts only daemons that advertise the cluster named by
``FABRIC_NS_CLUSTER`` (default ``default``, the name a daemon advertises unless told
otherwise), so two clusters on one network never mix.
"""
from __future__ import annotations

import os

from nameservice.address import parse_addresses
from nameservice.errors import ConfigError, Unavailable

__all__ = ["NS_ENV", "CLUSTER_ENV", "DISCOVERY_TIMEOUT_S", "cluster_addresses"]

NS_ENV = "FABRIC_NS"
"""The environment variable holding ``HOST:PORT,...`` of name-service nodes."""
CLUSTER_ENV = "FABRIC_NS_CLUSTER"
"""The environment variable naming the cluster to browse for."""
DISCOVERY_TIMEOUT_S = 3.0
"""How long browsing waits for a first answer."""


def cluster_addresses(option: str | None = None, *, cluster: str | None = None,
                      timeout: float = DISCOVERY_TIMEOUT_S) -> list[str]:
    """The nodes to talk to: ``option`` (a ``--ns`` value), else ``$FABRIC_NS``, else the
    nodes of ``cluster`` (default ``$FABRIC_NS_CLUSTER``, else ``default``) found by zeroconf.

    Raises ``ConfigError`` for a malformed address list and ``Unavailable`` when browsing
    finds nobody. Browsing blocks for up to ``timeout`` seconds: call it off the event loop
    (``NameServiceClient(None)`` does).
    """
    if option:
        return parse_addresses(option)
    env = os.environ.get(NS_ENV, "").strip()
    if env:
        try:
            return parse_addresses(env)
        except ConfigError as exc:
            raise ConfigError(f"{NS_ENV}: {exc}") from None
    from nameservice.discovery import DEFAULT_CLUSTER, discover

    name = cluster or os.environ.get(CLUSTER_ENV, "").strip() or DEFAULT_CLUSTER
    try:
        found = discover(cluster=name, timeout=timeout)
    except Exception as exc:  # zeroconf and the OS raise many kinds (no multicast, ...)
        raise Unavailable(f"no name service given (--ns or {NS_ENV}) and zeroconf browsing "
                          f"failed: {exc}") from exc
    if not found:
        raise Unavailable(f"no name service given (--ns or {NS_ENV}) and none of cluster "
                          f"{name!r} found by zeroconf within {timeout:g} s")
    return [endpoint.address for endpoint in found]
