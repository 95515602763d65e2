"""Randomized failures of the data path, with real processes on 127.0.0.1.

2 producers (25,000 msgs/s each) → 3 intermediaries → 2 consumers; a seeded schedule of faults
(SIGKILL, SIGSTOP, SIGTERM-drain of intermediaries; SIGSTOP and SIGKILL of consumers; see
``tests/datapath/chaos.py``), one at a time, while the producers stream; then every process is
stopped with SIGTERM and the checker reads the consumers' records: nothing lost, nothing handled
twice unless a consumer's death (or a freeze past the consumer timeout) explains it, every
process exited 0.

Replay a seed (also how to run the soak with seeds of your own):

    FABRIC_CHAOS_SEEDS=7,8 FABRIC_CHAOS_FAULTS=30 .venv/bin/python -m pytest \\
        tests/datapath/test_chaos.py -m soak -s
"""
from __future__ import annotations

import os

import pytest

from tests.datapath.chaos import Chaos, History, check, make_schedule
from tests.datapath.procs import RECORD

SOAK_SEEDS = [int(s) for s in os.environ.get(
    "FABRIC_CHAOS_SEEDS", ",".join(str(s) for s in range(100, 110))).split(",")]
SOAK_FAULTS = int(os.environ.get("FABRIC_CHAOS_FAULTS", "25"))


def run_and_check(cluster, seed: int, faults: int) -> None:
    chaos = Chaos(cluster, seed, faults)
    print(f"chaos seed {seed}, {faults} faults")
    history = chaos.run()
    print(f"schedule as run:\n{history.schedule_text()}\nsent {history.sent}")
    problems = check(history)
    if any(f.kind in ("kill_inter", "stop_inter") for f in chaos.schedule):
        lost = sum(history.stats.get(f"producer{k}", {}).get("intermediaries_lost", 0)
                   for k in range(len(history.sent)))
        if not lost:
            problems.append("no producer saw an intermediary go: the faults did not bite")
    assert not problems, (
        f"chaos seed {seed} ({faults} faults) failed; replay with\n"
        f"  FABRIC_CHAOS_SEEDS={seed} FABRIC_CHAOS_FAULTS={faults} .venv/bin/python -m pytest "
        f"tests/datapath/test_chaos.py -m soak -s\n"
        f"schedule as run:\n{history.schedule_text()}\n" + "\n".join(problems))


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1])
def test_random_faults_lose_nothing_and_duplicate_only_what_a_consumer_death_explains(
        cluster, seed):
    run_and_check(cluster, seed, 8)


@pytest.mark.soak
@pytest.mark.parametrize("seed", SOAK_SEEDS)
def test_soak_random_faults(cluster, seed):
    run_and_check(cluster, seed, SOAK_FAULTS)


def history_of(tmp_path, records: dict[str, list[tuple[int, int]]], victims=(), sent=(3,)):
    """A history whose consumers handled ``records`` (payload, redelivered)."""
    history = History(seed=0, rate=1000.0, producer_start=[0.0] * len(sent), sent=list(sent))
    for name, recs in records.items():
        path = tmp_path / f"{name}.bin"
        path.write_bytes(b"".join(RECORD.pack(p, r) for p, r in recs))
        history.outputs[name] = str(path)
    history.victims = set(victims)
    return history


def test_the_checker_accepts_each_message_once_and_a_dead_consumer_s_flagged_copies(tmp_path):
    assert check(history_of(tmp_path, {"a": [(0, 0), (1, 0)], "b": [(2, 0)]})) == []
    # b died after handling 1; a got it again, flagged.
    assert check(history_of(tmp_path, {"a": [(0, 0), (1, 1), (2, 0)], "b": [(1, 0)]},
                            victims={"b"})) == []


def test_the_checker_reports_a_lost_message(tmp_path):
    problems = check(history_of(tmp_path, {"a": [(0, 0), (2, 0)]}))
    assert len(problems) == 1 and "1 messages lost" in problems[0]
    assert "producer0 seq 1" in problems[0] and "handled by nobody" in problems[0]


@pytest.mark.parametrize("copies, victims", [
    ({"a": [(0, 0), (1, 0), (2, 0)], "b": [(1, 0)]}, {"b"}),  # two unflagged copies
    ({"a": [(0, 0), (1, 1), (2, 0)], "b": [(1, 0)]}, set()),  # flagged, but nobody died
    ({"a": [(0, 0), (1, 0), (2, 0)], "b": [(1, 1)]}, {"b"}),  # the unflagged copy is not the
])                                                            # dead consumer's
def test_the_checker_reports_a_duplicate_no_consumer_death_explains(tmp_path, copies, victims):
    problems = check(history_of(tmp_path, copies, victims))
    assert len(problems) == 1 and "1 messages handled more than once" in problems[0]
    assert "producer0 seq 1" in problems[0]


def test_the_checker_reports_a_process_that_did_not_exit_0(tmp_path):
    history = history_of(tmp_path, {"a": [(0, 0), (1, 0), (2, 0)]})
    history.exits.append("consumer0 exited 3: drain timed out")
    assert check(history) == ["consumer0 exited 3: drain timed out"]


def test_a_seed_always_makes_the_same_schedule():
    assert make_schedule(5, 20) == make_schedule(5, 20)
    assert make_schedule(5, 20) != make_schedule(6, 20)
    kinds = {f.kind for f in make_schedule(5, 200)}
    assert kinds == {"kill_inter", "stop_inter", "drain_inter", "stop_consumer", "kill_consumer"}
