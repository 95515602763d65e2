"""Name-service nodes as fabric processes: `process/ns-ID`, `fabric drain`, `fabric status`."""
from __future__ import annotations

import asyncio
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nameservice.client import NameServiceClient
from nameservice.control import control_request
from nameservice.names import Names
from nameservice.server.local import free_ports
from tests.server.conftest import leader_of, longest_write_pause
from tests.waiting import async_wait_for

pytestmark = pytest.mark.slow

FABRIC = str(Path(sys.executable).with_name("fabric"))
ELECTION_TIMEOUT = "3000-6000"  # ms: a gap this long would mean an election, not a hand-over


async def fabric(*args: str, ns: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``fabric ARGS --ns NS`` without blocking the loop (the test's client keeps going)."""
    env = {k: v for k, v in os.environ.items() if k != "FABRIC_NS"}
    return await asyncio.to_thread(subprocess.run, [FABRIC, *args, "--ns", ns],
                                   capture_output=True, env=env, timeout=timeout)


def next_line(proc: subprocess.Popen, timeout: float = 10.0) -> str:
    """The next line a node printed on stdout (after ``listening``, which the cluster read)."""
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"no line from the node within {timeout} s (got {line!r})")
        if select.select([proc.stdout], [], [], left)[0]:
            chunk = os.read(proc.stdout.fileno(), 1)
            if not chunk:
                pytest.fail(f"the node closed its stdout (got {line!r})")
            line += chunk
    return line.decode().strip()


async def registered(names: Names, name: str) -> list:
    return await names.resolve(f"process/{name}")


async def _absent(names: Names, name: str) -> bool:
    return await registered(names, name) == []


async def test_the_leader_drained_by_name_hands_over_exits_0_and_writes_go_on(make_cluster):
    cluster = make_cluster(election_timeout=ELECTION_TIMEOUT)
    async with NameServiceClient(cluster.ns_arg, timeout=20) as ns:
        names = Names(ns)
        old = await leader_of(ns, cluster, timeout=30)
        for i in cluster.ids:
            await async_wait_for(lambda i=i: registered(names, f"ns-{i}"), 20, f"ns-{i} registered")
        async def drain_by_name() -> None:
            drained = await fabric("drain", f"ns-{old}", ns=cluster.ns_arg)
            assert drained.returncode == 0, drained.stderr.decode()
            assert drained.stdout.decode().startswith(f"ns-{old} drained in ")

        pause = await longest_write_pause(ns, drain_by_name, cluster.procs[old])
        new = await leader_of(ns, cluster, timeout=5)
        assert new != old
        assert pause < 1.5, f"writes paused {pause:.2f} s: an election, not a hand-over"
        # The drained node deregistered before it stopped; the others are still there.
        assert await registered(names, f"ns-{old}") == []
        for i in cluster.ids:
            if i != old:
                assert len(await registered(names, f"ns-{i}")) == 1
    log = cluster.node_dir(old).with_suffix(".log").read_text()
    assert f"handing leadership to node {new}" in log, log[-2000:]


async def test_fabric_status_lists_the_nodes_with_their_role(make_cluster):
    cluster = make_cluster()
    async with NameServiceClient(cluster.ns_arg) as ns:
        leader = await leader_of(ns, cluster, timeout=30)
        for i in cluster.ids:
            await async_wait_for(lambda i=i: registered(Names(ns), f"ns-{i}"), 20,
                                 f"ns-{i} registered")
    done = await fabric("status", "--json", ns=cluster.ns_arg)
    assert done.returncode == 0, done.stderr.decode()
    rows = {row["name"]: row for row in json.loads(done.stdout)["processes"]}
    assert sorted(rows) == [f"ns-{i}" for i in cluster.ids]
    for i in cluster.ids:
        row = rows[f"ns-{i}"]
        assert row["kind"] == "nameservice" and row["address"] == cluster.addresses[i]
        assert row["status"]["id"] == i and row["status"]["leader"] == leader
    assert rows[f"ns-{leader}"]["status"]["role"] == "leader"
    table = await fabric("status", ns=cluster.ns_arg)
    assert table.returncode == 0, table.stderr.decode()
    line = next(ln for ln in table.stdout.decode().splitlines() if ln.startswith(f"ns-{leader} "))
    assert line.split()[1] == "nameservice" and "leader, term " in line, line


async def test_a_node_without_quorum_serves_its_control_socket_and_registers_later(
        make_cluster):
    cluster = make_cluster(start=False)
    cluster.start(1)  # one node of three: no leader can exist
    control = next_line(cluster.procs[1])
    assert control.startswith("control tcp://127.0.0.1:"), control
    endpoint = control.split()[1]
    status = await control_request(endpoint, "status", 5)
    assert status["kind"] == "nameservice" and status["name"] == "ns-1"
    assert status["registered"] is False and status["leader"] == 0

    cluster.start()  # the other two: a leader, and the registration goes through
    async with NameServiceClient(cluster.ns_arg) as ns:
        [entry] = await async_wait_for(lambda: registered(Names(ns), "ns-1"), 30,
                                       "the registration to go through once a leader exists")
        assert entry.endpoint == endpoint
        assert entry.meta == {"kind": "nameservice", "node": 1,
                              "address": cluster.addresses[1]}
    # The node learns its put went through when the answer reaches it, a moment after the
    # entry is visible to others.
    async def says_registered() -> bool:
        return (await control_request(endpoint, "status", 5))["registered"] is True

    await async_wait_for(says_registered, 10, "the node to say it is registered", interval=0.05)


async def test_name_and_control_address_can_be_chosen(make_cluster):
    cluster = make_cluster(nodes=1)
    [port] = free_ports(1)
    cluster.procs[1].terminate()
    assert cluster.procs[1].wait(20) == 0
    cluster.extra_args += ["--name", "registry-a", "--control", f"127.0.0.1:{port}"]
    cluster.start(1)
    assert next_line(cluster.procs[1]) == f"control tcp://127.0.0.1:{port}"
    async with NameServiceClient(cluster.ns_arg) as ns:
        [entry] = await async_wait_for(lambda: registered(Names(ns), "registry-a"), 20,
                                       "the chosen name")
        assert entry.endpoint == f"tcp://127.0.0.1:{port}"
        await async_wait_for(lambda: _absent(Names(ns), "ns-1"), 10, "the old name to be gone")
    drained = await fabric("drain", "registry-a", ns=cluster.ns_arg)
    assert drained.returncode == 0, drained.stderr.decode()
    assert await asyncio.to_thread(cluster.procs[1].wait, 20) == 0


def test_a_bad_name_or_control_address_is_a_one_line_usage_error(tmp_path):
    for args in (["--name", "a b"], ["--name", "a//b"], ["--control", "nowhere"]):
        done = subprocess.run([FABRIC, "ns", "start", "--id", "1", "--cluster", "1=127.0.0.1:1",
                               "--data-dir", str(tmp_path), "--no-advertise", *args],
                              capture_output=True, timeout=30)
        lines = done.stderr.decode().strip().splitlines()
        assert done.returncode == 2, (args, done.stderr)
        assert len(lines) == 1 and "Traceback" not in lines[0], lines
