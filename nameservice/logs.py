"""One logging setup for every ``fabric`` command and for the name-service daemon, and events.

    setup("info", "text")               # what every entry point calls, once its options are read
    setup("debug", "json", events=True)
    event(log, "listening", address="127.0.0.1:7401")

Logs go to stderr, one record per line: ``text`` reads
``2025-01-02T03:04:05.678Z INFO nameservice.server.node: elected leader of term 3`` (an
exception's traceback follows on the next lines); ``json`` is one object per line with
``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``, every extra the record carries,
and ``exception`` (the traceback as text) when there is one.

**Events** are what a running process has to tell its supervisor — where it listens, that it
registered, what its drain left — as records with a kind and fields. Library code emits them
with :func:`event` and never prints: each is always a log record (INFO, message
``KIND {fields as JSON}``), and with ``setup(events=True)`` (``--events`` on the command line)
also one JSON object per line on stdout, ``{"event": KIND, "time": ISO, **fields}``, whatever
the log level. Scripts and tests read that stream instead of parsing log text.

Standard library only: it sits below both the name service and fabric.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

__all__ = ["FORMATS", "LEVELS", "EVENT", "DATA", "JsonFormatter", "TextFormatter", "event",
           "setup"]

LEVELS = ("debug", "info", "warning", "error", "critical")
"""The ``--log-level`` choices, most verbose first."""
FORMATS = ("text", "json")
"""The ``--log-format`` choices."""
EVENT = "event"
"""The record attribute naming an event's kind (absent on ordinary records)."""
DATA = "data"
"""The record attribute holding an event's fields (a dict)."""

# Attributes every LogRecord has: whatever else a record carries is an extra.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message", "asctime", "taskName"}
_MARK = "_fabric_logs"  # set on the handlers setup() installs, so a second setup replaces them
_streaming = False  # whether setup() installed an events stream


def iso_time(created: float) -> str:
    """``created`` (seconds since the epoch) as ISO 8601 UTC with milliseconds and a ``Z``."""
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


class TextFormatter(logging.Formatter):
    """``TIME LEVEL LOGGER: MESSAGE``, the traceback (if any) on the lines below."""

    def format(self, record: logging.LogRecord) -> str:
        line = (f"{iso_time(record.created)} {record.levelname} {record.name}: "
                f"{record.getMessage()}")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the extras, exception."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"time": iso_time(record.created),
                               "level": record.levelname.lower(), "logger": record.name,
                               "message": record.getMessage()}
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out.setdefault(key, value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str)


class _EventStream(logging.Handler):
    """Writes event records (and nothing else) as JSON lines on a stream, flushed each time."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream
        self.addFilter(lambda record: hasattr(record, EVENT))

    def emit(self, record: logging.LogRecord) -> None:
        line = {"event": getattr(record, EVENT), "time": iso_time(record.created),
                **getattr(record, DATA, {})}
        try:
            self.stream.write(json.dumps(line, default=str) + "\n")
            self.stream.flush()
        except OSError:
            pass  # a reader that went away (a closed pipe) must not stop the process

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        pass


class _Stderr(logging.StreamHandler):
    """stderr, looked up at each record (so a test's capture or a redirection is followed)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def setup(level: str = "info", fmt: str = "text", *, events: bool = False,
          events_stream: TextIO | None = None) -> None:
    """Configure the root logger: records at ``level`` and above go to stderr in format
    ``fmt`` (``text`` or ``json``); with ``events``, every event (any level) also goes to
    ``events_stream`` (default stdout) as a JSON line. Calling it again replaces what an
    earlier call installed; handlers installed by others are left alone."""
    if level.lower() not in LEVELS:
        raise ValueError(f"unknown log level {level!r}: one of {', '.join(LEVELS)}")
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r}: one of {', '.join(FORMATS)}")
    global _streaming
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, _MARK, False)]:
        root.removeHandler(handler)
    stderr = _Stderr()
    stderr.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    numeric = getattr(logging, level.upper())
    stderr.setLevel(numeric)
    handlers: list[logging.Handler] = [stderr]
    if events:
        handlers.append(_EventStream(events_stream or sys.stdout))
    for handler in handlers:
        setattr(handler, _MARK, True)
        root.addHandler(handler)
    root.setLevel(numeric)
    _streaming = events


def event(logger: logging.Logger, kind: str, /, *, level: int = logging.INFO,
          **fields: Any) -> None:
    """Emit the event ``kind`` with ``fields`` (JSON-serializable) from ``logger``: a log
    record at ``level`` (INFO unless told; message ``KIND {fields}``) and, when the events
    stream is on, a JSON line ``{"event": KIND, "time": ..., **fields}`` on it, even if the
    log level hides the record."""
    if "event" in fields or "time" in fields:
        raise ValueError("an event's fields may not be named 'event' or 'time'")
    if not _streaming and not logger.isEnabledFor(level):
        return
    message = kind + (" " + json.dumps(fields, default=str) if fields else "")
    record = logger.makeRecord(logger.name, level, "(event)", 0, message, (), None,
                               extra={EVENT: kind, DATA: fields})
    # Handled directly, not through logger.info: the logger's level must not hide an event
    # from the events stream (each handler still applies its own level, and without a stream
    # the logger's level is checked above as usual).
    logger.handle(record)
