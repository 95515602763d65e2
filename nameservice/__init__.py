"""The replicated name service: Raft over ZeroMQ, a key-value store with revisions, leases
and watches."""
