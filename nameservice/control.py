"""The control socket every process serves (fabric processes and name-service nodes alike), and
the call that talks to it.

A process binds one ROUTER socket (``tcp://127.0.0.1:0`` unless told otherwise). A client
connects a DEALER and sends one frame, a JSON object ``{"command": NAME, ...}``; the process
answers one frame, ``{"ok": true, "result": {...}}`` or ``{"ok": false, "error": "..."}``.

Commands:

- ``status``: a JSON-able dict: ``kind``, ``name``, ``channel``, ``endpoints``, in-flight counts
  and counters.
- ``drain`` (optional ``"timeout"`` in seconds): starts the drain of the process; the answer comes
  when it finished, or at its timeout, with the drain report (what could not be flushed).

Pieces: :func:`parse_request` and :func:`encode_reply` are pure; :class:`ControlSocket` is the
blocking socket the intermediary polls in its own loop; :class:`ControlServer` serves the same
protocol on asyncio for processes built on ports; :func:`control_request` is the client.
Every request gets an answer: a malformed one (not JSON, nested deeper than ``MAX_NESTING``,
an unknown command, a message of other than two frames) an error answer, counted in
``bad_requests`` (shown by ``status`` as ``control_bad_requests``, beside ``security``: the
process's mode and its ZAP handlers' counters) and logged, at most ten times
then once per thousand. A process never fails because of one, and keeps answering.
"""
from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import zmq
import zmq.asyncio

from nameservice.errors import ConfigError, ControlError
from nameservice.security.context import current as security
from nameservice.security.handshakes import HANDSHAKE_FAILED, handshake_failure, parse_event

log = logging.getLogger(__name__)

PROCESS = "process/"
"""Every process serving a control socket registers it under ``process/NAME`` (a
``nameservice.names`` name): name-service nodes as ``ns-ID``, fabric processes by their name."""
DEFAULT_TTL = 2.0
"""The lease TTL (seconds) of a process's registrations: a dead process is gone after it."""
COMMANDS = ("status", "drain")
MAX_REQUEST = 64 * 1024
"""Largest request frame answered (bytes)."""
MAX_NESTING = 8
"""Most ``[`` and ``{`` bytes one request may hold, in strings or not (a well-formed request
holds one): counted on the raw bytes before parsing, so no request can make the parser recurse
deeply, and the count costs one pass in C."""
DEFAULT_ENDPOINT = "tcp://127.0.0.1:0"


@dataclass(frozen=True, slots=True)
class Request:
    """One control request: ``command`` and its optional drain ``timeout`` (seconds)."""

    command: str
    timeout: float | None = None


def process_name(name: str) -> str:
    """The name under which the process called ``name`` registers its control socket."""
    return PROCESS + name


def parse_request(frame: bytes) -> Request:
    """Decode one request frame; raise :class:`ControlError` with a reason if it is malformed."""
    if len(frame) > MAX_REQUEST:
        raise ControlError(f"request of {len(frame)} bytes is too large")
    openers = frame.count(b"[") + frame.count(b"{")
    if openers > MAX_NESTING:
        raise ControlError(f"request holds {openers} '[' or '{{', at most {MAX_NESTING} are "
                           "accepted")
    try:
        body = json.loads(frame)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ControlError(f"request is not JSON: {exc}") from None
    if not isinstance(body, dict) or body.get("command") not in COMMANDS:
        raise ControlError(f"unknown command; expected one of {', '.join(COMMANDS)}")
    timeout = body.get("timeout")
    if timeout is not None and (type(timeout) not in (int, float) or not 0 < timeout < 1e9):
        raise ControlError("timeout must be a positive number of seconds")
    return Request(body["command"], None if timeout is None else float(timeout))


def encode_request(command: str, **fields: Any) -> bytes:
    """A request frame."""
    return json.dumps({"command": command, **fields}).encode()


def encode_reply(result: dict | None = None, error: str | None = None) -> bytes:
    """A reply frame: the result, or an error message."""
    if error is not None:
        return json.dumps({"ok": False, "error": error}).encode()
    return json.dumps({"ok": True, "result": result}, default=str).encode()


FORBIDDEN = "forbidden: draining a process needs an admin key"


