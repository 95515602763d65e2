"""A deterministic simulator for the Raft core: virtual clock, seeded faulty network, crashes.

Everything that varies comes from one seed, so any run can be replayed exactly:

    python -m nameservice.raft.sim --seed 1234          # replay one scenario, verbosely
    python -m nameservice.raft.sim --soak 100000        # many seeds, on demand
"""
