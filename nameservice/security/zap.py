"""The ZAP handler (ZeroMQ RFC 27): who may complete a CURVE handshake with this process.

Every server socket fabric secures sets a ZAP domain and ZMQ_ZAP_ENFORCE_DOMAIN, so libzmq
asks the handler about every handshake, and refuses the peer when no handler answers: deny by
default, even if this handler was never started. The handler runs in a thread of its own (a
handshake must not wait for a busy event loop) on the context's ``inproc://zeromq.zap.01``
and answers from a table of allowed public keys -> user ids, replaced whole (``allow``) when
the rules change. The user id is what the server sees as the ``User-Id`` property of every
message from that peer.

Refusals are counted by reason and logged once per peer address and key (at most
``MAX_LOGGED`` distinct ones, then every 1,000th), so a flood of strangers costs no log volume;
the handlers of one process share what they logged (``RefusalLog``), so a peer refused by
several of its sockets is logged once.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Mapping

import zmq
from zmq.utils import z85

log = logging.getLogger(__name__)

__all__ = ["DOMAIN", "MAX_LOGGED", "PEER_DOMAIN", "RefusalLog", "ZapHandler"]

DOMAIN = "fabric"
"""The ZAP domain of every socket fabric secures (but peer ports)."""
PEER_DOMAIN = "fabric-peers"
"""The ZAP domain of a name-service node's peer port: only ns-peer keys."""
MAX_LOGGED = 1000
"""Distinct refused (address, key) pairs logged one by one."""
_ENDPOINT = "inproc://zeromq.zap.01"
_PEER_DOMAIN = PEER_DOMAIN.encode()


class RefusalLog:
    """Which refused (peer address, key) pairs were logged: the first ``MAX_LOGGED`` distinct
    ones, each once, then every 1,000th refusal. Thread-safe: shared by the ZAP handlers of a
    process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._logged: set[tuple[str, bytes]] = set()
        self._refused = 0

    def first(self, peer: str, public: bytes) -> bool:
        """Count one refusal; whether to log it."""
        with self._lock:
            self._refused += 1
            if (peer, public) in self._logged:
                return False
            if len(self._logged) < MAX_LOGGED:
                self._logged.add((peer, public))
                return True
            return self._refused % 1000 == 0


class ZapHandler:
    """Answers the ZAP requests of ``ctx``'s sockets from the allowed keys (``allow``);
    ``refusals``: what the process logged already (default: this handler's own)."""

    def __init__(self, ctx: zmq.Context, allowed: Mapping[bytes, str] | None = None,
                 refusals: RefusalLog | None = None,
                 peers: Mapping[bytes, str] | None = None) -> None:
        self._ctx = ctx
        self._allowed: Mapping[bytes, str] = dict(allowed or {})
        self._peers: Mapping[bytes, str] = dict(peers or {})
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._ended = threading.Event()
        self._refusals = refusals or RefusalLog()
        self.counters = {"zap_allowed": 0, "zap_refused_unknown_key": 0,
                         "zap_refused_mechanism": 0, "zap_bad_requests": 0}

    def allow(self, allowed: Mapping[bytes, str], peers: Mapping[bytes, str] | None = None
              ) -> None:
        """From now on allow exactly these public keys (Z85) -> user ids; on peer ports
        (``PEER_DOMAIN``), exactly ``peers`` (unchanged if None)."""
        self._allowed = dict(allowed)  # replaced whole: the handler thread reads it unlocked
        if peers is not None:
            self._peers = dict(peers)

    def user_id(self, public: bytes) -> str | None:
        """The user id of an allowed key (None: not allowed)."""
        return self._allowed.get(public)

    @property
    def serving(self) -> bool:
        """Whether it still answers: false once closed or its context was terminated."""
        return self._thread is not None and not self._ended.is_set()

    def start(self) -> ZapHandler:
        """Bind the ZAP endpoint and answer in a background thread."""
        sock = self._ctx.socket(zmq.REP)
        sock.linger = 0
        sock.bind(_ENDPOINT)
        self._thread = threading.Thread(target=self._serve, args=(sock,), name="zap",
                                        daemon=True)
        self._thread.start()
        return self

    def _serve(self, sock: zmq.Socket) -> None:
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                if not poller.poll(100):
                    continue
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    continue
                sock.send_multipart(self._answer(frames))
        except zmq.ContextTerminated:
            pass
        finally:
            self._ended.set()  # before the close that lets the context's term() return
            sock.close(0)

    def _answer(self, frames: list[bytes]) -> list[bytes]:
        if len(frames) < 6 or frames[0] != b"1.0":
            self.counters["zap_bad_requests"] += 1
            request_id = frames[1] if len(frames) > 1 else b""
            return [b"1.0", request_id, b"500", b"malformed ZAP request", b"", b""]
        request_id, domain, address, _identity, mechanism = frames[1:6]
        credentials = frames[6:]
        if mechanism != b"CURVE" or len(credentials) != 1 or len(credentials[0]) != 32:
            self.counters["zap_refused_mechanism"] += 1
            self._log_refusal(address, b"", f"mechanism {mechanism[:16]!r}")
            return [b"1.0", request_id, b"400", b"CURVE only", b"", b""]
        public = z85.encode(credentials[0])
        table = self._peers if domain == _PEER_DOMAIN else self._allowed
        user = table.get(public)
        if user is None:
            self.counters["zap_refused_unknown_key"] += 1
            self._log_refusal(address, public, "key not allowed")
            return [b"1.0", request_id, b"400", b"key not allowed", b"", b""]
        self.counters["zap_allowed"] += 1
        return [b"1.0", request_id, b"200", b"OK", user.encode(), b""]

    def _log_refusal(self, address: bytes, public: bytes, why: str) -> None:
        peer = address.decode(errors="replace")
        if not self._refusals.first(peer, public):
            return
        log.warning("refused a connection from %s (key %s): %s", peer,
                    public.decode() or "-", why)

    def close(self) -> None:
        """Stop answering (the sockets it served then refuse every new peer)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
