"""User mistakes running a stateful component: one line, a non-zero exit, no traceback."""
from __future__ import annotations

import subprocess
import sys

import pytest


def fabric(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fabric", *args], capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("args, says", [
    (["tests.stateful.counting:Counter", "--ns", "127.0.0.1:1"], "give --data DIR"),
    (["tests.stateful.counting:Counter", "--data", "x", "--ns", "127.0.0.1:1"],
     "give --name NAME"),
    (["tests.stateful.counting:Counter", "--data", "x", "--name", "c", "--listen-host",
      "0.0.0.0", "--ns", "127.0.0.1:1"], "not '0.0.0.0'"),
    (["tests.stateful.counting:Counter", "--data", "x", "--name", "c", "--partitions", "2",
      "--partition", "2",
      "--ns", "127.0.0.1:1"], "--partition must be below --partitions (2)"),
    (["tests.stateful.counting:Missing", "--data", "x", "--ns", "127.0.0.1:1"], "has no Missing"),
    (["tests.stateful.counting:Input", "--data", "x", "--ns", "127.0.0.1:1"],
     "is not an async function"),
])
def test_a_mistake_is_one_line_and_exit_2(args, says):
    done = fabric("component", "run", *args)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and "Traceback" not in done.stderr, done.stderr


def test_a_data_directory_holding_no_replica_id_is_refused_in_one_line(tmp_path):
    from nameservice.server.local import LocalCluster

    (tmp_path / "r" / "p0").mkdir(parents=True)
    (tmp_path / "r" / "p0" / "replica.id").write_text("not an id\n")
    with LocalCluster(tmp_path / "ns", 1) as cluster:
        cluster.start()
        done = fabric("component", "run", "tests.stateful.counting:Counter", "--data",
                      str(tmp_path / "r"), "--name", "c", "--ns", cluster.ns_arg)
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert "holds no replica id" in last and "Traceback" not in done.stderr, done.stderr


def test_a_stateful_component_with_keys_is_refused_in_one_line(tmp_path):
    from nameservice.server.local import LocalCluster

    with LocalCluster(tmp_path / "ns", 1, secure=("admin",)) as cluster:
        cluster.start()
        done = fabric("component", "run", "tests.stateful.counting:Counter", "--data",
                      str(tmp_path / "r"), "--name", "c", "--ns", cluster.ns_arg,
                      "--keys", str(cluster.keys["admin"]))
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert "do not run with keys yet" in last and "Traceback" not in done.stderr, done.stderr
