"""The name-service daemon: a Raft node over ZeroMQ serving the key-value store to clients.

    node.py       Node: builds the parts below, wires them, runs the loop
    clock.py      TickClock: the core's logical ticks and the one tick timer
    intake.py     RequestIntake: frames decoded and routed; requests parked without a leader
    writes.py     WriteBatcher: the writes of a step as one log entry; their waiters
    reads.py      ReadService: ReadIndex groups, reads waiting for apply, stale reads
    apply.py      Applier: committed entries into the state machine
    pipeline.py   ReadyPipeline: persist -> send -> apply -> advance; snapshots
    leadership.py LeaderTracker: leader changes, told to the parts
    seam.py       Transport (what a node needs of its transport) and Outbox
    transport.py  NodeTransport: the node's sockets (one ROUTER, one DEALER per peer)
    memtransport.py  MemoryNetwork: the in-memory twin (a cluster in one process)
    config.py     NodeSettings and the parsers of a node's own options
    daemon.py     running a node as a process (signals, exit codes)

docs/nameservice.md ("The server's parts") says what state each part owns. Nothing is
imported here: ``from nameservice.server.daemon import serve``,
``from nameservice.server.node import Node``.
"""
