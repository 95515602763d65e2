"""The butterfly demo's numbers, computed from what the processes wrote (pure functions).

Producers send ids ``index << 40 | i`` for i < count; consumers write one record per delivered
message (id, arrival time, intermediary number, redelivered). From those alone:

* ``sent``: the producers' counts, summed; ``delivered``: distinct ids delivered;
* ``duplicates``: deliveries beyond the first of an id (across all consumers);
* ``lost``: ids sent and never delivered; ``redelivered``: deliveries flagged redelivered;
* ``failover_ms``: the longest pause in delivery from an intermediary's SIGKILL until
  ``FAILOVER_WINDOW_S`` later (time to the first delivery after the kill included);
* ``throughput_msgs_s``: deliveries per second from the first to the last.

``reresolve_ms`` and ``drain_ms`` are measured by the scenario and passed in, and so is
``secure`` (whether every process ran with keys). With keys, :func:`security_summary` sums
what the processes' statuses said of their security.
"""
from __future__ import annotations

import bisect
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

RECORD = struct.Struct("<QdHB")  # the layout of fabric/butterfly/consumer.py
ID_SHIFT = 40
FAILOVER_WINDOW_S = 2.0
FIELDS = ("sent", "delivered", "duplicates", "lost", "redelivered", "failover_ms",
          "reresolve_ms", "drain_ms", "throughput_msgs_s", "secure")
ZAP_COUNTERS = ("zap_allowed", "zap_refused_unknown_key", "zap_refused_mechanism",
                "zap_bad_requests")


@dataclass(frozen=True, slots=True)
class Delivery:
    """One delivered message as a consumer recorded it."""

    ident: int
    at: float
    via: str  # the intermediary's endpoint
    redelivered: bool


def read_deliveries(data: bytes, vias: dict[int, str]) -> list[Delivery]:
    """Decode a consumer's record file (a torn last record is ignored)."""
    usable = len(data) - len(data) % RECORD.size
    return [Delivery(ident, at, vias.get(via, f"#{via}"), bool(flag))
            for ident, at, via, flag in RECORD.iter_unpack(data[:usable])]


def longest_gap_ms(times: list[float], start: float, window: float) -> float:
    """The longest pause between deliveries in ``[start, start + window]``, counting the wait
    from ``start`` to the first delivery; ``times`` sorted. 0 when nothing was delivered after."""
    i = bisect.bisect_left(times, start)
    end = start + window
    previous, gap = start, 0.0
    while i < len(times) and times[i] <= end:
        gap = max(gap, times[i] - previous)
        previous = times[i]
        i += 1
    if i == len(times) and previous == start:
        return 0.0
    return gap * 1000


def summarize(sent: dict[int, int], deliveries: Iterable[Delivery], *,
              kill_at: float | None, reresolve_ms: float | None,
              drain_ms: float | None, secure: bool = False) -> dict[str, float | int | None]:
    """The demo's result, with exactly the keys in :data:`FIELDS`."""
    seen: set[int] = set()
    total = redelivered = 0
    times: list[float] = []
    for d in deliveries:
        total += 1
        seen.add(d.ident)
        redelivered += d.redelivered
        times.append(d.at)
    times.sort()
    expected = sum(sent.values())
    delivered_sent = sum(1 for ident in seen
                         if (ident & ((1 << ID_SHIFT) - 1)) < sent.get(ident >> ID_SHIFT, 0))
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    return {
        "sent": expected,
        "delivered": len(seen),
        "duplicates": total - len(seen),
        "lost": expected - delivered_sent,
        "redelivered": redelivered,
        "failover_ms": (None if kill_at is None
                        else round(longest_gap_ms(times, kill_at, FAILOVER_WINDOW_S), 1)),
        "reresolve_ms": None if reresolve_ms is None else round(reresolve_ms, 1),
        "drain_ms": None if drain_ms is None else round(drain_ms, 1),
        "throughput_msgs_s": round(total / span) if span > 0 else 0,
        "secure": secure,
    }


def security_summary(statuses: dict[str, dict]) -> dict[str, Any]:
    """From each process's ``security`` status (process name -> the dict its status gave,
    the last one before it stopped): its mode, identity and ZAP counters (and ``error`` if it
    could not be asked), the processes in CURVE mode (``curve``), the counters summed over
    every process (``ZAP_COUNTERS``) and ``refused`` (every refusal)."""
    processes = {name: {"mode": found.get("mode", "?"), "identity": found.get("identity"),
                        **{c: int(found.get(c, 0)) for c in ZAP_COUNTERS},
                        **({"error": found["error"]} if "error" in found else {})}
                 for name, found in sorted(statuses.items())}
    totals = {c: sum(p[c] for p in processes.values()) for c in ZAP_COUNTERS}
    return {"processes": processes,
            "curve": sum(p["mode"] == "curve" for p in processes.values()),
            **totals, "refused": sum(v for c, v in totals.items() if c != "zap_allowed")}


def timeline(deliveries: Iterable[Delivery], start: float,
             bin_s: float = 0.1) -> dict[str, list[int]]:
    """Deliveries per ``bin_s`` seconds since ``start``, per intermediary endpoint."""
    counts: dict[str, list[int]] = {}
    for d in deliveries:
        slot = max(0, int((d.at - start) / bin_s))
        row = counts.setdefault(d.via, [])
        if len(row) <= slot:
            row.extend([0] * (slot + 1 - len(row)))
        row[slot] += 1
    width = max((len(r) for r in counts.values()), default=0)
    return {via: row + [0] * (width - len(row)) for via, row in counts.items()}
