"""Majority quorum arithmetic. Any two majorities of the same voter set intersect (Raft §5.2, §5.4)."""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping


class VoteResult(enum.Enum):
    PENDING = 0
    WON = 1
    LOST = 2


def majority(voter_count: int) -> int:
    return voter_count // 2 + 1


def committed_index(matches: list[int]) -> int:
    """The largest index that a majority of ``matches`` has reached; 0 for an empty voter set."""
    if not matches:
        return 0
    ordered = sorted(matches, reverse=True)
    return ordered[majority(len(ordered)) - 1]


def vote_result(voters: Collection[int], votes: Mapping[int, bool]) -> VoteResult:
    """WON once a majority granted, LOST once a majority can no longer grant, PENDING otherwise."""
    if not voters:
        return VoteResult.WON
    granted = sum(1 for v in voters if votes.get(v) is True)
    missing = sum(1 for v in voters if v not in votes)
    need = majority(len(voters))
    if granted >= need:
        return VoteResult.WON
    if granted + missing >= need:
        return VoteResult.PENDING
    return VoteResult.LOST
