"""The intermediary: the stateless hop between a channel's producers and its consumers.

``core.py`` is the forwarding loop (``Intermediary``): it takes batches from producers on one
ROUTER socket (``router.py``), queues them (``batchqueue.py``), hands them to consumers by
credit, routes acknowledgements back, runs the claim rounds that settle what a lost peer held
(``claims.py``), and tells its own stalls from its peers' deaths (``stall.py``); ``peers.py``
holds what it knows of each peer, its counters, and what a drain left.
``process.py`` runs one as a process with a control socket. Nothing is imported here.
"""
