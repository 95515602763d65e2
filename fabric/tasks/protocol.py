"""The queue's wire protocol: what clients and workers send to a queue replica and what they get
back (docs/tasks-protocol.md gives it frame by frame, for other languages).

Every message is ONE ZeroMQ frame holding a msgpack array whose first item is a string naming
it. Clients and workers connect a DEALER to a replica's ROUTER (``serve`` in the replica's
registration, name ``queue/<name>``); a replica that does not lead answers ``redirect`` with
the leader's address ("" while there is none).

Requests carry ``rid`` (an integer the sender picks) and get exactly one answer with the same
``rid``, except ``run``, which the queue sends to a worker unasked.
"""
from __future__ import annotations

import math
import time
from typing import Any

import msgpack

from fabric.errors import DecodeError
from fabric.tasks.cron import Cron, CronError

__all__ = ["MAX_FRAME", "MAX_PAYLOAD", "TaskSpec", "decode", "encode", "queue_name",
           "spec_from_map", "workers_name"]

MAX_FRAME = 8 << 20
"""The largest frame a replica or worker takes (larger: counted and dropped)."""
MAX_PAYLOAD = 1 << 20
"""The largest payload or result of one task, encoded."""
MAX_BATCH = 10_000
"""The most tasks in one submit, results in one report, attempts in one heartbeat."""
MIN_EVERY_S = 0.05
"""The shortest period of a periodic task."""

# Client -> queue
SUBMIT, GET, LIST, CANCEL, RETRY, WAIT, STATS = (
    "submit", "get", "list", "cancel", "retry", "wait", "stats")
# Worker -> queue
HELLO, BEAT, RESULT = "hello", "beat", "result"
# Queue -> client or worker
SUBMITTED, TASK, TASKS, OK, ERROR, REDIRECT, WELCOME, BEATEN, RECORDED, RUN = (
    "submitted", "task", "tasks", "ok", "error", "redirect", "welcome", "beaten", "recorded",
    "run")


def cut_by_size(rows: list[Any], limit: int = MAX_FRAME // 2) -> list[list[Any]]:
    """``rows`` cut into lists whose encoding stays under ``limit`` bytes (a row larger than
    that alone goes in a list of its own)."""
    if len(msgpack.packb(rows, use_bin_type=True)) <= limit:
        return [rows]
    out: list[list[Any]] = []
    chunk: list[Any] = []
    size = 0
    for row in rows:
        row_size = len(msgpack.packb(row, use_bin_type=True))
        if chunk and size + row_size > limit:
            out.append(chunk)
            chunk, size = [], 0
        chunk.append(row)
        size += row_size
    if chunk:
        out.append(chunk)
    return out


def queue_name(name: str) -> str:
    """The name-service name a queue's replicas register under."""
    return f"queue/{name}"


def workers_name(name: str) -> str:
    """The name-service name a queue's workers register under."""
    return f"queue/{name}/workers"


def encode(*items: Any) -> bytes:
    """One frame of ``items``."""
    return msgpack.packb(list(items), use_bin_type=True)


def decode(frame: bytes) -> list[Any]:
    """The items of one frame; DecodeError if it is not a msgpack array starting with a
    string."""
    if len(frame) > MAX_FRAME:
        raise DecodeError(f"a frame of {len(frame)} bytes (at most {MAX_FRAME})")
    try:
        items = msgpack.unpackb(frame, raw=False, use_list=True, strict_map_key=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise DecodeError(f"not msgpack: {exc!r}") from None
    if not isinstance(items, list) or not items or not isinstance(items[0], str):
        raise DecodeError("not an array starting with the message's name")
    return items


class TaskSpec:
    """A task as submitted, checked: what the leader turns into a SUBMIT command."""

    __slots__ = ("type", "payload", "key", "once", "run_at", "delay", "every", "cron",
                 "retries", "timeout", "version", "backoff")

    def __init__(self, type: str, payload: Any = None, *, key: str | None = None,
                 once: str | None = None, run_at: float | None = None,
                 delay: float | None = None, every: float | None = None,
                 cron: str | None = None, retries: int = 0, timeout: float = 0.0,
                 version: str = "", backoff: float = 1.0) -> None:
        self.type, self.payload, self.key, self.once = type, payload, key, once
        self.run_at, self.delay, self.every, self.cron = run_at, delay, every, cron
        self.retries, self.timeout, self.version, self.backoff = retries, timeout, version, backoff

    def to_map(self) -> dict[str, Any]:
        """The spec as the submit frame carries it (fields left at their default omitted)."""
        out: dict[str, Any] = {"type": self.type, "payload": self.payload}
        for name in ("key", "once", "run_at", "delay", "every", "cron"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        for name, default in (("retries", 0), ("timeout", 0.0), ("version", ""),
                              ("backoff", 1.0)):
            if getattr(self, name) != default:
                out[name] = getattr(self, name)
        return out


def _number(spec: dict[str, Any], name: str, *, low: float = 0.0) -> float | None:
    value = spec.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value < low:
        raise DecodeError(f"{name} must be a number >= {low:g}, not {value!r}")
    return float(value)


def _text(spec: dict[str, Any], name: str, limit: int = 256) -> str | None:
    value = spec.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > limit:
        raise DecodeError(f"{name} must be a non-empty string of at most {limit} characters")
    return value


def spec_from_map(spec: Any) -> TaskSpec:
    """The spec of a submit frame, checked; DecodeError saying what is wrong."""
    if not isinstance(spec, dict):
        raise DecodeError("a task spec must be a map")
    unknown = set(spec) - set(TaskSpec.__slots__)
    if unknown:
        raise DecodeError(f"unknown task field(s): {', '.join(sorted(map(str, unknown)))}")
    task_type = _text(spec, "type", 128)
    if task_type is None:
        raise DecodeError("a task needs a type")
    if spec.get("run_at") is not None and spec.get("delay") is not None:
        raise DecodeError("give run_at or delay, not both")
    every, cron = _number(spec, "every", low=MIN_EVERY_S), _text(spec, "cron")
    if every is not None and cron is not None:
        raise DecodeError("give every or cron, not both")
    if cron is not None:
        try:
            Cron.parse(cron).next_after(time.time())
        except (CronError, ValueError) as exc:
            raise DecodeError(f"cron: {exc}") from None
    retries = spec.get("retries") or 0
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 1000:
        raise DecodeError(f"retries must be an integer in 0..1000, not {retries!r}")
    if spec.get("payload") is not None:
        try:  # nested as deep as a log entry nests it: what packs here packs there
            size = len(msgpack.packb([[[[spec["payload"]]]]], use_bin_type=True))
        except (ValueError, TypeError, OverflowError) as exc:
            raise DecodeError(f"the payload does not pack: {exc}") from None
        if size > MAX_PAYLOAD:
            raise DecodeError(f"the payload is over {MAX_PAYLOAD} bytes")
    return TaskSpec(task_type, spec.get("payload"), key=_text(spec, "key", 1024),
                    once=_text(spec, "once", 128), run_at=_number(spec, "run_at"),
                    delay=_number(spec, "delay"), every=every, cron=cron, retries=retries,
                    timeout=_number(spec, "timeout") or 0.0,
                    version=_text(spec, "version", 64) or "",
                    backoff=_number(spec, "backoff", low=0.001) or 1.0)