class _BadRequests:
    """The count of bad and forbidden requests of one control socket, and its rate-limited
    log."""

    def __init__(self) -> None:
        self.bad_requests = 0
        self.forbidden_requests = 0
        self._security = security()

    def security_status(self) -> dict:
        """The process's security status, with this socket's refused drains."""
        return {**self._security.status(), "control_forbidden_requests": self.forbidden_requests}

    def _checked(self, raw: list) -> tuple[bytes, Request | str]:
        """A received message's sender identity and its request, or why it is refused: the
        reason it is malformed, or, with keys, a drain from a key that is not an admin's."""
        if not self._security.secure:
            return _split(raw)
        identity, request = _split([part.bytes for part in raw])
        if isinstance(request, Request) and request.command == "drain":
            rule = self._security.sender(raw[-1])
            if rule is None or rule.role != "admin":
                self.forbidden_requests += 1
                if self.forbidden_requests <= 10:
                    log.warning("control socket: refused a drain from %s",
                                rule.identity if rule is not None else "an unknown key")
                return identity, FORBIDDEN
        return identity, request

    def _bad(self, identity: bytes, reason: str) -> None:
        self.bad_requests += 1
        n = self.bad_requests
        if n <= 10 or n % 1000 == 0:
            log.warning("control socket: bad request from %r (%d so far): %s", identity[:16],
                        n, reason)


def _split(frames: list[bytes]) -> tuple[bytes, Request | str]:
    """The sender's identity and its request, or the reason it is malformed."""
    if len(frames) != 2:
        return frames[0], f"a request is one frame, got {len(frames) - 1}"
    try:
        return frames[0], parse_request(frames[1])
    except ControlError as exc:
        return frames[0], str(exc)


def _bind(sock: zmq.Socket, endpoint: str) -> str:
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    sock.setsockopt(zmq.MAXMSGSIZE, 4 * MAX_REQUEST)
    sock.setsockopt(zmq.RCVHWM, 1000)
    sock.setsockopt(zmq.SNDHWM, 1000)
    try:
        security().serve(sock)
        sock.bind(endpoint)
    except zmq.ZMQError:
        sock.close(linger=0)
        raise
    return security().advertise(sock.getsockopt_string(zmq.LAST_ENDPOINT))


