"""``fabric drain NAME`` and ``fabric status``: operating running fabric processes by name.

Both find processes through the name service (``process/<NAME>`` registrations, see
:mod:`fabric.runtime.registry`) and talk to each one's control socket (:mod:`nameservice.control`).

``fabric drain`` exit codes: 0 drained; 1 not drained (the reason and what was left, one
line), or the name service / the process unreachable; 4 no process of that name; 130
interrupted.
"""
from __future__ import annotations

import time
from typing import Any

import click

from fabric.cli.common import EXIT_FAILED, FabricCommand, fail

RATE_SAMPLE_S = 0.5


def _run(ns: str | None, timeout: float, action: Any) -> Any:
    from fabric.cli.nsclient import cluster, run

    return run(",".join(cluster(ns)), timeout, action)


def _echo_json(value: Any) -> None:
    import json

    click.echo(json.dumps(value, default=str))


@click.command("drain", cls=FabricCommand, ns=True)
@click.argument("name")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=30.0,
              show_default=True, metavar="S",
              help="Seconds to wait for the process to report it drained.")
def drain(name: str, timeout: float, ns: str | None, as_json: bool) -> None:
    """Drain the process NAME: it deregisters, stops taking work, flushes what it holds and
    exits. Exit 0 once drained, 1 if it could not be, 4 if no process has that name
    (--json: the processes' drain reports)."""
    import asyncio

    from fabric.runtime.registry import find_process
    from nameservice.control import control_request

    async def action(client: Any) -> list[dict]:
        from nameservice.names import Names

        found = await find_process(Names(client), name)
        return list(await asyncio.gather(
            *(control_request(e.endpoint, "drain", timeout) for e in found)))

    began = time.monotonic()
    replies = _run(ns, min(timeout, 5.0), action)
    elapsed_ms = round((time.monotonic() - began) * 1000)
    failed = [r for r in replies if not r.get("complete", False)]
    if as_json:
        _echo_json({"name": name, "drained": not failed, "elapsed_ms": elapsed_ms,
                    "reports": replies})
    if failed:
        left = failed[0].get("left") or []
        where = "; ".join(f"{item.get('messages', '?')} messages {item.get('where', '')}, "
                          f"{item.get('fate', '')}" for item in left[:3])
        fail(f"{name} not drained: {failed[0].get('left_messages', '?')} messages not "
             f"flushed{': ' + where if where else ''}", EXIT_FAILED)
    if not as_json:
        click.echo(f"{name} drained in {elapsed_ms} ms")


async def collect_status(client: Any, timeout: float = 1.0,
                         sample: float = RATE_SAMPLE_S) -> dict[str, Any]:
    """Channels and processes from the registry, each process's status from its control
    socket (asked twice, ``sample`` seconds apart, for rates)."""
    import asyncio

    from fabric.runtime.registry import CHANNEL, PROCESS, list_names
    from nameservice.control import control_request

    channels = await list_names(client, CHANNEL)
    processes = await list_names(client, PROCESS)
    targets = [(name[len(PROCESS):], entry) for name, entries in sorted(processes.items())
               for entry in entries]

    async def ask(endpoint: str) -> dict:
        try:
            return await control_request(endpoint, "status", timeout)
        except Exception as exc:  # one row per process, whatever happened to it
            return {"error": str(exc) or type(exc).__name__}

    first = await asyncio.gather(*(ask(e["endpoint"]) for _, e in targets))
    await asyncio.sleep(sample)
    second = await asyncio.gather(*(ask(e["endpoint"]) for _, e in targets))
    rows = []
    for (name, entry), a, b in zip(targets, first, second):
        rows.append({"name": name, "control": entry["endpoint"], **entry["meta"],
                     "status": b, "rates": _rates(a, b, sample)})
    return {
        "channels": {name[len(CHANNEL):]: sorted(e["endpoint"] for e in entries)
                     for name, entries in sorted(channels.items())},
        "processes": rows,
    }


def _numbers(status: Any, prefix: str = "") -> dict[str, float]:
    """Every numeric counter in a (nested) status dict, by dotted path."""
    out: dict[str, float] = {}
    if isinstance(status, dict):
        for key, value in status.items():
            out.update(_numbers(value, f"{prefix}{key}."))
    elif isinstance(status, list):
        for i, value in enumerate(status):
            out.update(_numbers(value, f"{prefix}{i}."))
    elif isinstance(status, (int, float)) and not isinstance(status, bool):
        out[prefix[:-1]] = status
    return out


