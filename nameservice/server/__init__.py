"""The name-service daemon: a Raft node over ZeroMQ serving the key-value store to clients.

    wire.py       frame header, Raft peer message codec, client request/reply layout
    config.py     NodeSettings and the parsers for addresses, cluster lists and timeouts
    transport.py  the node's sockets (one ROUTER, one DEALER per peer)
    node.py       the driver loop: Raft core + storage + key-value machine + requests
    daemon.py     running a node as a process (signals, exit codes)
"""
from nameservice.server.config import NodeSettings, parse_addresses, parse_cluster
from nameservice.server.daemon import serve
from nameservice.server.node import Node

__all__ = ["Node", "NodeSettings", "parse_addresses", "parse_cluster", "serve"]
