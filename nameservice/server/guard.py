"""A secured node's access checks: who may send peer messages, and which requests each key
may make (the rules: :mod:`nameservice.security.rules`).

The transport says whose key each message came from (``sender``: the rule, or None); the
intake asks the guard before it steps a peer frame or routes a request:

* Raft and snapshot-stream frames only from ``ns-peer`` keys — on a node with a peer port of
  its own, only from that port, whose handshake admits nothing else; the peer messages of
  anyone else are dropped unread;
* reads (GET, RANGE, WATCH) need the read right on their key or prefix, writes (every key a
  WRITE or STALE_WRITE touches, batches included) the write right; membership changes an
  ``admin`` or ``ns-peer`` key; status, member lists, keepalives and sessions any allowed key.

A refusal is answered FORBIDDEN, counted (``forbidden_requests``, ``forbidden_peer_frames``)
and logged once per key and reason (the first ``MAX_LOGGED``), so a hostile client costs no
log volume. Without keys (insecure mode) there is no guard.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

from nameservice import wire
from nameservice.kv import Batch, Cas, Delete, DeleteRange, Put, Request, StaleWrite
from nameservice.security.rules import Rule
from nameservice.server.seam import PEER_MARK

log = logging.getLogger(__name__)

__all__ = ["Guard", "written_keys"]

MAX_LOGGED = 1000
_ANY_KEY = frozenset((wire.OP_STATUS, wire.OP_MEMBERS, wire.OP_KEEPALIVE, wire.OP_WATCH_CANCEL))


def written_keys(item: Any) -> list[bytes]:
    """Every key (or prefix) a decoded WRITE proposal would change."""
    if type(item) is Request:
        item = item.command
    if type(item) is Batch:
        return [key for sub in item.items for key in written_keys(sub)]
    if type(item) in (Put, Delete, Cas, StaleWrite):
        return [item.key]
    if type(item) is DeleteRange:
        return [item.prefix]
    return []


class Guard:
    """The access checks of one node; ``sender(identity)`` gives a connection's rule."""

    def __init__(self, sender: Callable[[bytes], Rule | None], peer_port: bool = False) -> None:
        self._sender = sender
        self._peer_port = peer_port
        self.counters = {"forbidden_requests": 0, "forbidden_peer_frames": 0}
        self._logged: set[tuple[bytes, str]] = set()

    def peer(self, identity: bytes) -> bool:
        """Whether a peer frame from ``identity`` may be stepped: with a peer port, only what
        came in there (its handshake admitted only ns-peer keys); else from an ns-peer key."""
        if self._peer_port:
            if identity.startswith(PEER_MARK):
                return True
            rule = self._sender(identity)
        else:
            rule = self._sender(identity)
            if rule is not None and rule.role == "ns-peer":
                return True
        self.counters["forbidden_peer_frames"] += 1
        self._log(rule, "peer messages from a key that is not an ns-peer's")
        return False

    def request(self, identity: bytes, op: int, w: list) -> str | None:
        """Why the request ``w`` (op ``op``, not a WRITE) is refused; None: allowed."""
        rule = self._sender(identity)
        if rule is None:
            return self._refuse(rule, "this key is not allowed")
        if op in _ANY_KEY:
            return None
        if op == wire.OP_MEMBER_CHANGE:
            return None if rule.privileged else self._refuse(rule, "membership changes need "
                                                                   "an admin key")
        if op in (wire.OP_GET, wire.OP_RANGE, wire.OP_WATCH):
            at = 3 if op == wire.OP_WATCH else 2  # WATCH: [rid, op, watch_id, key, ...]
            key = w[at] if len(w) > at and type(w[at]) is bytes else b""
            return None if rule.may_read(key) else self._refuse(
                rule, f"no read right on {key[:64]!r}")
        if op == wire.OP_STALE_WRITE:
            key = w[2] if len(w) > 2 and type(w[2]) is bytes else b""
            return None if rule.may_write(key) else self._refuse(
                rule, f"no write right on {key[:64]!r}")
        return None  # an unknown op: the intake answers it BAD_REQUEST

    def write(self, identity: bytes, item: Any) -> str | None:
        """Why a decoded WRITE proposal is refused; None: allowed."""
        rule = self._sender(identity)
        if rule is None:
            return self._refuse(rule, "this key is not allowed")
        for key in written_keys(item):
            if not rule.may_write(key):
                return self._refuse(rule, f"no write right on {key[:64]!r}")
        return None

    def _refuse(self, rule: Rule | None, why: str) -> str:
        self.counters["forbidden_requests"] += 1
        self._log(rule, why)
        return f"forbidden: {why}"

    def _log(self, rule: Rule | None, why: str) -> None:
        key = rule.key if rule is not None else b"-"
        if (key, why) in self._logged or len(self._logged) >= MAX_LOGGED:
            return
        self._logged.add((key, why))
        who = f"{rule.identity} ({rule.key.decode()})" if rule is not None else "an unknown key"
        log.warning("refused %s: %s", who, why)