class ControlSocket(_BadRequests):
    """The blocking control socket, for a process with its own poll loop (the intermediary).

    Poll :attr:`socket` for input, then call :meth:`receive` for the well-formed requests;
    answer each with :meth:`reply`. Malformed ones are answered with an error here.
    """

    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, ctx: zmq.Context | None = None) -> None:
        super().__init__()
        self.socket = (ctx or zmq.Context.instance()).socket(zmq.ROUTER)
        self.endpoint = _bind(self.socket, endpoint)

    def receive(self, limit: int = 100) -> list[tuple[bytes, Request]]:
        """Requests waiting now: ``(identity, request)`` pairs."""
        out = []
        for _ in range(limit):
            try:
                raw = self.socket.recv_multipart(zmq.NOBLOCK, copy=not self._security.secure)
            except zmq.Again:
                break
            identity, request = self._checked(raw)
            if request is FORBIDDEN:
                self.reply(identity, error=FORBIDDEN)
                continue
            if isinstance(request, str):
                self._bad(identity, request)
                self.reply(identity, error=request)
            else:
                out.append((identity, request))
        return out

    def reply(self, identity: bytes, result: dict | None = None, error: str | None = None) -> None:
        """Answer one request (a client that went away is ignored)."""
        try:
            self.socket.send_multipart([identity, encode_reply(result, error)], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass

    def close(self, linger: int = 0) -> None:
        """Close the socket; ``linger`` ms to let the last answers leave."""
        self.socket.close(linger=linger)


StatusFn = Callable[[], dict]
DrainFn = Callable[[float | None], Awaitable[dict]]


class ControlServer(_BadRequests):
    """The control socket on asyncio, for processes built on ports.

    ``status()`` returns the status dict (``control_bad_requests`` is added to it);
    ``drain(timeout)`` drains the process and returns the report as a dict (every concurrent
    ``drain`` request gets the same answer).
    """

    def __init__(self, status: StatusFn, drain: DrainFn, endpoint: str = DEFAULT_ENDPOINT,
                 ctx: zmq.asyncio.Context | None = None) -> None:
        super().__init__()
        self._status = status
        self._drain = drain
        # A context of its own, terminated on close: the last answer (to a drain request) has
        # left before the process exits, which a shared context never terminated does not ensure.
        self._own_ctx: zmq.asyncio.Context | None = None
        if ctx is None:
            ctx = self._own_ctx = zmq.asyncio.Context()
        self._sock = ctx.socket(zmq.ROUTER)
        self.endpoint = _bind(self._sock, endpoint)
        self._drain_task: asyncio.Task | None = None
        self.drain_requested = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._pending: set[asyncio.Task] = set()

    def start(self) -> "ControlServer":
        """Start answering (in a task of the running loop)."""
        self._task = asyncio.ensure_future(self._serve())
        return self

    def drain_task(self, timeout: float | None = None) -> asyncio.Task:
        """The drain, started once (by a request or by the process itself, e.g. on SIGTERM)."""
        if self._drain_task is None:
            self._drain_task = asyncio.ensure_future(self._drain(timeout))
            self.drain_requested.set()
        return self._drain_task

    async def answered(self, timeout: float = 1.0) -> None:
        """Wait (at most ``timeout`` s) until every drain request got its answer."""
        if self._pending:
            await asyncio.wait(list(self._pending), timeout=timeout)

    async def _serve(self) -> None:
        while True:
            try:
                raw = await self._sock.recv_multipart(copy=not self._security.secure)
            except (zmq.ZMQError, asyncio.CancelledError):
                return
            identity, request = self._checked(raw)
            if request is FORBIDDEN:
                await self._reply(identity, error=FORBIDDEN)
                continue
            if isinstance(request, str):
                self._bad(identity, request)
                await self._reply(identity, error=request)
                continue
            if request.command == "status":
                try:
                    status = self._status()
                    status["control_bad_requests"] = self.bad_requests
                    status["security"] = self.security_status()
                    await self._reply(identity, status)
                except Exception as exc:  # a status bug must not kill the control socket
                    log.exception("status failed")
                    await self._reply(identity, error=f"status failed: {exc}")
            else:
                task = asyncio.ensure_future(self._answer_drain(identity, request.timeout))
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)

    async def _answer_drain(self, identity: bytes, timeout: float | None) -> None:
        try:
            report = await asyncio.shield(self.drain_task(timeout))
        except Exception as exc:
            log.exception("drain failed")
            await self._reply(identity, error=f"drain failed: {exc}")
            return
        await self._reply(identity, report)

    async def _reply(self, identity: bytes, result: dict | None = None,
                     error: str | None = None) -> None:
        try:
            await self._sock.send_multipart([identity, encode_reply(result, error)], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass

    def close(self, linger: int = 500) -> None:
        """Stop answering and close the socket; waits (at most ``linger`` ms) until the
        answers already given have left."""
        if self._task is not None:
            self._task.cancel()
        for task in self._pending:
            task.cancel()
        self._sock.close(linger=linger)
        if self._own_ctx is not None:
            self._own_ctx.term()
            self._own_ctx = None


async def _refused(monitor: zmq.asyncio.Socket, keyed: bool) -> str:
    """Wait until the monitor of a request's socket says why its handshake definitely failed
    (a keyless client's handshake cut short says nothing sure: it retries)."""
    while True:
        frames = await monitor.recv_multipart()
        parsed = parse_event(frames)
        if parsed is not None:
            why = handshake_failure(parsed[0], parsed[1], keyed, who="process")
            if why:
                return why


async def control_request(endpoint: str, command: str, timeout: float = 10.0, *,
                          drain_timeout: float | None = None) -> dict:
    """Send ``command`` to the control socket at ``endpoint`` and return its result dict.

    Raises :class:`ControlError` if no answer comes within ``timeout`` seconds or the process
    answers with an error. ``drain_timeout`` bounds a ``drain`` (default: the process's own).
    """
    fields = {} if drain_timeout is None else {"timeout": drain_timeout}
    if "://" not in endpoint:
        endpoint = "tcp://" + endpoint
    ctx = zmq.asyncio.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    monitor = sock.get_monitor_socket(HANDSHAKE_FAILED)
    keyed = security().secure
    try:
        try:
            sock.connect(security().connect(sock, endpoint))
        except (zmq.ZMQError, ConfigError) as exc:
            raise ControlError(f"cannot connect to {endpoint}: {exc}") from None
        await sock.send(encode_request(command, **fields))
        answer = asyncio.ensure_future(sock.recv())
        refused = asyncio.ensure_future(_refused(monitor, keyed))
        try:
            done, _ = await asyncio.wait({answer, refused}, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (answer, refused):
                task.cancel()
        if answer in done:
            frame = answer.result()
        elif refused in done:
            raise ControlError(f"{endpoint} refused: {refused.result()}")
        else:
            raise ControlError(f"no answer from {endpoint} within {timeout:g} s")
    finally:
        sock.disable_monitor()
        monitor.close(linger=0)
        sock.close(linger=0)
    try:
        reply = json.loads(frame)
        ok = reply["ok"]
    except (ValueError, KeyError, TypeError):
        raise ControlError(f"malformed answer from {endpoint}") from None
    if not ok:
        raise ControlError(f"{endpoint}: {reply.get('error', 'error')}")
    return reply["result"]
