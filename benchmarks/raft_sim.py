"""Throughput of the deterministic Raft simulator (tests/raft/sim.py): simulated steps per second.

Usage: ``python -m benchmarks.raft_sim [--seeds 100]``. Each step is one simulated event (a tick, a message
delivery, a Ready handled, a proposal, a read, or a fault) followed by the invariant checks.
"""

from __future__ import annotations

import argparse
import time

from tests.raft.sim import run_seed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=100)
    args = parser.parse_args()
    for nodes in (3, 5):
        start = time.perf_counter()
        steps = sum(run_seed(seed, nodes).steps for seed in range(args.seeds))
        elapsed = time.perf_counter() - start
        print(f"{nodes} nodes: {args.seeds} seeds, {steps} steps, {elapsed:.1f}s, {steps / elapsed:,.0f} steps/s")


if __name__ == "__main__":
    main()
