"""A stateful component's replica machine under the Raft simulator's faults, over many seeds.

Every node of a simulated cluster (nameservice/raft/sim: crashes, also mid-write, restarts,
partitions, message loss and duplication, compaction, InstallSnapshot to lagging nodes,
membership changes) applies its log to a real ``ReplicaMachine`` wrapping a small
deterministic component. The clients write INPUT entries — new messages, messages resent in
later entries (the same producer and sequence numbers, as after a failover), messages twice in
one entry, gaps that never fill, now and then an entry that does not decode — and now and then
an OUTBOX_ACKED entry.

Checked on every node, after every entry it applies and every snapshot it restores, against a
reference machine that applies the committed log once, from scratch:

* its state digest is the reference's at the same index: replicas agree, and a snapshot
  restored then the log replayed gives the state applied from scratch;
* every message (producer, seq) is applied at a single log index, the same on every node:
  never twice;
* its outbox numbering: the floor and the next number are the reference's, and each number
  carries the same emitted message on every node;
* each producer's applied numbers: at most ``MAX_GAP`` listed, all above the floor.

At the end of each scenario the reference's log is also cut at a random index: snapshot there,
restore into a fresh machine, replay the rest, same state. A failure names its seed;
``run_one(seed)`` replays it.
"""
from __future__ import annotations

import functools
import hashlib
import multiprocessing
import os
import random
from typing import Any

import msgpack
import pytest

from fabric.stateful import Input, Stateful
from fabric.stateful.machine import ReplicaMachine, encode_input, encode_outbox_acked
from nameservice.raft.sim.scenario import ScenarioResult, run_scenario

SEEDS = int(os.environ.get("FABRIC_STATEFUL_SIM_SEEDS", "100"))
SOAK_SEEDS = int(os.environ.get("FABRIC_STATEFUL_SIM_SOAK_SEEDS", "2000"))
DURATION_MS = 1_500  # virtual time of a default scenario; the soak runs the simulator's 3 s
SOAK_DURATION_MS = 3_000
MAX_GAP = 8  # small, so that gaps that never fill make a producer's floor jump


class Divergence(AssertionError):
    """A replica machine disagrees with the reference, or applied a message twice."""


class Tally(Stateful):
    """The model component: counts, sums and chains, in order, the messages it applies; emits
    one message for each payload divisible by 3. Tells the oracle of every message."""

    def __init__(self, oracle: Oracle, who: str) -> None:
        self.state = {"count": 0, "sum": 0, "chain": b""}
        self.oracle = oracle
        self.who = who
        self.emits: list[Any] = []  # not replicated: what the entry being applied emitted
        self._entry: tuple[int, set[tuple[bytes, int]]] = (0, set())  # an entry, its messages

    def apply(self, message: Input) -> None:
        self._applied(message)
        state = self.state
        state["count"] += 1
        state["sum"] += message.payload
        record = msgpack.packb([message.producer_id, message.seq, message.payload])
        state["chain"] = hashlib.blake2b(state["chain"] + record, digest_size=16).digest()
        if message.payload % 3 == 0:
            out = [message.producer_id, message.seq, state["count"]]
            self.emit(out)
            self.emits.append(out)

    def _applied(self, message: Input) -> None:
        # ReplicaMachine swallows what apply raises: failures are collected, raised later.
        key = (message.producer_id, message.seq)
        name = f"{key[0].hex()[:8]}:{key[1]}"
        index, seen = self._entry
        if index != message.index:
            self._entry = index, seen = message.index, set()
        if key in seen:
            self.oracle.fail(f"{self.who} applied message {name} twice in entry {index}")
        seen.add(key)
        first = self.oracle.applied_at.setdefault(key, message.index)
        if first != message.index:
            self.oracle.fail(f"{self.who} applied message {name} at index {message.index}, "
                             f"already applied at index {first}")


def new_machine(oracle: Oracle, who: str) -> ReplicaMachine:
    return ReplicaMachine(Tally(oracle, who), max_gap=MAX_GAP)


def tally_of(machine: ReplicaMachine) -> Tally:
    tally = machine.component
    assert isinstance(tally, Tally)
    return tally


