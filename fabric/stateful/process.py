"""A replica as a process: ``fabric component run MOD:CLASS --replicas N --data DIR``.

The process runs one ``Replica`` of each partition it is given (each partition is a group of
its own, with its own Raft address and its data in ``DIR/p<P>``). It serves a control socket
(``status``: every replica's status; ``drain``: stop cleanly) registered as ``process/<name>``
with ``{"kind": "stateful"}``, and stops cleanly on SIGTERM or SIGINT: a leader replica lets
what it proposed be applied and acknowledged, hands its leadership over, then the process exits
0. Its events: ``control`` (``endpoint``) at start; ``replica`` (``partition``, ``id``,
``address``) once each replica runs; ``stopped`` at the end.
"""
from __future__ import annotations

import asyncio
import faulthandler
import logging
import os
import secrets
import signal
from collections.abc import Sequence
from typing import Any

from fabric.errors import ConfigError
from fabric.ports.partitioned import partition_channel
from fabric.stateful.component import Stateful
from fabric.stateful.replica import Replica
from fabric.stateful.seats import GRACE_S
from nameservice.logs import event
from nameservice.security.context import current as security
from nameservice.security.follow import follow_rules

log = logging.getLogger(__name__)

__all__ = ["STOP_GRACE_S", "run_replicas"]

STOP_GRACE_S = 10.0
"""Beyond the drain timeout, how long a stop may take before the process gives up on it."""


async def run_replicas(component_class: type[Stateful], names: Any, *, name: str,
                       data_dir: str, size: int, partitions: list[int],
                       total_partitions: int, listen_host: str,
                       input: str | None, output: str | None, control: str, drain_timeout: float,
                       election_timeout_ms: tuple[int, int] = (150, 300),
                       snapshot_threshold: int = 10_000, grace_s: float = GRACE_S) -> int:
    """Run one replica of each of ``partitions`` (of ``total_partitions``) until asked to stop;
    the exit code (0; 1 if a replica failed). With several partitions, the input channel is
    declared with that many (``ConfigError`` if it was declared with another count) and the
    replica of partition P consumes ``partition_channel(input, P, total_partitions)``."""
    from fabric.runtime.registry import channel_partitions, declare_partitions, process_name
    from nameservice.control import ControlServer

    if security().secure:
        raise ConfigError("stateful components do not run with keys yet (their replicas' Raft "
                          "port has no rule of its own: docs/stateful.md, \"Not yet\")")
    channel = input or component_class.input
    if channel is None:
        raise ConfigError(f"{component_class.__name__} names no input channel: give --input")
    if total_partitions > 1:
        await declare_partitions(names.client, channel, total_partitions)
    elif (have := await channel_partitions(names.client, channel)) != 1:
        raise ConfigError(f"channel {channel!r} has {have} partitions: give --partitions {have}")
    out = output or component_class.output
    if out is not None and (have := await channel_partitions(names.client, out)) != 1:
        raise ConfigError(f"the output channel {out!r} has {have} partitions; a stateful "
                          f"component emits to a channel of one")
    token = secrets.token_hex(8)  # this process, among those running the same partitions
    replicas = [Replica(_make(component_class), names, name=name, partition=partition, size=size,
                        data_dir=os.path.join(data_dir, f"p{partition}"),
                        listen=f"{listen_host}:0",
                        input=partition_channel(channel, partition, total_partitions),
                        output=output, process=token, balance=total_partitions > 1,
                        election_timeout_ms=election_timeout_ms,
                        snapshot_threshold=snapshot_threshold, grace_s=grace_s)
                for partition in partitions]
    stop = asyncio.Event()

    def status() -> dict[str, Any]:
        return {"kind": "stateful", "name": name, "draining": stop.is_set(),
                "replicas": [replica.status() for replica in replicas]}

    async def drain(timeout: float | None) -> dict[str, Any]:
        on_signal()
        results = await asyncio.gather(*runs, return_exceptions=True)
        left = sum(replica.left_unacknowledged for replica in replicas)
        failed = [str(r) for r in results if isinstance(r, BaseException)]
        return {"kind": "stateful", "name": name, "complete": not left and not failed,
                "left_messages": left, "failed": failed,
                "left": [{"messages": left, "where": "received by the leader, not applied",
                          "fate": "redelivered to the next leader"}] if left else []}

    server = ControlServer(status, drain, control).start()
    event(log, "control", endpoint=server.endpoint)
    client = getattr(names, "client", None)
    rules = asyncio.ensure_future(follow_rules(client, security())) if client else None
    loop = asyncio.get_running_loop()
    watchdog: list[asyncio.TimerHandle] = []

    def on_signal() -> None:
        stop.set()
        if not watchdog:  # a stop that hangs says where, and ends anyway
            watchdog.append(loop.call_later(drain_timeout + STOP_GRACE_S, _stuck, name))

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    runs = [asyncio.ensure_future(replica.run(stop, drain_timeout=drain_timeout))
            for replica in replicas]
    registration = None
    try:
        for replica in replicas:
            await _ready(replica, runs)
            event(log, "replica", partition=replica.partition, id=replica.node_id,
                  address=replica.address)
        registration = await names.register(process_name(name), server.endpoint,
                                            {"kind": "stateful", "channel": channel})
        results = await asyncio.gather(*runs, return_exceptions=True)
    finally:
        stop.set()
        for handle in watchdog:
            handle.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        if registration is not None:
            try:
                await registration.close()
            except Exception as exc:  # the lease expires by itself
                log.warning("could not deregister %s: %s", name, exc)
        if rules is not None:
            rules.cancel()
        await server.answered()
        server.close()
    failed = [r for r in results if isinstance(r, BaseException)]
    for error in failed:
        log.error("replica failed: %s", error, exc_info=error)
    event(log, "stopped", failed=len(failed),
          left=sum(replica.left_unacknowledged for replica in replicas))
    return 1 if failed else 0


def _make(component_class: type[Stateful]) -> Stateful:
    """A new instance of the component; ConfigError (one line) if its constructor fails."""
    try:
        return component_class()
    except Exception as exc:
        raise ConfigError(f"{component_class.__name__}() failed: {exc!r}") from exc


def _stuck(name: str) -> None:
    """The stop did not end in time: every thread's stack to stderr, then exit 1."""
    log.error("%s did not stop within its drain timeout + %g s; stacks follow", name,
              STOP_GRACE_S)
    faulthandler.dump_traceback(all_threads=True)
    os._exit(1)


async def _ready(replica: Replica, runs: Sequence[asyncio.Future]) -> None:
    """Wait until ``replica`` runs; raise what a replica failed with first."""
    ready = asyncio.ensure_future(replica.ready.wait())
    await asyncio.wait({ready, *runs}, return_when=asyncio.FIRST_COMPLETED)
    if not ready.done():
        ready.cancel()
        for run in runs:
            if run.done():
                run.result()  # raises
        raise RuntimeError("a replica stopped before it was ready")
