"""Scenario tests: each tests/raft/testdata/*.txt file is a list of commands with the full trace they produce.

To regenerate the expected traces after an intended change, run
``COORD_REWRITE_SCENARIOS=1 python -m pytest tests/raft/test_scenarios.py`` (or
``python -m tests.raft.interaction --rewrite``) and review the diff.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.raft.interaction import TESTDATA, rewrite_requested, run_scenario

SCENARIOS = sorted(TESTDATA.glob("*.txt"))


def test_every_area_has_a_scenario() -> None:
    names = {p.stem for p in SCENARIOS}
    for area in (
        "election",
        "prevote_checkquorum",
        "replication",
        "log_conflict",
        "snapshot",
        "confchange",
        "leader_transfer",
        "read_index",
    ):
        assert area in names


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario(path: Path) -> None:
    expected = path.read_text()
    actual = run_scenario(expected)
    if rewrite_requested():
        path.write_text(actual)
        return
    assert actual == expected, f"{path.name} changed; rerun with COORD_REWRITE_SCENARIOS=1 and review the diff"
