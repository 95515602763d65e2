"""A running process puts its registry entries back when someone else deletes or overwrites
them (issue 13): an outsider's raw put once sent a live producer's messages to the outsider's
endpoint, and ``fabric kv del`` removed a channel for every new process, for good."""
from __future__ import annotations

import json
import subprocess

import msgpack
import pytest

from nameservice.client import SyncNameServiceClient
from tests.waiting import wait_for

pytestmark = pytest.mark.slow

REPAIR_S = 5.0
"""How long a repair may take: a watch push and one write, with room for a loaded machine."""


def test_an_intermediary_puts_back_entries_deleted_or_overwritten_by_someone_else(deployment):
    d = deployment
    proc, endpoint = d.intermediary("keeper")
    channel_prefix = f"names/channel/{d.channel}/".encode()
    with SyncNameServiceClient(d.ns) as ns:
        def entries() -> dict:
            return {kv.key: kv for kv in ns.range("names/")
                    if kv.key.startswith((channel_prefix, b"names/process/keeper/"))}

        wait_for(lambda: len(entries()) == 2, 10, "the channel and process entries")
        original = entries()
        [channel_key] = [key for key in original if key.startswith(channel_prefix)]
        [process_key] = [key for key in original if key != channel_key]

        def restored() -> bool:
            now = entries()
            return now.keys() == original.keys() and all(
                (now[k].value, now[k].lease) == (original[k].value, original[k].lease)
                for k in now)

        # Deleted with the command line, as an operator (or an outsider) would.
        for key in (channel_key, process_key):
            done = subprocess.run(d.fabric("kv", "del", key.decode(), "--ns", d.ns),
                                  capture_output=True, text=True, timeout=30)
            assert done.returncode == 0, done.stderr
        wait_for(restored, REPAIR_S, "both entries put back after the deletes")

        # Overwritten with a raw put pointing the channel at an outsider's endpoint.
        forged = msgpack.packb({"endpoint": "tcp://127.0.0.1:9", "meta": {}}, use_bin_type=True)
        ns.put(channel_key, forged)
        ns.put(process_key, forged)
        wait_for(restored, REPAIR_S, "both entries put back after the overwrites")

    # A process started now resolves the intermediary's real endpoint, and only it.
    status = subprocess.run(d.fabric("status", "--json", "--ns", d.ns), capture_output=True,
                            text=True, timeout=30)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["channels"][d.channel] == [endpoint]

    repairs = [found for _, found in proc.events("registration_repaired")]
    assert sorted((r["key"], r["change"]) for r in repairs) == sorted(
        [(channel_key.decode(), "deleted"), (process_key.decode(), "deleted"),
         (channel_key.decode(), "overwritten"), (process_key.decode(), "overwritten")])
    assert proc.alive()
