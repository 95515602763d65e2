"""Replay one simulator scenario, or soak many: see ``nameservice.raft.sim``."""
from __future__ import annotations

import argparse
import multiprocessing
import sys
import time

from nameservice.raft.sim.scenario import replay_command, run_scenario


def _run(seed: int) -> tuple[int, str | None]:
    try:
        run_scenario(seed)
    except Exception as exc:  # any exception is a failed scenario
        return seed, f"{type(exc).__name__}: {exc}"
    return seed, None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nameservice.raft.sim")
    parser.add_argument("--seed", type=int, help="replay one scenario and print its faults")
    parser.add_argument("--soak", type=int, metavar="N", help="run seeds START..START+N-1")
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=multiprocessing.cpu_count())
    args = parser.parse_args(argv)
    if args.seed is not None:
        result = run_scenario(args.seed, verbose=True)
        print(f"seed {args.seed}: ok — {result.size} nodes, {result.committed} committed, "
              f"{result.acknowledged} acknowledged, {result.reads} reads, {result.leaders} terms "
              f"with a leader, {result.messages} messages")
        return 0
    if args.soak is None:
        parser.error("give --seed N or --soak N")
    seeds = range(args.start, args.start + args.soak)
    started = time.monotonic()
    failures = 0
    with multiprocessing.Pool(args.jobs) as pool:
        for done, (seed, error) in enumerate(pool.imap_unordered(_run, seeds, chunksize=16), 1):
            if error:
                failures += 1
                print(f"seed {seed} FAILED: {error}\n  replay: {replay_command(seed)}", flush=True)
            if done % 1000 == 0:
                elapsed = time.monotonic() - started
                print(f"{done} seeds, {failures} failed, {elapsed:.0f} s", flush=True)
    print(f"{len(seeds)} seeds, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