class Oracle:
    """What every replica of one scenario must agree on, from the reference machine."""

    def __init__(self) -> None:
        self.applied_at: dict[tuple[bytes, int], int] = {}  # message -> the index applying it
        self.failures: list[str] = []
        self.reference = new_machine(self, "the reference")
        self.log: dict[int, bytes] = {}  # the committed entries, as the reference applied them
        # index -> (digest, outbox floor, next number) of the reference there
        self.at: dict[int, tuple[str, int, int]] = {0: self._state(self.reference)}
        self.numbered: dict[int, Any] = {}  # outbox number -> the message emitted under it
        self.restores = 0

    @staticmethod
    def _state(machine: ReplicaMachine) -> tuple[str, int, int]:
        return machine.state_digest(), machine.outbox_floor, machine.emitted

    def fail(self, text: str) -> None:
        self.failures.append(text)

    def raise_failures(self) -> None:
        if self.failures:
            raise Divergence("; ".join(self.failures[:3]))

    def learn(self, index: int, data: bytes) -> None:
        """A node applies committed entry ``index``: the reference applies it first, if new."""
        reference = self.reference
        if index <= reference.applied_index:
            return
        # A node applies index i only once some node reached i - 1, so the reference has too.
        if index != reference.applied_index + 1:
            raise Divergence(f"entry {index} applied before entry {reference.applied_index + 1}")
        first = reference.emitted
        reference.apply_entry(index, data)
        self.log[index] = data
        self.at[index] = self._state(reference)
        emits = tally_of(reference).emits
        for number, out in enumerate(emits, first):
            self.numbered[number] = out
        emits.clear()
        self.raise_failures()

    def check(self, who: str, how: str, machine: ReplicaMachine, first: int = 0,
              emits: list[Any] | None = None) -> None:
        """Compare ``machine``'s state with the reference's at the same index."""
        self.raise_failures()
        index = machine.applied_index
        want = self.at.get(index)
        got = self._state(machine)
        if got != want:
            raise Divergence(f"{who} {how} index {index}: (digest, outbox floor, next number) "
                             f"{got}, the reference {want}")
        for number, out in enumerate(emits or (), first):
            if self.numbered.get(number) != out:
                raise Divergence(f"{who} emitted {out} as number {number}, the reference "
                                 f"{self.numbered.get(number)}")
        if machine.counters["apply_errors"]:
            raise Divergence(f"{who}: apply raised")
        for producer, seqs in machine.producers.items():
            if len(seqs.above) > MAX_GAP or any(seq <= seqs.floor for seq in seqs.above):
                raise Divergence(f"{who}: producer {producer.hex()[:8]} has floor {seqs.floor} "
                                 f"and above it {sorted(seqs.above)} (at most {MAX_GAP})")


class CheckedReplica:
    """A node's state machine for the simulator: a ReplicaMachine, checked by the oracle after
    every entry applied and every snapshot restored."""

    def __init__(self, node: int, oracle: Oracle) -> None:
        self.who = f"node {node}"
        self.oracle = oracle
        self.machine = new_machine(oracle, self.who)

    @property
    def applied_index(self) -> int:
        return self.machine.applied_index

    def apply_entry(self, index: int, data: bytes) -> None:
        machine, oracle = self.machine, self.oracle
        oracle.learn(index, data)
        first = machine.emitted
        machine.apply_entry(index, data)
        emits = tally_of(machine).emits
        oracle.check(self.who, "applied", machine, first, emits)
        emits.clear()

    def snapshot(self) -> bytes:
        return self.machine.snapshot()

    def restore(self, data: bytes) -> None:
        self.machine.restore(data)
        self.oracle.check(self.who, "restored a snapshot at", self.machine)
        self.oracle.restores += 1


