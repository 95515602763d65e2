"""The process's security: its keys, or none, applied to every socket fabric opens.

With keys (``--keys DIR`` / ``FABRIC_KEYS``), every server socket is a CURVE server that
admits only the keys its ZAP handler allows (deny by default), and every client socket is a
CURVE client that talks only to the server holding the key it expects. Where that key comes
from:

* an endpoint a server published in the registry carries it: ``tcp://HOST:PORT;curve=KEY``
  (:meth:`Security.advertise`), so the registry — read over CURVE from nodes whose keys are
  known — vouches for the servers it lists;
* a name-service node's address (``HOST:PORT``) is looked up in the trusted certificates that
  name it (``Keys.nodes``), as ssh's ``known_hosts`` does.

Who may do what is in :mod:`nameservice.security.rules`: the ZAP handlers admit the keys the
rules allow, and :meth:`Security.sender` gives a server the rule of a message's sender. When the
rules change (``set_rules``), keys no longer allowed lose their open connections at once: each
server socket's connections are known by the descriptor their messages came in on
(``ZMQ_SRCFD``), and those of a revoked key are shut down (libzmq sees the peer go; the ZAP
handler refuses it when it comes back).

Without keys the process is in insecure mode: it says so once, loudly, when it first serves a
socket, and it refuses to connect to a secured endpoint (one line naming the option to give)
rather than half-work.
"""
from __future__ import annotations

import logging
import os
import socket
import threading

import zmq

from nameservice.errors import ConfigError
from nameservice.security.handshakes import HandshakeWatch, shut_down
from nameservice.security.keys import Keys, load_keys
from nameservice.security.rules import Rule, Rules
from nameservice.security.sockets import secure_client, secure_server
from nameservice.security.zap import DOMAIN, PEER_DOMAIN, RefusalLog, ZapHandler

log = logging.getLogger(__name__)

__all__ = ["KEY_MARK", "Security", "configure", "current", "split_endpoint"]

KEY_MARK = ";curve="
"""Between an endpoint and its server's public key (``;`` is not a Z85 character)."""
ENV = "FABRIC_KEYS"
MAX_TRACKED = 65_536
"""Connections whose sender is remembered for revocation (descriptors are bounded anyway)."""


def split_endpoint(endpoint: str) -> tuple[str, bytes | None]:
    """``ENDPOINT;curve=KEY`` → ``(ENDPOINT, KEY)``; a plain endpoint → ``(endpoint, None)``."""
    plain, mark, key = endpoint.partition(KEY_MARK)
    if not mark:
        return endpoint, None
    if len(key) != 40:
        raise ConfigError(f"bad server key in {endpoint!r}: expected 40 Z85 characters")
    return plain, key.encode()


def _peer(fd: int) -> object:
    """The remote address of a connected socket descriptor (None: not one)."""
    try:
        with socket.socket(fileno=os.dup(fd)) as sock:
            return sock.getpeername()
    except OSError:
        return None


def _context_of(sock: zmq.Socket) -> zmq.Context:
    """A plain context on the socket's own (asyncio contexts included), for the ZAP thread."""
    return zmq.Context.shadow(sock.context.underlying)


