"""``fabric queue run``: a replica of a task queue; ``fabric task submit|get|list|cancel|retry``:
its tasks; ``fabric worker run MODULE``: a worker of the ``@task`` functions of MODULE
(docs/tasks.md).

Exit codes: 0 done; 1 failed (the queue did not answer or refused: full, a task finished
already; a replica or worker failed; ``--wait``: the task ended dead or cancelled); 2 usage (a
bad argument, payload or cron expression); 4 no such task.
"""
from __future__ import annotations

import json
import sys
from typing import Any

import click

from fabric.cli.common import EXIT_FAILED, EXIT_NOT_FOUND, EXIT_USAGE, FabricCommand, fail
from fabric.cli.nsclient import run_process

_QUEUE = click.option("--queue", "queue_name", default="tasks", show_default=True,
                      metavar="NAME", help="The queue's name.")
_TIMEOUT = click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=10.0,
                        show_default=True, metavar="S",
                        help="Seconds to wait for the queue's answer.")


@click.group("queue")
def queue_group() -> None:
    """Run task queues."""


@click.group("task")
def task_group() -> None:
    """Submit tasks and ask after them."""


@click.group("worker")
def worker_group() -> None:
    """Run task workers."""


@queue_group.command("run", cls=FabricCommand, ns=True, events=True)
@click.option("--name", required=True, help="The queue's name (its replicas find each other "
                                            "by it).")
@click.option("--replicas", type=click.IntRange(min=1), default=3, show_default=True,
              help="The size of the queue's replica group.")
@click.option("--data", "data_dir", required=True, metavar="DIR",
              help="Where this replica keeps its log and snapshots.")
@click.option("--listen-host", default="127.0.0.1", show_default=True, metavar="HOST",
              help="The address this replica's ports bind (any free port).")
@click.option("--lease", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              metavar="S", help="A running attempt's lease: a worker silent this long loses it.")
@click.option("--replace-after", type=click.FloatRange(min=0, min_open=True), default=10.0,
              show_default=True, metavar="S",
              help="Seconds a replica may be gone before a new one takes its seat.")
@click.option("--snapshot-entries", type=click.IntRange(min=1), default=10_000,
              show_default=True, metavar="N", help="Snapshot and compact every N entries.")
@click.option("--drain-timeout", type=click.FloatRange(min=0, min_open=True), default=10.0,
              show_default=True, metavar="S", help="Seconds a stop may take.")
@click.option("--control", default="127.0.0.1:0", show_default=True,
              help="HOST:PORT of the control socket (status, drain).")
def queue_run(name: str, replicas: int, data_dir: str, listen_host: str, lease: float,
              replace_after: float, snapshot_entries: int, drain_timeout: float, control: str,
              ns: str | None, as_json: bool) -> None:
    """Run one replica of the task queue NAME (start REPLICAS of them, on any hosts)."""
    from fabric.tasks.process import run_queue

    if listen_host.strip("[]") in ("0.0.0.0", "::", ""):
        fail(f"--listen-host must be an address the others can reach, not {listen_host!r}",
             EXIT_USAGE)
    run_process(ns, control, lambda names, endpoint: run_queue(
        names, name=name, data_dir=data_dir, size=replicas, listen_host=listen_host,
        control=endpoint, drain_timeout=drain_timeout, lease_s=lease, grace_s=replace_after,
        snapshot_threshold=snapshot_entries))


@worker_group.command("run", cls=FabricCommand, ns=True, events=True)
@click.argument("module", metavar="MODULE")
@_QUEUE
@click.option("--types", default=None, metavar="A,B",
              help="Serve only these task types (default: every @task of MODULE).")
@click.option("--concurrency", type=click.IntRange(min=1, max=10_000), default=1,
              show_default=True, help="Attempts run at once (the slots the queue fills).")
@click.option("--name", default=None, help="Name of this process (default: worker-PID).")
@click.option("--drain-timeout", type=click.FloatRange(min=0, min_open=True), default=30.0,
              show_default=True, metavar="S",
              help="Seconds a stop may take to finish what runs.")
@click.option("--control", default="127.0.0.1:0", show_default=True,
              help="HOST:PORT of the control socket (status, drain).")
