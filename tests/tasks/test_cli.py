"""The queue's commands as a user runs them: a one-replica queue and a worker as processes,
tasks submitted, read, listed and cancelled from the command line; mistakes are one line and
a non-zero exit."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fabric.butterfly.fleet import Fleet
from nameservice.server.local import LocalCluster

ROOT = str(Path(__file__).resolve().parents[2])


def fabric(ns: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fabric", *args, "--ns", ns],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


@pytest.fixture(scope="module")
def queue(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("queue")
    with LocalCluster(tmp / "ns", 1) as cluster, Fleet(ROOT, tmp) as fleet:
        cluster.start()
        ns = cluster.ns_arg
        replica = fleet.start("q", [sys.executable, "-m", "fabric", "queue", "run", "--name",
                                    "cli", "--replicas", "1", "--data", str(tmp / "q"),
                                    "--ns", ns, "--events"])
        replica.wait_event("queue", 30)
        worker = fleet.start("w", [sys.executable, "-m", "fabric", "worker", "run",
                                   "tests.tasks.jobs", "--queue", "cli", "--types", "B",
                                   "--ns", ns, "--events"],
                             env={"FABRIC_TEST_RUNS": str(tmp)})
        worker.wait_event("worker", 30)
        yield ns


def test_submit_wait_get_and_list(queue):
    done = fabric(queue, "task", "submit", "B", "7", "--queue", "cli", "--key", "seven",
                  "--wait", "--json")
    assert done.returncode == 0, done.stderr
    task = json.loads(done.stdout)
    assert (task["state"], task["result"], task["attempts"]) == ("done", ["b", 7], 1)
    again = fabric(queue, "task", "submit", "B", "8", "--queue", "cli", "--key", "seven",
                   "--json")
    assert json.loads(again.stdout) == {"id": task["id"], "created": False}
    got = fabric(queue, "task", "get", task["id"], "--queue", "cli", "--json")
    assert json.loads(got.stdout)["id"] == task["id"]
    listed = fabric(queue, "task", "list", "--queue", "cli", "--state", "done", "--json")
    assert task["id"] in [json.loads(line)["id"] for line in listed.stdout.splitlines()]


def test_cancel_a_delayed_task_then_retry_it(queue):
    made = fabric(queue, "task", "submit", "B", "1", "--queue", "cli", "--delay", "3600",
                  "--json")
    task_id = json.loads(made.stdout)["id"]
    assert fabric(queue, "task", "cancel", task_id, "--queue", "cli").returncode == 0
    state = json.loads(fabric(queue, "task", "get", task_id, "--queue", "cli",
                              "--json").stdout)["state"]
    assert state == "cancelled"
    again = fabric(queue, "task", "cancel", task_id, "--queue", "cli")
    assert again.returncode == 1 and "cancelled already" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    assert fabric(queue, "task", "retry", task_id, "--queue", "cli").returncode == 0


@pytest.mark.parametrize("args, code, says", [
    (("task", "get", "no-such-task"), 4, "no task"),
    (("task", "submit", "B", "{not json"), 2, "not JSON"),
    (("task", "submit", "B", "1", "--cron", "61 * * * *"), 2, "minute"),
    (("task", "submit", "B", "1", "--every", "1", "--cron", "* * * * *"), 2, "not both"),
    (("task", "submit", "B", "1", "--at", "2030-01-01T00:00"), 2, "no time zone"),
])
def test_mistakes_are_one_line_and_an_exit_code(queue, args, code, says):
    got = fabric(queue, *args, "--queue", "cli")
    assert got.returncode == code, got.stderr
    assert says in got.stderr and len(got.stderr.strip().splitlines()) == 1
    assert "Traceback" not in got.stderr


def test_a_worker_of_a_module_without_tasks_is_refused(queue):
    got = fabric(queue, "worker", "run", "tests.tasks.test_cli", "--queue", "cli")
    assert got.returncode == 2 and "no @task function" in got.stderr


@pytest.mark.parametrize("command", [
    ("queue", "run", "--name", "k", "--data", "DATA"),
    ("worker", "run", "tests.tasks.jobs", "--queue", "k"),
])
def test_the_queue_and_its_workers_with_keys_are_refused_in_one_line(tmp_path, command):
    with LocalCluster(tmp_path / "ns", 1, secure=("admin",)) as cluster:
        cluster.start()
        args = [str(tmp_path / "q") if a == "DATA" else a for a in command]
        done = fabric(cluster.ns_arg, *args, "--keys", str(cluster.keys["admin"]))
    assert done.returncode == 1, done.stderr
    assert "does not run with keys yet" in done.stderr.strip().splitlines()[-1]
    assert "Traceback" not in done.stderr


def test_status_shows_the_queue_replica_and_the_worker(queue):
    assert fabric(queue, "task", "submit", "B", "2", "--queue", "cli", "--wait").returncode == 0
    got = fabric(queue, "status")
    assert got.returncode == 0, got.stderr
    rows = {line.split()[1]: line for line in got.stdout.splitlines()[3:] if line.split()}
    assert "leader term" in rows["queue"] and "done" in rows["queue"], got.stdout
    assert "running 0/1" in rows["worker"], got.stdout
