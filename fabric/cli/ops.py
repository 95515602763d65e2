"""``fabric drain NAME`` and ``fabric status``: operating running fabric processes by name.

Both find processes through the name service (``process/<NAME>`` registrations, see
:mod:`fabric.runtime.registry`) and talk to each one's control socket (:mod:`nameservice.control`).

``fabric drain`` exit codes: 0 drained; 1 not drained (the reason and what was left, one
line), or the name service / the process unreachable; 4 no process of that name.
"""
from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import click

from fabric.cli.component import ns_addresses
from fabric.cli.ns import EXIT_FAILED, EXIT_NOT_FOUND, _fail, _ns_option

RATE_SAMPLE_S = 0.5


def _run(ns: str | None, action) -> Any:
    from fabric.errors import FabricError, NameNotFound
    from nameservice.client import NameServiceClient
    from nameservice.errors import NameServiceError

    addresses = ns_addresses(ns)

    async def main() -> Any:
        async with NameServiceClient(addresses, timeout=5.0) as client:
            return await action(client)

    try:
        return asyncio.run(main())
    except NameNotFound as exc:
        _fail(str(exc), EXIT_NOT_FOUND)
    except NameServiceError as exc:
        _fail(f"name service: {exc}", EXIT_FAILED)
    except (FabricError, OSError, asyncio.TimeoutError) as exc:
        _fail(str(exc) or type(exc).__name__, EXIT_FAILED)


@click.command("drain")
@click.argument("name")
@click.option("--timeout", type=float, default=30.0, show_default=True,
              help="Seconds to wait for the process to report it drained.")
@_ns_option
def drain(name: str, timeout: float, ns: str | None) -> None:
    """Drain the process NAME: it deregisters, stops taking work, flushes what it holds and
    exits. Exit 0 once drained, 1 if it could not be, 4 if no process has that name."""
    from fabric.runtime.registry import find_process
    from nameservice.control import control_request

    async def action(client) -> list[dict]:
        from nameservice.names import Names

        found = await find_process(Names(client), name)
        return list(await asyncio.gather(
            *(control_request(e.endpoint, "drain", timeout) for e in found)))

    began = time.monotonic()
    replies = _run(ns, action)
    failed = [r for r in replies if not r.get("complete", False)]
    if failed:
        left = failed[0].get("left") or []
        where = "; ".join(f"{item.get('messages', '?')} messages {item.get('where', '')}, "
                          f"{item.get('fate', '')}" for item in left[:3])
        _fail(f"{name} not drained: {failed[0].get('left_messages', '?')} messages not "
              f"flushed{': ' + where if where else ''}", EXIT_FAILED)
    click.echo(f"{name} drained in {(time.monotonic() - began) * 1000:.0f} ms")


async def collect_status(client: Any, timeout: float = 1.0,
                         sample: float = RATE_SAMPLE_S) -> dict[str, Any]:
    """Channels and processes from the registry, each process's status from its control
    socket (asked twice, ``sample`` seconds apart, for rates)."""
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


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--watch", is_flag=True, help="Redraw the table every second until Ctrl-C.")
@_ns_option
def status(as_json: bool, watch: bool, ns: str | None) -> None:
    """Show channels with their intermediaries, and every registered process with its kind,
    endpoints, in-flight counts and message rates."""
    if as_json:
        click.echo(json.dumps(_run(ns, collect_status), default=str))
        return
    if not watch:
        _print_table(_run(ns, collect_status))
        return
    try:
        while True:
            result = _run(ns, collect_status)
            click.clear()
            click.echo(time.strftime("%H:%M:%S") + "  (Ctrl-C to stop)\n")
            _print_table(result)
            time.sleep(max(0.0, 1.0 - RATE_SAMPLE_S))
    except KeyboardInterrupt:
        pass


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
        click.echo(f"{row['name']:<24} {row.get('kind', '?'):<13} "
                   f"{row.get('channel', '') or '':<12} {_in_flight(st):>9}  {rates or '-'}")


def _in_flight(st: dict) -> str:
    numbers = _numbers(st)
    total = sum(v for k, v in numbers.items()
                if k.startswith("in_flight."))
    return f"{total:,.0f}"
