"""The ``fabric ns`` / ``fabric kv`` commands: output, exit codes, one-line errors."""
from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from nameservice.client import NameServiceClient
from nameservice.server.local import LocalCluster, free_ports
from tests.server.conftest import leader_of
from tests.waiting import wait_for

pytestmark = pytest.mark.slow
FABRIC = str(Path(sys.executable).with_name("fabric"))
NOBODY = f"nobody-{uuid.uuid4().hex[:8]}"  # a cluster name no daemon advertises


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = LocalCluster(tmp_path_factory.mktemp("cli"), 3)
    try:
        cluster.start()
        # Listening is not leading: the tests below expect an elected leader.
        asyncio.run(elected(cluster))
        yield cluster
    finally:
        cluster.close()


async def elected(cluster: LocalCluster) -> None:
    async with NameServiceClient(cluster.ns_arg) as client:
        await leader_of(client, cluster, timeout=30)


def fabric(*args: str, ns: str | None = None, timeout: float = 30,
           cluster_name: str = NOBODY):
    """Run ``fabric ARGS`` with FABRIC_NS set to ``ns`` (or unset: it browses for
    ``cluster_name``)."""
    env = {k: v for k, v in os.environ.items() if k != "FABRIC_NS"}
    env["FABRIC_NS_CLUSTER"] = cluster_name
    if ns is not None:
        env["FABRIC_NS"] = ns
    return subprocess.run([FABRIC, *args], capture_output=True, env=env, timeout=timeout)


def one_line_error(proc, code: int) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    lines = proc.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    return lines[0]


def test_put_get_range_del(cluster):
    ns = cluster.ns_arg
    assert fabric("kv", "put", "cli/a", "hello world", ns=ns).returncode == 0
    got = fabric("kv", "get", "cli/a", ns=ns)
    assert got.returncode == 0 and got.stdout == b"hello world\n"
    assert fabric("kv", "get", "cli/a", "--stale", "--ns", ns).stdout == b"hello world\n"
    listed = fabric("kv", "range", "cli/", "--json", ns=ns)
    assert [r["value"] for r in json.loads(listed.stdout)] == ["hello world"]
    assert fabric("kv", "del", "cli/a", ns=ns).returncode == 0


def test_cas_exit_codes(cluster):
    ns = cluster.ns_arg
    assert fabric("kv", "cas", "cli/c", "--absent", "--new", "1", ns=ns).returncode == 0
    assert fabric("kv", "cas", "cli/c", "--old", "1", "--new", "2", ns=ns).returncode == 0
    failed = fabric("kv", "cas", "cli/c", "--old", "1", "--new", "3", ns=ns)
    assert "compare failed" in one_line_error(failed, 3)
    assert fabric("kv", "get", "cli/c", ns=ns).stdout == b"2\n"


def test_unknown_key_exits_4(cluster):
    assert "not found" in one_line_error(fabric("kv", "get", "cli/none", ns=cluster.ns_arg), 4)
    assert "not found" in one_line_error(fabric("kv", "del", "cli/none", ns=cluster.ns_arg), 4)


def test_status_lists_every_node(cluster):
    proc = fabric("ns", "status", "--json", ns=cluster.ns_arg)
    assert proc.returncode == 0
    rows = json.loads(proc.stdout)
    assert sorted(r.get("id", 0) for r in rows) == [1, 2, 3], rows
    assert sum(r["role"] == "leader" for r in rows) == 1
    for r in rows:
        assert {"address", "term", "commit_index", "applied_index", "leader"} <= r.keys()
    table = fabric("ns", "status", ns=cluster.ns_arg).stdout.decode().splitlines()
    assert len(table) == 4 and "leader" in "".join(table)


@pytest.mark.parametrize("args, code, words", [
    (("kv", "get", "k"), 1, "FABRIC_NS"),  # nothing given, and no cluster found by browsing
    (("kv", "put", "k", "v", "--ttl", "1", "--stale", "--ns", "127.0.0.1:1"), 2, "--ttl"),
    (("kv", "put", "k", "v", "--ttl", "0", "--ns", "127.0.0.1:1"), 2, "--ttl"),
    (("lease", "revoke", "0", "--ns", "127.0.0.1:1"), 2, "LEASE_ID"),
    (("ns", "start", "--id", "1", "--cluster", "1=127.0.0.1:5", "--min-lease-ttl", "0.1"), 2,
     "lowest allowed"),
    (("kv", "get", "k", "--ns", "nohost"), 2, "bad address"),
    (("kv", "get"), 2, "Missing argument"),
    (("kv", "cas", "k", "--new", "x", "--ns", "127.0.0.1:1"), 2, "--old"),
    (("kv", "get", "k", "--ns", "127.0.0.1:1", "--timeout", "0.3"), 1, "unavailable"),
    (("ns", "status", "--ns", "127.0.0.1:1", "--timeout", "0.3"), 1, "no node reachable"),
    (("ns", "start", "--id", "4", "--cluster", "1=127.0.0.1:5"), 2, "not in the cluster"),
    (("ns", "start", "--id", "1", "--cluster", "1=127.0.0.1"), 2, "bad address"),
    (("ns", "local", "--election-timeout", "300-100"), 2, "election timeout"),
])
def test_user_mistakes_are_one_line_and_an_exit_code(args, code, words):
    assert words in one_line_error(fabric(*args), code)


