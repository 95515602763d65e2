"""Producer and consumer processes for the real-process data-path tests and the benchmark.

    python -m tests.datapath.procs producer --channel C --endpoints E1,E2 --index K --count N
    python -m tests.datapath.procs consumer --channel C --endpoints E1,E2 --out FILE

A producer sends the integers ``K << 32 | i`` for i in [0, N), waits until all are
acknowledged, prints ``stats {JSON}`` and exits 0. A consumer appends one 9-byte record per
delivered message to FILE (u64 payload, u8 redelivered) with an unbuffered write *inside the
handler*, so a record exists for every message a handler saw, even if the process is killed;
on SIGTERM it prints ``stats {JSON}`` and exits 0. On SIGUSR1 a producer lists the batches it
still holds on stderr (diagnostics for a test that timed out).
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import signal
import struct
import sys

from fabric.consumer import InputPort
from fabric.producer import OutputPort

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


async def produce(args: argparse.Namespace) -> None:
    async with OutputPort(args.channel, args.endpoints.split(",")) as port:
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, dump_held, port)
        base = args.index << 32
        for i in range(args.count):
            await port.send(base | i)
        await port.flush()
        print("stats " + json.dumps(dataclasses.asdict(port.stats)), flush=True)


async def consume(args: argparse.Namespace) -> None:
    fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    pack = RECORD.pack
    write = os.write

    def handler(msg) -> None:
        write(fd, pack(msg.payload, msg.redelivered))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with InputPort(args.channel, args.endpoints.split(","), handler) as port:
        print("ready", flush=True)
        await stop.wait()
        print("stats " + json.dumps(dataclasses.asdict(port.stats)), flush=True)
    os.close(fd)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="procs")
    parser.add_argument("role", choices=["producer", "consumer"])
    parser.add_argument("--channel", required=True)
    parser.add_argument("--endpoints", required=True)
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    asyncio.run(produce(args) if args.role == "producer" else consume(args))


if __name__ == "__main__":
    sys.exit(main())
