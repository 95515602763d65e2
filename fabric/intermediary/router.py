"""The intermediary's ROUTER socket: its options, and binding it again after a freeze."""
from __future__ import annotations

import errno
import time

import zmq

from fabric import protocol as p
from nameservice.security.context import current as security

HWM = 100_000
REBIND_PATIENCE = 5.0  # seconds to wait for the old port to be released


def bind_router(ctx: zmq.Context, endpoint: str, patience: float = 0.0) -> zmq.Socket:
    """A ROUTER bound to ``endpoint``. With ``patience``, an address still in use (libzmq
    releases a closed socket's port asynchronously) is retried for that many seconds."""
    deadline = time.monotonic() + patience
    while True:
        sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # an unroutable send fails, not vanishes
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a reconnecting peer takes over its id
        sock.setsockopt(zmq.SNDHWM, HWM)
        sock.setsockopt(zmq.RCVHWM, HWM)
        # Frames above MAX_FRAME are counted and dropped by the code; far larger ones make
        # libzmq close the offending connection before it can use up memory.
        sock.setsockopt(zmq.MAXMSGSIZE, 4 * p.MAX_FRAME)
        security().serve(sock)
        try:
            sock.bind(endpoint)
            return sock
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                raise
        time.sleep(0.01)
