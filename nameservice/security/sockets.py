"""CURVE on a socket: the options a server and a client set (docs/security.md)."""
from __future__ import annotations

import zmq

from nameservice.security.keys import KeyPair
from nameservice.security.zap import DOMAIN

__all__ = ["secure_client", "secure_server"]


def secure_server(sock: zmq.Socket, own: KeyPair, domain: str = DOMAIN) -> None:
    """Make ``sock`` a CURVE server with ``own`` keys that admits only the peers the ZAP
    handler allows for ``domain`` (and nobody when no handler answers). Call before bind."""
    sock.setsockopt(zmq.CURVE_SERVER, 1)
    sock.setsockopt(zmq.CURVE_SECRETKEY, own.secret)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, own.public)
    sock.setsockopt(zmq.ZAP_DOMAIN, domain.encode())
    sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)


def secure_client(sock: zmq.Socket, own: KeyPair, server_public: bytes) -> None:
    """Make ``sock`` a CURVE client with ``own`` keys that talks only to the server whose
    public key is ``server_public`` (Z85). Call before connect."""
    sock.setsockopt(zmq.CURVE_SERVERKEY, server_public)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, own.public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, own.secret)