class Clients:
    """The producers' writes (``write()`` of the scenario), with resends as after a failover,
    and now and then an acknowledgement of part of the outbox."""

    def __init__(self, seed: int, oracle: Oracle) -> None:
        self.rng = rng = random.Random(f"stateful-clients-{seed}")
        self.oracle = oracle
        self.producers = [rng.randbytes(16) for _ in range(3)]
        self.next_seq = dict.fromkeys(self.producers, 0)
        self.sent: list[tuple[bytes, int, list[int]]] = []

    def write(self) -> bytes:
        rng = self.rng
        if rng.random() < 0.1:
            # The leader's view of the consumers: behind, exact, or ahead of what was emitted.
            acked = self.oracle.reference.emitted + rng.choice((-50, -5, -1, 0, 0, 3))
            return encode_outbox_acked(max(0, acked))
        runs: list[tuple[bytes, int, list[int]]] = []
        for _ in range(rng.choice((1, 1, 2, 3))):
            roll = rng.random()
            if roll < 0.25 and self.sent:
                # A resend after a failover: the tail of a run proposed before, whether or not
                # its entry was committed.
                producer, first, payloads = rng.choice(self.sent[-30:])
                cut = rng.randrange(len(payloads))
                runs.append((producer, first + cut, payloads[cut:]))
            elif roll < 0.3 and runs:
                runs.append(runs[-1])  # the same messages twice in one entry
            else:
                producer = rng.choice(self.producers)
                seq = self.next_seq[producer]
                if rng.random() < 0.05:
                    seq += rng.randint(1, 3)  # those went to another consumer group
                payloads = [rng.randrange(1_000) for _ in range(rng.randint(1, 5))]
                self.next_seq[producer] = seq + len(payloads)
                runs.append((producer, seq, payloads))
                self.sent.append(runs[-1])
        if rng.random() < 0.03:
            # A run that does not decode after good ones: the whole entry changes nothing.
            runs.append(("not a producer id", 0, [0]))  # type: ignore[arg-type]
        return encode_input(runs)


def check_restore_then_replay(oracle: Oracle, rng: random.Random) -> None:
    """Snapshot the log applied up to a random index, restore it into a fresh machine and
    replay the rest: the reference's state at every index."""
    last = oracle.reference.applied_index
    cut = rng.randint(0, last)
    who = f"a machine restored at index {cut}"
    fresh = new_machine(oracle, "a fresh machine")
    for index in range(1, cut + 1):
        fresh.apply_entry(index, oracle.log[index])
    restored = new_machine(oracle, who)
    restored.restore(fresh.snapshot())
    oracle.check(who, "at", restored)
    emits = tally_of(restored).emits
    for index in range(cut + 1, last + 1):
        first = restored.emitted
        restored.apply_entry(index, oracle.log[index])
        oracle.check(who, "replayed to", restored, first, emits)
        emits.clear()


def run_one(seed: int, duration_ms: int = DURATION_MS) -> tuple[ScenarioResult, Oracle]:
    """Run scenario ``seed`` with checked replica machines; raises on a divergence."""
    oracle = Oracle()
    clients = Clients(seed, oracle)
    result = run_scenario(seed, duration_ms,
                          machine=lambda node: CheckedReplica(node, oracle),
                          write=clients.write)
    check_restore_then_replay(oracle, clients.rng)
    return result, oracle


def _run(seed: int, duration_ms: int) -> str | None:
    try:
        run_one(seed, duration_ms)
    except Exception as exc:  # every exception is a bug the seed reproduces
        return (f"seed {seed}: {type(exc).__name__}: {exc}\n"
                f"  replay: run_one({seed}, {duration_ms}) in tests.stateful.test_sim")
    return None


def _run_many(seeds: range, duration_ms: int = DURATION_MS) -> list[str]:
    jobs = max(1, min(os.cpu_count() or 1, 4))
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(jobs) as pool:
        runs = pool.imap_unordered(functools.partial(_run, duration_ms=duration_ms), seeds,
                                   chunksize=5)
        return [err for err in runs if err]


def test_replica_machines_agree_under_faults_and_never_apply_a_message_twice():
    failures = _run_many(range(SEEDS))
    summary = f"{len(failures)} of {SEEDS} scenarios failed:\n"
    assert not failures, summary + "\n".join(failures[:10])


def test_scenarios_exercise_resends_snapshots_and_the_outbox():
    runs = [run_one(seed) for seed in range(10)]
    references = [oracle.reference for _, oracle in runs]
    assert sum(m.counters["applied_messages"] for m in references) > 1000
    assert sum(m.counters["duplicates_skipped"] for m in references) > 100
    assert any(seqs.floor > 0 for m in references for seqs in m.producers.values())
    assert sum(oracle.restores for _, oracle in runs) > 10  # restarts, InstallSnapshot
    assert sum(result.snapshots_installed for result, _ in runs) > 5  # InstallSnapshot
    assert sum(result.conf_changes for result, _ in runs) > 5
    assert sum(m.emitted for m in references) > 100
    assert sum(m.outbox_floor for m in references) > 50  # acknowledged, left the outbox


@pytest.mark.soak
def test_soak_many_more_seeds():
    failures = _run_many(range(SEEDS, SEEDS + SOAK_SEEDS), SOAK_DURATION_MS)
    assert not failures, "\n".join(failures[:20])