class Security:
    """What a process secures its sockets with: ``keys``, or None for insecure mode."""

    def __init__(self, keys: Keys | None) -> None:
        self.keys = keys
        self._lock = threading.Lock()
        self._handlers: dict[int, ZapHandler] = {}
        self._watches: dict[int, HandshakeWatch] = {}
        self._retired: dict[str, int] = {}  # the counters of the handlers of ended contexts
        self._refusals = RefusalLog()  # a refused peer is logged once, whichever socket
        self.rules = Rules(bootstrap=self._bootstrap())
        self._warned = False
        self._conns: dict[int, tuple[bytes, object]] = {}  # fd -> (user id, peer address)
        self.cut_connections = 0
        """Connections shut down because their key was revoked."""
        self.bad_rules = 0
        """Entries under ``security/`` that are not rules (skipped)."""

    @property
    def secure(self) -> bool:
        """Whether this process has keys (CURVE on every socket)."""
        return self.keys is not None

    def _bootstrap(self) -> dict[bytes, Rule]:
        """Keys trusted by file: ns-peer when a certificate names a node address, else admin."""
        if self.keys is None:
            return {}
        nodes = {key: address for address, key in self.keys.nodes.items()}
        named = {**self.keys.trusted, self.keys.own.name: self.keys.own.public}
        return {key: Rule(name, key, "ns-peer" if key in nodes else "admin",
                          address=nodes.get(key, ""))
                for name, key in named.items()}

    def set_rules(self, stored: dict[bytes, Rule], revoked: frozenset[bytes],
                  bad: int = 0) -> list[bytes]:
        """The rules in the name service are now these (``bad``: entries that were not
        rules): admit exactly the keys they and the bootstrap allow, and cut the open
        connections of the keys no longer allowed (which are returned)."""
        with self._lock:
            old = self.rules
            self.rules = new = Rules(old.bootstrap, dict(stored), revoked)
            self.bad_rules = bad
            allowed, peers = new.allowed(), new.peers()
            for handler in self._handlers.values():
                handler.allow(allowed, peers)
        gone = sorted((old.allowed().keys() - allowed.keys())
                      | (old.peers().keys() - peers.keys()))
        if gone:
            self.cut({key.decode() for key in gone})
        return gone

    def sender(self, frame: zmq.Frame) -> Rule | None:
        """The rule of the key a received message came from (None: no rule, or insecure
        mode); remembers its connection so that a revocation can cut it."""
        if self.keys is None:
            return None
        try:
            user = frame.get("User-Id")
            fd = frame.get(zmq.SRCFD)
        except zmq.ZMQError:  # not from a CURVE connection
            return None
        if not isinstance(user, str) or not isinstance(fd, int):
            return None
        if self._conns.get(fd, (None,))[0] != user.encode() and len(self._conns) < MAX_TRACKED:
            self._conns[fd] = (user.encode(), _peer(fd))
        return self.rules.rule(user.encode())

    def _forget(self, fd: int) -> None:
        self._conns.pop(fd, None)

    def cut(self, users: set[str]) -> int:
        """Shut down the tracked connections of these user ids (public keys); how many."""
        cut = 0
        for fd, (user, peer) in list(self._conns.items()):
            if user.decode() not in users:
                continue
            del self._conns[fd]
            if peer is not None and _peer(fd) == peer and shut_down(fd):  # fd not reused
                cut += 1
        self.cut_connections += cut
        if cut:
            log.warning("cut %d connection(s) of revoked key(s) %s", cut,
                        ", ".join(sorted(users)))
        return cut

    def serve(self, sock: zmq.Socket, peers_only: bool = False) -> None:
        """Secure a server socket (before bind): CURVE with this process's key, only the
        allowed keys admitted (``peers_only``: only ns-peer keys, a node's peer port), and
        the handshakes refused before the ZAP handler is asked counted (handshakes.py). In
        insecure mode: no CURVE, after one loud warning. Either way the socket's connections
        are bounded (``handshakes.max_connections``)."""
        if self.keys is None:
            self._warn_insecure()
        else:
            secure_server(sock, self.keys.own, PEER_DOMAIN if peers_only else DOMAIN)
        underlying = sock.context.underlying
        with self._lock:
            watch = self._watches.get(underlying)
            if watch is None or not watch.serving:
                # None yet for this context, or the one there served a context since
                # terminated, whose address this new context reuses.
                if watch is not None:
                    self._retire(self._watches.pop(underlying),
                                 self._handlers.pop(underlying, None))
                # Its connections' ends too: a descriptor that closed is forgotten, so that a
                # revocation never cuts the connection that reused its number.
                self._watches[underlying] = HandshakeWatch(_context_of(sock),
                                                           self._forget).start()
                if self.keys is not None:
                    self._handlers[underlying] = ZapHandler(
                        _context_of(sock), self.rules.allowed(), self._refusals,
                        self.rules.peers()).start()
            watch = self._watches[underlying]
        watch.watch(sock)

    def _retire(self, watch: HandshakeWatch, handler: ZapHandler | None) -> None:
        """Close the watch and handler of a terminated context, keeping their counts (lock
        held)."""
        watch.close()
        for counted in (watch.counters, handler.counters if handler is not None else {}):
            for name, value in counted.items():
                self._retired[name] = self._retired.get(name, 0) + value

    def connect(self, sock: zmq.Socket, target: str) -> str:
        """Secure a client socket for ``target`` (an endpoint, maybe with ``;curve=KEY``, or a
        name-service node's ``HOST:PORT``) and return what to connect it to. ConfigError when
        the server's key is unknown, or when the target is secured and this process is not."""
        plain, key = split_endpoint(target)
        if self.keys is None:
            if key is not None:
                raise ConfigError(f"{plain} is secured (CURVE) and this process has no keys: "
                                  f"give it --keys DIR or {ENV}")
            return plain
        if key is None:
            key = self._node_key(plain.removeprefix("tcp://"))
        if key is None:
            raise ConfigError(f"no key is known for {plain}: give the endpoint as the registry "
                              f"lists it (ENDPOINT{KEY_MARK}KEY) or, for a name-service node, "
                              f"trust the certificate that names its address (fabric keys "
                              f"generate NAME --address HOST:PORT)")
        secure_client(sock, self.keys.own, key)
        return plain

    def _node_key(self, address: str) -> bytes | None:
        """The key of the name-service node at ``address``: from a trusted certificate, else
        from an ns-peer rule that names it."""
        assert self.keys is not None
        key = self.keys.nodes.get(address)
        if key is None:
            key = next((rule.key for rule in self.rules.stored.values()
                        if rule.role == "ns-peer" and rule.address == address), None)
        return key

    def advertise(self, endpoint: str) -> str:
        """The endpoint to publish for a socket this process serves: with its key if secure."""
        return endpoint if self.keys is None else f"{endpoint}{KEY_MARK}" \
            f"{self.keys.own.public.decode()}"

    def status(self) -> dict:
        """For a process's status: ``{"mode": "curve"|"insecure", "key": ..., counters}``."""
        if self.keys is None:
            return {"mode": "insecure",
                    "connections_refused": self.counters().get("connections_refused", 0)}
        return {"mode": "curve", "key": self.keys.own.public.decode(),
                "identity": self.keys.own.name, "rules": len(self.rules.stored),
                "revoked": len(self.rules.revoked), "cut_connections": self.cut_connections,
                "bad_rules": self.bad_rules,
                **self.counters()}

    def counters(self) -> dict[str, int]:
        """The ZAP handlers' counters and the refused handshakes' (handshakes.py), summed
        (empty in insecure mode)."""
        with self._lock:
            out = dict(self._retired)
            for counted in [*(h.counters for h in self._handlers.values()),
                            *(w.counters for w in self._watches.values())]:
                for name, value in counted.items():
                    out[name] = out.get(name, 0) + value
        return out

    def _warn_insecure(self) -> None:
        if not self._warned:
            self._warned = True
            log.warning("INSECURE MODE: no keys (--keys DIR / %s), so every socket of this "
                        "process admits anyone who reaches it; see docs/security.md", ENV)

    def close(self) -> None:
        """Stop the ZAP handlers (their sockets then admit nobody new) and the counting of
        refused handshakes."""
        with self._lock:
            handlers: list[ZapHandler | HandshakeWatch] = [*self._handlers.values(),
                                                           *self._watches.values()]
            self._handlers, self._watches = {}, {}
        for handler in handlers:
            handler.close()


_current: Security | None = None
_current_lock = threading.Lock()


def configure(directory: str | os.PathLike[str] | None) -> Security:
    """Make the keys in ``directory`` (None: insecure mode) this process's security.
    ConfigError, in one line, for a key directory that cannot be used."""
    global _current
    security = Security(None if directory is None else load_keys(directory))
    with _current_lock:
        previous, _current = _current, security
    if previous is not None:
        previous.close()
    return security


def current() -> Security:
    """This process's security: as configured, else from ``FABRIC_KEYS`` (unset or empty:
    insecure mode)."""
    with _current_lock:
        found = _current
    return found if found is not None else configure(os.environ.get(ENV) or None)
