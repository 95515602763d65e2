"""A node as a fabric process: a control socket, and its name ``process/NAME`` in its cluster.

Every fabric process can be found by name and asked for its ``status`` or to ``drain``
(``fabric status``, ``fabric drain NAME``); a name-service node is one too. It serves the
fabric control protocol (:mod:`nameservice.control`) and registers the socket as
``process/NAME`` (meta ``{"kind": "nameservice", "node": ID, "address": HOST:PORT}``) in the
cluster it belongs to, with a lease its own client keeps alive.

* **drain** is the node's clean stop, the same as SIGTERM (which starts it too): deregister,
  hand the leadership over if this node leads (``Node._hand_over``), stop serving; the answer
  says which node leads then. A drain always completes (nothing is lost by stopping a node:
  every acknowledged write is on a quorum's disks); a hand-over no node took in time only
  costs the others an election timeout.
* **Registration without a quorum**: the node serves at once whatever happens to its name. The
  registration runs in the background and is retried every ``RETRY_S`` until a leader takes
  it; meanwhile the node is not found by name. Once registered, a lease lost while the cluster
  had no leader is registered again by itself (``nameservice.names.Registration``).
* Deregistering on drain waits at most ``DEREGISTER_S``: a node that cannot reach a leader
  stops anyway, and its entry goes when the lease expires.
"""
from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from typing import Any

import zmq
import zmq.asyncio

from nameservice.address import parse_address, parse_control
from nameservice.client.api import NameServiceClient
from nameservice.control import DEFAULT_TTL, ControlServer, process_name
from nameservice.names import Names
from nameservice.raft.types import NONE
from nameservice.security.context import KEY_MARK, split_endpoint
from nameservice.security.context import current as security
from nameservice.security.follow import follow_rules
from nameservice.server.config import NodeSettings

log = logging.getLogger(__name__)

RETRY_S = 0.5
"""Pause between two attempts to register the node's name."""
LINGER_MS = 1000
"""How long the control socket may take, at exit, to send the answers it holds."""
DEREGISTER_S = DEFAULT_TTL
"""Longest wait for the deregistration that starts a drain (longer than the lease lives is
pointless: the entry goes with the lease anyway)."""


def control_endpoints(settings: NodeSettings) -> tuple[str, str]:
    """Where the control socket binds, and the endpoint registered for it.

    ``settings.control`` (``HOST:PORT``, port 0 for any) or, by default, the host of the node's
    own address with any port: the control socket is reachable wherever the node is. A host
    name binds every interface and is registered as it is."""
    host, port = parse_control(settings.control) if settings.control else (
        parse_address(settings.client_address)[0], 0)
    try:
        ipaddress.ip_address(host)
        bind_host = host
    except ValueError:
        bind_host = "127.0.0.1" if host == "localhost" else "*"
    return f"tcp://{bind_host}:{port}", f"tcp://{host}:{{port}}"


def registered_endpoint(advertised: str, served: str) -> str:
    """The control endpoint to register: ``advertised`` (``tcp://HOST:{port}``, from
    :func:`control_endpoints`) with the port of ``served`` (what the control server says it
    serves), and the key ``served`` carries in a process with keys (``ENDPOINT;curve=KEY``;
    the port is read from the endpoint alone: a Z85 key may hold a ``:``)."""
    bound, key = split_endpoint(served)
    endpoint = advertised.format(port=bound.rpartition(":")[2])
    return endpoint if key is None else f"{endpoint}{KEY_MARK}{key.decode()}"


