"""Benchmarks run at a tiny size: the ``--curve`` runs connect, the ``--vs-etcd`` run measures
etcd beside the name service, the task queue's run loses nothing, and each report carries the
keys it promises (docs/datapath.md, docs/nameservice.md and docs/tasks.md read them)."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run(script: str, *args: str, env: dict[str, str] | None = None) -> dict:
    """The JSON report of ``benchmarks/SCRIPT ARGS --json`` (its last line of stdout); ``env``
    replaces the environment."""
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), *args, "--json"],
                          capture_output=True, text=True, timeout=120, check=False, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_fabric_bench_with_curve_reports_throughput_ratio_and_latency_with_curve():
    report = run("fabric_bench.py", "--curve", "--messages", "2000", "--repeats", "1",
                 "--trials", "0")
    curve = report["curve"]
    assert {"fabric_msgs_s", "ratio", "latency_p50_us"} <= curve.keys()
    assert curve["fabric_msgs_s"] > 0 and curve["ratio"] > 0 and curve["latency_p50_us"] > 0
    assert "failover_gap_ms" not in report  # --trials 0: no failover trials
    assert report["load_average"] >= 0


def test_ns_bench_with_curve_reports_puts_gets_and_the_puts_ratio_with_curve():
    report = run("ns_bench.py", "--curve", "--curve-repeats", "1", "--no-load", "--no-failover",
                 "--duration", "0.3")
    curve = report["curve"]
    assert {"puts_s", "gets_s", "ratio"} <= curve.keys()
    assert curve["puts_s"] > 0 and curve["gets_s"] > 0 and curve["ratio"] > 0
    assert report["load_average"] >= 0


def test_ns_bench_vs_etcd_reports_etcd_rates_failover_and_the_ratios():
    if shutil.which("etcd") is None:
        pytest.skip("etcd not on PATH (apt-get install etcd-server)")
    if importlib.util.find_spec("grpc") is None:
        pytest.skip("grpcio not installed (pip install -e .[bench])")
    report = run("ns_bench.py", "--vs-etcd", "--clients", "64", "--ops", "put,get",
                 "--in-flight", "0", "--duration", "0.3", "--trials", "1")
    etcd = report["etcd"]
    assert {"puts_s", "gets_s", "failover_p50_ms", "version"} <= etcd.keys(), etcd
    assert etcd["puts_s"] > 0 and etcd["gets_s"] > 0 and etcd["failover_p50_ms"] > 0
    assert report["ratios"].keys() == {"puts", "gets", "failover"}
    assert all(ratio > 0 for ratio in report["ratios"].values())


def test_ns_bench_vs_etcd_without_etcd_says_why_and_gives_no_ratios(tmp_path):
    report = run("ns_bench.py", "--vs-etcd", "--no-load", "--no-failover",
                 env=dict(os.environ, PATH=str(tmp_path)))
    assert report["etcd"].keys() == {"skipped"} and report["etcd"]["skipped"]
    assert "ratios" not in report


def test_task_bench_reports_its_keys_and_loses_nothing():
    report = run("task_bench.py", "--tasks", "500", "--concurrency", "32")
    assert {"tasks_s", "submit_s", "dispatch_latency_ms", "delay_lateness_ms", "lost",
            "completed_twice", "zombie_results_refused"} <= report.keys()
    assert report["tasks_s"] > 0 and report["submit_s"] > 0
    assert {"p50", "p99"} <= report["dispatch_latency_ms"].keys()
    assert {"p50", "p99", "max"} <= report["delay_lateness_ms"].keys()
    assert report["lost"] == 0 and report["completed_twice"] == 0