def test_ns_local_serves_and_stops_cleanly_on_ctrl_c(tmp_path):
    proc = subprocess.Popen([FABRIC, "ns", "local", "--nodes", "3", "--base-port", "0",
                             "--data-dir", str(tmp_path), "--no-advertise"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        line = proc.stdout.readline().decode().strip()
        assert line.startswith("FABRIC_NS="), (line, proc.stderr.read1() if proc.poll() else "")
        ns = line.split("=", 1)[1]
        assert fabric("kv", "put", "k", "v", ns=ns).returncode == 0
        assert fabric("kv", "get", "k", ns=ns).stdout == b"v\n"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 130  # Ctrl-C: a clean stop, reported as interrupted
        # Every node is gone: its port can be bound again.
        assert "unavailable" in one_line_error(
            fabric("kv", "get", "k", "--ns", ns, "--timeout", "0.3"), 1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_ns_start_runs_one_node_until_sigterm(tmp_path):
    port = free_ports(1)[0]
    proc = subprocess.Popen([FABRIC, "ns", "start", "--id", "1", "--cluster",
                             f"1=127.0.0.1:{port}", "--data-dir", str(tmp_path / "d"),
                             "--no-advertise"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout.readline().startswith(b"listening")
        ns = f"127.0.0.1:{port}"
        wait_for(lambda: fabric("kv", "put", "solo", "1", ns=ns).returncode == 0, 10,
                 "a one-node cluster to serve")
        proc.terminate()
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def test_put_with_a_ttl_is_deleted_when_its_lease_runs_out(cluster):
    ns = cluster.ns_arg
    put = fabric("kv", "put", "cli/ttl", "brief", "--ttl", "3", ns=ns)
    assert put.returncode == 0 and b"lease " in put.stderr
    revision = int(put.stderr.split(b"revision ")[1].split()[0])
    # Replaying the key's history from the put: how long a later command takes to start
    # cannot hide the value, which may well be gone by then.
    env = dict(os.environ, FABRIC_NS=ns)
    with subprocess.Popen([FABRIC, "kv", "watch", "cli/ttl", "--from-rev", str(revision)],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as watcher:
        try:
            events = [read_line(watcher, 30), read_line(watcher, 30)]
        finally:
            watcher.kill()
    assert events[0] == b"%d put cli/ttl brief" % revision, events
    assert events[1].split()[1:] == [b"delete", b"cli/ttl"], events
    assert "not found" in one_line_error(fabric("kv", "get", "cli/ttl", ns=ns), 4)


def read_line(proc: subprocess.Popen, timeout: float) -> bytes:
    """The next line ``proc`` prints, without its newline; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or (proc.poll() is not None and not line):
            pytest.fail(f"no line from {proc.args} within {timeout} s (got {line!r})")
        if select.select([proc.stdout], [], [], min(left, 0.1))[0]:
            chunk = os.read(proc.stdout.fileno(), 1)
            if not chunk:
                pytest.fail(f"{proc.args} ended mid-line: {line!r}")
            line += chunk
    return line.rstrip(b"\n")


def test_stale_put_get_del(cluster):
    one = cluster.addresses[1]
    assert fabric("kv", "put", "cli/s", "quorumless", "--stale", ns=one).returncode == 0
    assert fabric("kv", "get", "cli/s", "--stale", ns=one).stdout == b"quorumless\n"
    assert fabric("kv", "del", "cli/s", "--stale", ns=one).returncode == 0
    assert fabric("kv", "get", "cli/s", "--stale", ns=one).returncode == 4
    assert "not found" in one_line_error(fabric("kv", "del", "cli/s", "--stale", ns=one), 4)


def test_lease_grant_keepalive_revoke(cluster):
    ns = cluster.ns_arg
    granted = fabric("lease", "grant", "30", ns=ns)
    assert granted.returncode == 0
    lease_id = granted.stdout.decode().strip()
    renewed = fabric("lease", "keepalive", lease_id, "--once", ns=ns)
    assert renewed.returncode == 0 and b"ttl 30" in renewed.stdout
    env = dict(os.environ, FABRIC_NS=ns)
    with subprocess.Popen([FABRIC, "lease", "keepalive", lease_id], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as keeper:
        try:
            assert keeper.stdout.readline().startswith(b"lease " + lease_id.encode())
            keeper.send_signal(signal.SIGINT)
            assert keeper.wait(timeout=10) == 130
        finally:
            if keeper.poll() is None:
                keeper.kill()
    assert fabric("lease", "revoke", lease_id, ns=ns).returncode == 0
    assert "not found" in one_line_error(fabric("lease", "revoke", lease_id, ns=ns), 4)
    assert "not found" in one_line_error(fabric("lease", "keepalive", lease_id, ns=ns), 4)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 0)])
def test_a_node_stopped_by_ctrl_c_exits_130_and_by_sigterm_0(tmp_path, sig, code):
    [port] = free_ports(1)
    proc = subprocess.Popen([FABRIC, "ns", "start", "--id", "1", "--cluster",
                             f"1=127.0.0.1:{port}", "--data-dir", str(tmp_path),
                             "--no-advertise"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = proc.stdout.readline().decode().strip()
        assert line == f"listening 127.0.0.1:{port}", (line, proc.stderr.read1())
        proc.send_signal(sig)
        assert proc.wait(timeout=20) == code
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
