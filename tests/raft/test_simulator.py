"""Randomized, deterministic cluster simulations (see tests/raft/sim.py for the faults and invariants).

CI covers 600 seeds: 300 with 3 voters and 300 with 5 voters, each with a spare node that membership changes may
add, and with crashes, partitions, lossy/duplicating/reordering links, leader transfers and log compaction. The slow
run (``pytest -m slow``) adds seeds 300-1499 of both. A failure prints the seed and the command that replays it
verbosely.
"""

from __future__ import annotations

import pytest

from tests.raft.sim import InvariantViolation, SimOptions, Simulator, replay_command, run_seed

SEEDS_PER_CONFIG = 300
SLOW_SEEDS_PER_CONFIG = 1500
BATCH = 50


def _run_batch(first_seed: int, nodes: int) -> None:
    for seed in range(first_seed, first_seed + BATCH):
        try:
            run_seed(seed, nodes)
        except InvariantViolation as e:
            pytest.fail(f"seed {seed} with {nodes} nodes: {e}\nreplay: {replay_command(seed, nodes)}")


@pytest.mark.parametrize("nodes", [3, 5])
@pytest.mark.parametrize("first_seed", range(0, SEEDS_PER_CONFIG, BATCH))
def test_simulated_cluster_keeps_raft_invariants(nodes: int, first_seed: int) -> None:
    _run_batch(first_seed, nodes)


@pytest.mark.slow
@pytest.mark.parametrize("nodes", [3, 5])
@pytest.mark.parametrize("first_seed", range(SEEDS_PER_CONFIG, SLOW_SEEDS_PER_CONFIG, BATCH))
def test_more_seeds_keep_raft_invariants(nodes: int, first_seed: int) -> None:
    _run_batch(first_seed, nodes)


def test_simulation_is_deterministic() -> None:
    a = Simulator(11, SimOptions(nodes=3))
    a.run()
    b = Simulator(11, SimOptions(nodes=3))
    b.run()
    assert (a.steps, a.max_applied, a.counts, a.applied_entries) == (
        b.steps,
        b.max_applied,
        b.counts,
        b.applied_entries,
    )


def test_simulation_exercises_every_fault() -> None:
    totals: dict[str, int] = {}
    for seed in range(40):
        for nodes in (3, 5):
            for k, v in run_seed(seed, nodes).counts.items():
                totals[k] = totals.get(k, 0) + v
    events = ["crash", "restart", "partition", "leaders", "compactions", "snapshots delivered", "transfers"]
    events += ["applied ADD_LEARNER", "applied ADD_VOTER", "applied REMOVE_NODE", "leader removed"]
    for event in events:
        assert totals.get(event, 0) > 0, f"no {event} in 80 runs: {totals}"


def test_a_broken_invariant_is_reported_with_its_replay_command(monkeypatch: pytest.MonkeyPatch) -> None:
    from coord.server.raft.log import RaftLog

    # Grant every vote whatever the candidate's log: leader completeness (Raft §5.4.1) must catch it.
    monkeypatch.setattr(RaftLog, "is_up_to_date", lambda self, index, term: True)
    with pytest.raises(InvariantViolation, match=r"replay with: python -m tests.raft.sim --seed \d+ --nodes 3"):
        for seed in range(100):
            run_seed(seed, 3)
