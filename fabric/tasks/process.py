"""The queue and its workers as processes: ``fabric queue run`` and ``fabric worker run``.

Both stop cleanly on SIGTERM or SIGINT (and ``fabric drain NAME``, through the control socket
registered as ``process/<name>``): a queue replica that leads lets what it proposed be applied
and hands its leadership over; a worker takes nothing more, finishes what runs, reports it, and
deregisters. Events: ``control`` (``endpoint``) at start; ``queue`` (``id``, ``address``,
``serve``) or ``worker`` (``id``, ``types``) once running; ``stopped`` at the end.
"""
from __future__ import annotations

import logging
import os
from typing import Any

from fabric.runtime.service import serve_process
from fabric.tasks.service import QueueReplica
from fabric.tasks.worker import Worker
from nameservice.logs import event

log = logging.getLogger(__name__)

__all__ = ["run_queue", "run_worker"]


async def run_queue(names: Any, *, name: str, data_dir: str, size: int, listen_host: str,
                    control: str, drain_timeout: float, lease_s: float, grace_s: float,
                    snapshot_threshold: int) -> int:
    """Run one replica of the queue ``name`` until asked to stop; the exit code."""
    _refuse_keys("the task queue")
    replica = QueueReplica(names, name=name, data_dir=data_dir, size=size,
                           listen_host=listen_host, lease_s=lease_s, grace_s=grace_s,
                           snapshot_threshold=snapshot_threshold)

    async def started() -> None:
        await replica.ready.wait()
        event(log, "queue", id=replica.group.node_id, address=replica.group.address,
              serve=replica.serve)

    return await serve_process(names, f"queue-{name}-{os.getpid()}", "queue", replica.status,
                        lambda stop: replica.run(stop, drain_timeout=drain_timeout),
                        started, drain_timeout, control)


async def run_worker(worker: Worker, names: Any, *, name: str, control: str,
                     drain_timeout: float) -> int:
    """Run ``worker`` until asked to stop; the exit code."""
    _refuse_keys("a task worker")
    def status() -> dict[str, Any]:
        return {"kind": "worker", "id": worker.id, "queue": worker.queue,
                "types": {t: v for t, (_, v) in worker.handlers.items()},
                "capacity": worker.capacity, "running": len(worker.running),
                "counters": dict(worker.counters)}

    async def started() -> None:
        event(log, "worker", id=worker.id, types=sorted(worker.handlers))

    return await serve_process(names, name, "worker", status,
                        lambda stop: worker.run(stop, drain_timeout=drain_timeout), started,
                        drain_timeout, control)


def _refuse_keys(what: str) -> None:
    """The queue's sockets have no access rules yet: with keys, refuse in one line rather than
    serve an open socket beside secured ones."""
    from fabric.errors import ConfigError
    from nameservice.security.context import current as security

    if security().secure:
        raise ConfigError(f"{what} does not run with keys yet (its sockets have no access "
                          f"rules: docs/tasks.md, \"Not yet\")")
