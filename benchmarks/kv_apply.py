"""Micro-benchmark of the key-value state machine's apply path (no Raft, no network, no disk).

Measures, in one process, how many commands per second ``KvStateMachine.apply_entry`` turns
from encoded log entries into results and events — the ceiling the server runs under:

* put, batched: entries of ``--batch`` session requests, each a Put of a fresh or an existing key;
* put, one per entry: one session request per log entry;
* cas, batched: compare-and-swap on the value;
* the server's whole path: decode, apply and encode every reply;
* decode only, and snapshot/restore of the resulting store.

Usage: python benchmarks/kv_apply.py [--ops N] [--batch B] [--json]
"""
from __future__ import annotations

import argparse
import json
import time

from nameservice.kv import (
    Batch,
    Cas,
    KvConfig,
    KvStateMachine,
    OpenSession,
    Put,
    Request,
    decode_command,
    encode_command,
    encode_result,
)


def _entries(commands: list, client_id: int, batch: int, first_seq: int) -> list[bytes]:
    """Encode ``commands`` as session requests grouped ``batch`` per log entry."""
    out = []
    seq = first_seq
    for start in range(0, len(commands), batch):
        items = []
        for cmd in commands[start : start + batch]:
            items.append(Request(client_id, seq, cmd, ack=seq - 1))
            seq += 1
        out.append(encode_command(Batch(tuple(items)) if batch > 1 else items[0]))
    return out


def _apply_all(machine: KvStateMachine, entries: list[bytes], first_index: int) -> float:
    started = time.perf_counter()
    index = first_index
    for data in entries:
        machine.apply_entry(index, data)
        index += 1
    return time.perf_counter() - started


def run(ops: int, batch: int, value_size: int) -> dict:
    value = b"v" * value_size
    rows = []

    def measure(name: str, commands: list, per_entry: int, machine: KvStateMachine) -> None:
        client = machine.apply(machine.applied_index + 1, OpenSession()).results[0].client_id
        entries = _entries(commands, client, per_entry, 1)
        elapsed = _apply_all(machine, entries, machine.applied_index + 1)
        rows.append(
            {
                "op": name,
                "batch": per_entry,
                "ops": len(commands),
                "ops_s": round(len(commands) / elapsed),
                "us_per_op": round(elapsed / len(commands) * 1e6, 2),
            }
        )

    machine = KvStateMachine(KvConfig(max_keys=10 * ops))
    fresh = [Put(b"bench/%08d" % i, value) for i in range(ops)]
    measure("put_new_key", fresh, batch, machine)
    measure("put_existing_key", fresh, batch, machine)
    measure("put_existing_key", fresh[: ops // 4], 1, machine)
    cas = [Cas(b"bench/%08d" % i, b"w", expect_value=value) for i in range(ops)]
    measure("cas", cas, batch, machine)

    # The server's whole path per request: decode the entry, apply, encode each reply.
    replies = KvStateMachine(KvConfig(max_keys=10 * ops))
    client = replies.apply(1, OpenSession()).results[0].client_id
    entries = _entries(fresh, client, batch, 1)
    started = time.perf_counter()
    for index, data in enumerate(entries, 2):
        for result in replies.apply_entry(index, data).results:
            encode_result(result)
    elapsed = time.perf_counter() - started
    rows.append(
        {
            "op": "put_decode_apply_reply",
            "batch": batch,
            "ops": ops,
            "ops_s": round(ops / elapsed),
            "us_per_op": round(elapsed / ops * 1e6, 2),
        }
    )

    encoded = _entries(fresh, 1, batch, 1)
    started = time.perf_counter()
    for data in encoded:
        decode_command(data)
    decode_s = time.perf_counter() - started
    rows.append({"op": "decode_only", "batch": batch, "ops": ops, "ops_s": round(ops / decode_s)})

    started = time.perf_counter()
    snap = machine.snapshot()
    snapshot_s = time.perf_counter() - started
    started = time.perf_counter()
    KvStateMachine(KvConfig(max_keys=10 * ops)).restore(snap)
    restore_s = time.perf_counter() - started
    return {
        "apply": rows,
        "snapshot": {
            "keys": len(machine.range()),
            "bytes": len(snap),
            "dump_ms": round(snapshot_s * 1000, 1),
            "restore_ms": round(restore_s * 1000, 1),
        },
        "value_bytes": value_size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=100_000, help="commands per measurement")
    parser.add_argument("--batch", type=int, default=256, help="requests per log entry")
    parser.add_argument("--value-size", type=int, default=64, help="bytes per value")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args()
    report = run(args.ops, args.batch, args.value_size)
    if args.json:
        print(json.dumps(report))
        return
    for row in report["apply"]:
        print(f"{row['op']:>18} batch={row['batch']:<5} {row['ops_s']:>9,} ops/s")
    print("snapshot:", report["snapshot"])


if __name__ == "__main__":
    main()