def _rates(a: dict, b: dict, seconds: float) -> dict[str, float]:
    """Per-second rates of the message counters that grew between two status samples."""
    before, after = _numbers(a), _numbers(b)
    return {key: round((after[key] - before[key]) / seconds, 1)
            for key in after
            if key in before and "messages" in key and after[key] > before[key]
            and not key.startswith("in_flight.")}


@click.command("status", cls=FabricCommand, ns=True)
@click.option("--watch", is_flag=True,
              help="Redraw every second until SIGTERM (exit 0) or Ctrl-C (exit 130); with "
                   "--json, one object per line.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=5.0,
              show_default=True, metavar="S",
              help="Seconds before giving up on the name service; each process's control "
                   "socket gets at most 1 s of it.")
def status(watch: bool, timeout: float, ns: str | None, as_json: bool) -> None:
    """Show channels with their intermediaries, and every registered process with its kind,
    endpoints, in-flight counts and message rates (--json: one object)."""
    import signal

    def collect(client: Any) -> Any:
        return collect_status(client, timeout=min(1.0, timeout))

    if not watch:
        result = _run(ns, timeout, collect)
        if as_json:
            _echo_json(result)
        else:
            _print_table(result)
        return
    stop: list[int] = []  # SIGTERM ends it cleanly; Ctrl-C interrupts it (130)
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.append(signum))
    while not stop:
        result = _run(ns, timeout, collect)
        if as_json:
            _echo_json(result)
        else:
            click.clear()
            click.echo(time.strftime("%H:%M:%S") + "  (Ctrl-C to stop)\n")
            _print_table(result)
        time.sleep(max(0.0, 1.0 - RATE_SAMPLE_S))


def _print_table(result: dict) -> None:
    click.echo("CHANNEL              INTERMEDIARIES")
    for channel, endpoints in result["channels"].items():
        click.echo(f"{channel:<20} {', '.join(endpoints) or '-'}")
    click.echo("")
    click.echo(f"{'PROCESS':<24} {'KIND':<13} {'CHANNEL':<12} {'IN FLIGHT':>9}  RATES (msgs/s)")
    for row in result["processes"]:
        st = row["status"]
        if "error" in st:
            click.echo(f"{row['name']:<24} {row.get('kind', '?'):<13} "
                       f"{row.get('channel', '') or '':<12} {'-':>9}  unreachable: {st['error']}")
            continue
        rates = ", ".join(f"{k.rsplit('.', 1)[-1]} {v:,.0f}" for k, v in row["rates"].items())
        if row.get("kind") == "nameservice":  # a name-service node: no messages, a role
            rates = f"{st.get('role', '?')}, term {st.get('term', '?')}"
        elif row.get("kind") == "stateful":  # replicas: a role and an applied index each
            rates = "; ".join(f"p{r.get('partition')} {r.get('role', '?')} term "
                              f"{r.get('term', '?')} applied {r.get('applied_index', '?')}"
                              for r in st.get("replicas", ()))
        elif row.get("kind") == "queue":  # a queue replica: its role, and its tasks by state
            counts = st.get("counts", {})
            rates = (f"{st.get('role', '?')} term {st.get('term', '?')} applied "
                     f"{st.get('applied_index', '?')}; " + (", ".join(
                         f"{state} {n:,}" for state, n in sorted(counts.items())) or "no tasks"))
        elif row.get("kind") == "agent":  # a host's agent: its instances; the manager's role
            states = [i.get("state") for i in st.get("instances", {}).values()]
            manager = st.get("manager") or {}
            rates = (f"{states.count('running')}/{len(states)} instances running, slots "
                     f"{st.get('slots', '?')}, fenced {st.get('fenced', 0)}"
                     + ("; the acting manager" if manager.get("acting") else ""))
        elif row.get("kind") == "worker":  # a worker: slots in use, tasks run
            counters = st.get("counters", {})
            rates = (f"running {st.get('running', '?')}/{st.get('capacity', '?')}, done "
                     f"{counters.get('succeeded', 0):,}, failed {counters.get('failed', 0):,}")
        click.echo(f"{row['name']:<24} {row.get('kind', '?'):<13} "
                   f"{row.get('channel', '') or '':<12} {_in_flight(st):>9}  {rates or '-'}")


def _in_flight(st: dict) -> str:
    numbers = _numbers(st)
    total = sum(v for k, v in numbers.items()
                if k.startswith("in_flight."))
    return f"{total:,.0f}"