class NodePresence:
    """The control socket and the name of one node (see module docstring).

    ``start()`` binds the socket (before the node serves); ``register()`` starts the
    background registration (once the node listens); ``drain_task()`` starts the clean stop;
    ``close(node_error)`` ends it all once the node stopped, after a waiting ``fabric drain``
    got its answer.
    """

    def __init__(self, node: Any, stop: asyncio.Event) -> None:
        self.node = node
        self.settings: NodeSettings = node.settings
        self.name = self.settings.process_name
        self._stop = stop
        self._stopped = asyncio.Event()  # the node stopped serving
        self._server: ControlServer | None = None
        self._registering: asyncio.Task | None = None
        self._registration: Any = None
        self._client: Any = None
        self._rules: asyncio.Future | None = None  # the access rules followed (with keys)
        self.endpoint = ""
        # A context of its own, terminated at close: that is what makes the answer to a drain
        # leave before the process exits (an unterminated context drops what it still holds).
        self._ctx = zmq.asyncio.Context()

    def start(self) -> str:
        """Bind the control socket; the endpoint registered for it. ``OSError`` if it cannot
        be bound."""
        bind, advertised = control_endpoints(self.settings)
        try:
            self._server = ControlServer(self.status, self._drain, bind, ctx=self._ctx).start()
        except zmq.ZMQError as exc:
            raise OSError(f"cannot bind the control socket on {bind}: {exc}") from None
        self.endpoint = registered_endpoint(advertised, self._server.endpoint)
        return self.endpoint

    def status(self) -> dict:
        """The control socket's ``status``: the node's status report with its kind and name."""
        return {"kind": "nameservice", "name": self.name,
                "registered": self._registration is not None, **self.node.status()}

    def register(self) -> None:
        """Register ``process/NAME`` in the background, retrying until a leader takes it."""
        self._registering = asyncio.ensure_future(self._register())

    async def _register(self) -> None:
        self._client = NameServiceClient(self.settings.client_addresses())
        await self._client.connect(wait=1.0)
        self._rules = asyncio.ensure_future(follow_rules(self._client, security()))
        names = Names(self._client)
        meta = {"kind": "nameservice", "node": self.settings.id,
                "address": self.settings.client_address}
        failures = 0
        while True:
            try:
                self._registration = await names.register(
                    process_name(self.name), self.endpoint, meta, ttl=DEFAULT_TTL)
                log.info("registered as %s (control %s)", process_name(self.name), self.endpoint)
                return
            except Exception as exc:  # no leader yet, or the cluster is unreachable
                failures += 1
                (log.warning if failures == 1 else log.debug)(
                    "registering %s failed (%s); retrying in the background", self.name, exc)
            await asyncio.sleep(RETRY_S)

    def drain_task(self) -> asyncio.Task:
        """Start the clean stop (once), as a ``drain`` request or SIGTERM does."""
        assert self._server is not None
        return self._server.drain_task()

    async def _drain(self, timeout: float | None) -> dict:
        started = time.monotonic()
        await self._deregister()
        self._stop.set()
        await self._stopped.wait()
        leader = self.node.core.leader
        return {"kind": "nameservice", "name": self.name, "complete": True,
                "elapsed_ms": round((time.monotonic() - started) * 1000, 1),
                "left_messages": 0, "left": [],
                "leader": self.node.leader_address() if leader != NONE else None}

    async def _deregister(self) -> None:
        if self._registering is not None:
            self._registering.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._registering
        registration, self._registration = self._registration, None
        if registration is not None:
            try:
                await asyncio.wait_for(registration.close(), DEREGISTER_S)
            except Exception as exc:  # it expires with its lease
                log.warning("could not deregister %s (%s); its lease expires", self.name,
                            str(exc) or type(exc).__name__)

    async def close(self) -> None:
        """The node stopped: answer a waiting drain, then close the socket and the client."""
        self._stopped.set()
        if self._rules is not None:
            self._rules.cancel()
        if self._server is not None:
            if self._server.drain_requested.is_set():
                await self._server.answered(timeout=2.0)
            self._server.close(linger=LINGER_MS)
        if self._registering is not None:
            self._registering.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._registering
        if self._registration is not None:  # stopped without a drain (a storage failure)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._registration.close(), DEREGISTER_S)
        if self._client is not None:
            await self._client.close()
        await asyncio.to_thread(self._ctx.term)  # at most LINGER_MS: the answers are out