def worker_run(module: str, queue_name: str, types: str | None, concurrency: int,
               name: str | None, drain_timeout: float, control: str, ns: str | None,
               as_json: bool) -> None:
    """Run a worker of the @task functions of MODULE (a module or a path/to/file.py)."""
    import importlib
    import os

    from fabric.errors import ConfigError
    from fabric.tasks.process import run_worker
    from fabric.tasks.worker import Worker, collect

    try:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        loaded = importlib.import_module(module)
    except ImportError as exc:
        fail(f"cannot import {module}: {exc}", EXIT_USAGE)
    wanted = {t for t in types.split(",") if t} if types else None
    try:
        handlers = collect(loaded, wanted)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    if not handlers:
        fail(f"{module} has no @task function", EXIT_USAGE)
    process = name or f"worker-{os.getpid()}"
    run_process(ns, control, lambda names, endpoint: run_worker(
        Worker(names, queue_name, handlers=handlers, capacity=concurrency), names,
        name=process, control=endpoint, drain_timeout=drain_timeout))


# ---------------------------------------------------------------------------- task commands

def _ask(ns: str | None, queue_name: str, timeout: float, action: Any) -> Any:
    """Run ``action(queue)`` against the queue; every failure is one line and an exit code."""
    import asyncio

    from fabric.cli.nsclient import given
    from fabric.errors import FabricError, Unavailable
    from fabric.tasks.client import TaskFailed, TaskQueue, TaskRefused

    addresses = given(ns)

    async def main() -> Any:
        from nameservice.client import NameServiceClient
        from nameservice.names import Names

        async with NameServiceClient(addresses, timeout=timeout) as client, \
                TaskQueue(Names(client), queue_name, timeout=timeout) as queue:
            return await action(queue)

    try:
        return asyncio.run(main())
    except TaskRefused as exc:  # a task the queue does not have, or will not take now
        fail(str(exc), EXIT_NOT_FOUND if str(exc).startswith("no task") else EXIT_FAILED)
    except TaskFailed as exc:
        fail(str(exc), EXIT_FAILED)
    except (Unavailable, TimeoutError) as exc:
        fail(f"queue {queue_name!r} unavailable: {exc}", EXIT_FAILED)
    except FabricError as exc:
        fail(str(exc), EXIT_FAILED)


def _print_task(task: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(task, default=repr))
        return
    result = task.get("result")
    error = (task.get("errors") or [""])[-1]
    click.echo(f"{task['id']}\t{task['type']}\t{task['state']}\tattempts={task['attempts']}"
               + (f"\tresult={json.dumps(result, default=repr)}" if task["state"] == "done"
                  else f"\terror={error}" if error else ""))


@task_group.command("submit", cls=FabricCommand, ns=True)
@click.argument("task_type", metavar="TYPE")
@click.argument("payload", metavar="JSON", default="null")
@_QUEUE
@click.option("--key", default=None, help="Idempotency key: a submit with a key seen before "
                                          "returns the first task, for good.")
@click.option("--at", "run_at", default=None, metavar="TIME",
              help="Not before TIME (ISO 8601 with a zone, or a Unix time).")
@click.option("--delay", type=click.FloatRange(min=0), default=None, metavar="S",
              help="Not before S seconds from now.")
@click.option("--every", type=click.FloatRange(min=0.05), default=None, metavar="S",
              help="Periodic: a task every S seconds.")
@click.option("--cron", default=None, metavar="EXPR", help="Periodic: a task at each "
                                                           "firing of EXPR (UTC).")
@click.option("--retries", type=click.IntRange(0, 1000), default=0, show_default=True,
              help="Attempts after the first that may fail.")
@click.option("--task-timeout", type=click.FloatRange(min=0), default=0.0, metavar="S",
              help="A handler's limit per attempt (0: none).")
