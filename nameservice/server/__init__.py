"""The name-service daemon: a Raft node over ZeroMQ serving the key-value store to clients.

    config.py     NodeSettings and the parsers of a node's own options
    transport.py  the node's sockets (one ROUTER, one DEALER per peer)
    node.py       the driver loop: Raft core + storage + key-value machine + requests
    daemon.py     running a node as a process (signals, exit codes)

Nothing is imported here: ``from nameservice.server.daemon import serve``,
``from nameservice.server.node import Node``.
"""
