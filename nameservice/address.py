"""Addresses as users type them (``HOST:PORT``, ``ID=HOST:PORT,...``) and the ZeroMQ endpoints
made from them; shared by the client, the server and the command line."""
from __future__ import annotations

import ipaddress

from nameservice.errors import ConfigError

__all__ = ["bind_endpoint", "client_address", "connect_endpoint", "parse_address",
           "parse_addresses", "parse_cluster", "parse_control", "parse_member", "peer_address"]


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` → ``(host, port)``; ConfigError on anything else."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"bad address {text!r}: expected HOST:PORT with a port in 1..65535")
    host = host.strip("[]")
    if not host.replace(".", "").replace("-", "").replace(":", "").isalnum():
        raise ConfigError(f"bad address {text!r}: {host!r} is not a host name or IP address")
    return host, int(port)


def parse_member(text: str) -> tuple[str, str]:
    """A member's address, ``HOST:PORT`` or ``HOST:PORT/PEERPORT`` → ``(client, peer)``, both
    ``HOST:PORT``: where clients connect, and where the other members send Raft messages (the
    same, unless the member has a peer port of its own). ConfigError on anything else."""
    text = text.strip()
    client, sep, peer_port = text.partition("/")
    host, _port = parse_address(client)
    if not sep:
        return client, client
    if not peer_port.isdigit() or not 0 < int(peer_port) < 65536:
        raise ConfigError(f"bad address {text!r}: expected HOST:PORT/PEERPORT with a peer port "
                          f"in 1..65535")
    peer = client[:client.rindex(":")] + f":{int(peer_port)}"
    if peer == client:
        raise ConfigError(f"bad address {text!r}: the peer port must differ from the port")
    return client, peer


def client_address(member: str) -> str:
    """Where clients connect to a member (``HOST:PORT``, its peer port left out)."""
    return member.partition("/")[0].strip()


def peer_address(member: str) -> str:
    """Where the other members send a member Raft messages (``HOST:PORT``)."""
    return parse_member(member)[1]


def parse_control(text: str) -> tuple[str, int]:
    """``--control HOST:PORT`` → ``(host, port)``; port 0 picks any free port."""
    host, sep, port = text.strip().rpartition(":")
    if sep and port == "0":
        return parse_address(f"{host}:1")[0], 0
    return parse_address(text)


def parse_addresses(text: str) -> list[str]:
    """``HOST:PORT,HOST:PORT,...`` → the list of addresses, each checked."""
    out = [a.strip() for a in text.split(",") if a.strip()]
    if not out:
        raise ConfigError("no address given: expected HOST:PORT,...")
    for a in out:
        parse_address(a)
    return out


def parse_cluster(text: str) -> dict[int, str]:
    """``ID=HOST:PORT[/PEERPORT],...`` → ``{id: "HOST:PORT[/PEERPORT]"}``; ids are distinct
    positive integers."""
    cluster: dict[int, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        node, sep, addr = part.partition("=")
        if not sep or not node.strip().isdigit() or int(node) <= 0:
            raise ConfigError(f"bad cluster member {part!r}: expected ID=HOST:PORT with ID > 0")
        parse_member(addr)
        if int(node) in cluster:
            raise ConfigError(f"node id {int(node)} appears twice in the cluster list")
        cluster[int(node)] = addr.strip()
    if not cluster:
        raise ConfigError("empty cluster list: expected ID=HOST:PORT,...")
    if len({client_address(a) for a in cluster.values()}) != len(cluster):
        raise ConfigError("two cluster members share an address")
    return cluster


def bind_endpoint(address: str) -> str:
    """The ZeroMQ endpoint a node binds for ``HOST:PORT`` (a host name binds every interface)."""
    host, port = parse_address(address)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        host = "*" if host != "localhost" else "127.0.0.1"
    return f"tcp://{host}:{port}"


def connect_endpoint(address: str) -> str:
    """The ZeroMQ endpoint to connect to ``HOST:PORT``."""
    host, port = parse_address(address)
    return f"tcp://{host}:{port}"
