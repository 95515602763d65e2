"""Thousands of seeded fault scenarios through the deterministic simulator.

Each scenario checks Election Safety, election and commit quorums in the configuration in
force, Log Matching, Leader Completeness, State Machine Safety, linearizable ReadIndex and
liveness after repair (see nameservice/raft/sim). About half of the scenarios also change the
membership as they run (learners added and promoted, voters removed and replaced, the leader
among them). A failure names the seed and the command that replays it.
"""
from __future__ import annotations

import multiprocessing
import os
import re

import pytest

from nameservice.raft.sim.scenario import replay_command, run_scenario

SEEDS = int(os.environ.get("FABRIC_SIM_SEEDS", "2000"))
SOAK_SEEDS = int(os.environ.get("FABRIC_SIM_SOAK_SEEDS", "100000"))


def _run(seed: int) -> str | None:
    try:
        run_scenario(seed)
    except Exception as exc:  # every exception is a bug the seed reproduces
        return f"seed {seed}: {type(exc).__name__}: {exc}\n  replay: {replay_command(seed)}"
    return None


def _run_many(seeds: range) -> list[str]:
    jobs = max(1, min(os.cpu_count() or 1, 4))
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(jobs) as pool:
        return [err for err in pool.imap_unordered(_run, seeds, chunksize=20) if err]


def test_thousands_of_seeded_scenarios_keep_raft_safe_and_live():
    failures = _run_many(range(SEEDS))
    summary = f"{len(failures)} of {SEEDS} scenarios failed:\n"
    assert not failures, summary + "\n".join(failures[:10])


def test_scenarios_cover_both_cluster_sizes_and_real_work():
    results = [run_scenario(seed) for seed in range(20)]
    assert {r.size for r in results} == {3, 5}
    assert sum(r.acknowledged for r in results) > 1000
    assert sum(r.reads for r in results) > 50
    assert all(r.leaders >= 1 for r in results)
    # A share of the scenarios changes the membership, the leader's own removal included.
    changed = [r for r in results if r.conf_changes]
    assert 5 <= len(changed) <= 15
    proposals = [re.search(r"leader (\d+) proposes (\w+) (\d+)", f) for r in changed
                 for f in r.faults]
    kinds = {m.group(2) for m in proposals if m}
    assert kinds == {"ADD_LEARNER", "PROMOTE", "REMOVE"}
    assert any(m.group(2) == "REMOVE" and m.group(1) == m.group(3) for m in proposals if m)


def test_a_scenario_replays_identically_from_its_seed():
    first, second = run_scenario(7), run_scenario(7)
    assert first == second


@pytest.mark.soak
def test_soak_many_more_seeds():
    failures = _run_many(range(SEEDS, SEEDS + SOAK_SEEDS))
    assert not failures, "\n".join(failures[:20])
