"""Endpoint strings: what users write (``HOST:PORT``) and what sockets take (``tcp://HOST:PORT``)."""
from __future__ import annotations


def parse_listen(listen: str) -> str:
    """``HOST:PORT`` (or a ``tcp://`` endpoint) -> a ``tcp://`` endpoint; ValueError if
    malformed."""
    address = listen[len("tcp://"):] if listen.startswith("tcp://") else listen
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected HOST:PORT, got {listen!r}")
    return f"tcp://{host}:{int(port)}"


def tcp_endpoint(endpoint: str) -> str:
    """``HOST:PORT`` -> ``tcp://HOST:PORT`` (endpoints with a scheme are kept as they are)."""
    return endpoint if "://" in endpoint else "tcp://" + endpoint
