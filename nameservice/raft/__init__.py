"""A pure (sans-IO) Raft core: no sockets, no clock, no disk, no threads."""