@click.option("--version", "task_version", default="", help="Only workers of this version.")
@click.option("--wait", is_flag=True, help="Wait for the task to finish; print it.")
@_TIMEOUT
def task_submit(task_type: str, payload: str, queue_name: str, key: str | None,
                run_at: str | None, delay: float | None, every: float | None, cron: str | None,
                retries: int, task_timeout: float, task_version: str, wait: bool,
                timeout: float, ns: str | None, as_json: bool) -> None:
    """Submit a task of TYPE with the JSON payload; print its id (and whether it is new)."""
    try:
        body = json.loads(payload)
    except ValueError as exc:
        fail(f"the payload is not JSON: {exc}", EXIT_USAGE)
    when = _parse_time(run_at) if run_at is not None else None
    if when is not None and delay is not None:
        fail("give --at or --delay, not both", EXIT_USAGE)
    if every is not None and cron is not None:
        fail("give --every or --cron, not both", EXIT_USAGE)
    if cron is not None:
        import time

        from fabric.tasks.cron import Cron, CronError
        try:
            Cron.parse(cron).next_after(time.time())
        except CronError as exc:
            fail(f"--cron: {exc}", EXIT_USAGE)

    async def action(queue: Any) -> Any:
        handle = await queue.submit(task_type, body, key=key, run_at=when, delay=delay,
                                    every=every, cron=cron, retries=retries,
                                    timeout=task_timeout, version=task_version)
        if wait:
            try:
                await handle.result(timeout=None)
            except Exception:  # the task's end is printed below, whatever it is
                pass
            return await queue.get(handle.id)
        return {"id": handle.id, "created": handle.created}

    out = _ask(ns, queue_name, timeout, action)
    if wait:
        _print_task(out, as_json)
        sys.exit(0 if out["state"] == "done" else EXIT_FAILED)
    if as_json:
        click.echo(json.dumps(out))
    else:
        click.echo(out["id"] + ("" if out["created"] else "\t(submitted before)"))


def _parse_time(text: str) -> float:
    import datetime

    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        fail(f"--at: not a time: {text!r} (ISO 8601 with a zone, or a Unix time)", EXIT_USAGE)
    if when.tzinfo is None:
        fail(f"--at: {text!r} has no time zone (add Z or +HH:MM)", EXIT_USAGE)
    return when.timestamp()


@task_group.command("get", cls=FabricCommand, ns=True)
@click.argument("task_id", metavar="ID")
@_QUEUE
@_TIMEOUT
def task_get(task_id: str, queue_name: str, timeout: float, ns: str | None,
             as_json: bool) -> None:
    """Print a task (exit 4 if there is none)."""
    from fabric.tasks.client import TaskRefused

    async def action(queue: Any) -> Any:
        task = await queue.get(task_id)
        if task is None:
            raise TaskRefused(f"no task {task_id}")
        return task
    _print_task(_ask(ns, queue_name, timeout, action), as_json)


@task_group.command("list", cls=FabricCommand, ns=True)
@_QUEUE
@click.option("--state", default=None, type=click.Choice(
    ["scheduled", "waiting", "running", "failed", "done", "dead", "cancelled"]))
@click.option("--type", "task_type", default=None, help="Only tasks of this type.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@_TIMEOUT
def task_list(queue_name: str, state: str | None, task_type: str | None, limit: int,
              timeout: float, ns: str | None, as_json: bool) -> None:
    """List tasks, one per line (--json: one JSON object per line)."""
    for task in _ask(ns, queue_name, timeout,
                     lambda q: q.list(state=state, type=task_type, limit=limit)):
        _print_task(task, as_json)


@task_group.command("cancel", cls=FabricCommand, ns=True)
@click.argument("task_id", metavar="ID")
@_QUEUE
@_TIMEOUT
def task_cancel(task_id: str, queue_name: str, timeout: float, ns: str | None,
                as_json: bool) -> None:
    """Cancel a task that has not finished (a running attempt's result will be refused)."""
    _ask(ns, queue_name, timeout, lambda q: q.cancel(task_id))
    click.echo(json.dumps({"id": task_id, "cancelled": True}) if as_json else "cancelled")


@task_group.command("retry", cls=FabricCommand, ns=True)
@click.argument("task_id", metavar="ID")
@_QUEUE
@_TIMEOUT
def task_retry(task_id: str, queue_name: str, timeout: float, ns: str | None,
               as_json: bool) -> None:
    """Run a dead or cancelled task again, with a fresh count of attempts."""
    _ask(ns, queue_name, timeout, lambda q: q.retry(task_id))
    click.echo(json.dumps({"id": task_id, "retried": True}) if as_json else "retried")
