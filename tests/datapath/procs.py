"""Producer and consumer processes for the real-process data-path tests and the benchmark.

    python -m tests.datapath.procs producer --channel C --endpoints E1,E2 --index K --count N
    python -m tests.datapath.procs consumer --channel C --endpoints E1,E2 --out FILE

Their stdout is an events stream like a fabric process's (``--events``; nameservice/logs.py):
one JSON object per line, ``{"event": KIND, "time": ..., ...}``. A producer emits ``ready``
(``control``: its control endpoint) once it handles SIGTERM, sends the integers ``K << 32 | i``
for i in [0, N) (N = 0: until SIGTERM; at most ``--rate`` per second), waits until all are
acknowledged, emits ``sent`` (``count``: how many sends were accepted), ``drained`` (the
report) and ``stats`` (its counters) and exits 0 (3 if its drain timed out). A consumer emits
``ready`` once started, and appends one 9-byte record per delivered message to FILE (u64
payload, u8 redelivered) with an unbuffered write *inside the handler*, so a record exists for
every message a handler saw, even if the process is killed. Both serve a control socket and
drain on SIGTERM (``fabric.runtime.runner``); the consumer then emits ``drained`` and ``stats``
and exits 0 (3 if its drain timed out). On SIGUSR1 a producer lists the batches it still holds
on stderr (diagnostics for a test that timed out).
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import signal
import struct
import sys

from fabric.errors import PortClosed
from fabric.ports.input import InputPort
from fabric.ports.output import OutputPort
from fabric.runtime.runner import run_ports_until_signalled
from nameservice import logs

log = logging.getLogger("procs")

RECORD = struct.Struct("<QB")


def read_records(path: str) -> list[tuple[int, int]]:
    """All complete records of a consumer's output file."""
    with open(path, "rb") as f:
        data = f.read()
    usable = len(data) - len(data) % RECORD.size
    return list(RECORD.iter_unpack(data[:usable]))


def count_records(path: str) -> int:
    """How many complete records a consumer has written so far."""
    try:
        return os.path.getsize(path) // RECORD.size
    except FileNotFoundError:
        return 0


def dump_held(port: OutputPort) -> None:
    """Diagnostics for a test that timed out (SIGUSR1): every batch the producer still holds."""
    lines = [f"held batches: {port.stats} unacked={port.unacked}"]
    for seq, sent in port._store.items():  # noqa: SLF001 - test diagnostics only
        claimed = sent.claimed_by.hex() if sent.claimed_by else None
        lines.append(f"  seq={seq} count={sent.count} acked={sent.acked} via={sent.via} "
                     f"claimed_by={claimed} sends={sent.sends}")
    print("\n".join(lines), file=sys.stderr, flush=True)


def finish(port, reports) -> int:
    """Emit the drain reports and the counters; the exit code."""
    for report in reports:
        logs.event(log, "drained", **report.to_dict())
    logs.event(log, "stats", **dataclasses.asdict(port.stats))
    return 0 if all(r.complete for r in reports) else 3


async def produce(args: argparse.Namespace) -> int:
    port = await OutputPort(args.channel, args.endpoints.split(",")).start()
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, dump_held, port)
    finished = asyncio.Event()
    sent = 0

    async def send_all() -> None:
        nonlocal sent
        if args.await_links:
            # Only once every intermediary is connected: a test that needs batches on each
            # must not see them all go through the first one up.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while len(port.connected) < len(port.endpoints) and loop.time() < deadline:
                await asyncio.sleep(0.01)
        base = args.index << 32
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            while not args.count or sent < args.count:
                await port.send(base | sent)
                sent += 1
                if args.rate and sent % 100 == 0:
                    delay = start + sent / args.rate - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
            await port.flush()
        except PortClosed:
            pass  # draining: SIGTERM came first
        finished.set()

    sender = asyncio.ensure_future(send_all())
    reports = await run_ports_until_signalled(
        [port], name=f"producer{args.index}", drain_timeout=args.drain_timeout, stop=finished,
        announce_control=lambda endpoint: logs.event(log, "ready", control=endpoint))
    await sender
    logs.event(log, "sent", count=sent)
    return finish(port, reports)


async def consume(args: argparse.Namespace) -> int:
    fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    pack = RECORD.pack
    write = os.write

    def handler(msg) -> None:
        write(fd, pack(msg.payload, msg.redelivered))

    async def slow_handler(msg) -> None:
        await asyncio.sleep(args.delay)
        write(fd, pack(msg.payload, msg.redelivered))

    def stuck_handler(msg) -> None:
        pass  # never acknowledges, records nothing: a consumer stuck on every message

    port = await InputPort(args.channel, args.endpoints.split(","),
                           stuck_handler if args.stuck else slow_handler if args.delay else handler,
                           prefetch=args.prefetch, auto_ack=not args.stuck).start()
    reports = await run_ports_until_signalled(
        [port], name="consumer", drain_timeout=args.drain_timeout,
        announce_control=lambda endpoint: logs.event(log, "ready", control=endpoint))
    os.close(fd)
    return finish(port, reports)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="procs")
    parser.add_argument("role", choices=["producer", "consumer"])
    parser.add_argument("--channel", required=True)
    parser.add_argument("--endpoints", required=True)
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--out")
    parser.add_argument("--rate", type=float, default=0.0, help="messages/s (0: flat out)")
    parser.add_argument("--drain-timeout", type=float, default=5.0)
    parser.add_argument("--await-links", action="store_true",
                        help="producer: send only once every intermediary is connected")
    parser.add_argument("--delay", type=float, default=0.0, help="consumer: seconds per message")
    parser.add_argument("--prefetch", type=int, default=8192)
    parser.add_argument("--stuck", action="store_true", help="consumer: never acknowledge")
    args = parser.parse_args(argv)
    logs.setup("info", events=True)  # info: the "metrics on URL" line too
    return asyncio.run(produce(args) if args.role == "producer" else consume(args))


if __name__ == "__main__":
    sys.exit(main())
