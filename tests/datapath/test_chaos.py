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

from tests.datapath.chaos import Chaos, check

SOAK_SEEDS = [int(s) for s in os.environ.get(
    "FABRIC_CHAOS_SEEDS", ",".join(str(s) for s in range(100, 110))).split(",")]
SOAK_FAULTS = int(os.environ.get("FABRIC_CHAOS_FAULTS", "25"))


def run_and_check(cluster, seed: int, faults: int, marker: str) -> None:
    chaos = Chaos(cluster, seed, faults)
    print(f"chaos seed {seed}, {faults} faults")
    history = chaos.run()
    print(f"schedule as run:\n{history.schedule_text()}\nsent {history.sent}")
    problems = check(history)
    assert not problems, (
        f"chaos seed {seed} ({faults} faults) failed; replay with\n"
        f"  FABRIC_CHAOS_SEEDS={seed} FABRIC_CHAOS_FAULTS={faults} .venv/bin/python -m pytest "
        f"tests/datapath/test_chaos.py -m soak -s\n"
        f"schedule as run:\n{history.schedule_text()}\n" + "\n".join(problems))


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1])
def test_random_faults_lose_nothing_and_duplicate_only_what_a_consumer_death_explains(
        cluster, seed):
    run_and_check(cluster, seed, 8, "slow")


@pytest.mark.soak
@pytest.mark.parametrize("seed", SOAK_SEEDS)
def test_soak_random_faults(cluster, seed):
    run_and_check(cluster, seed, SOAK_FAULTS, "soak")
