"""Configuration of one Raft node."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from .storage import NO_LIMIT


@dataclass(slots=True)
class Config:
    """Parameters of a ``RawNode``. Membership is bootstrapped through the storage's ``ConfState``: every initial
    member starts from the same snapshot at index 1, term 1 holding the initial membership (see
    ``MemoryStorage.bootstrap``); a node added later starts with an empty storage and waits for the leader.

    ``election_tick`` must exceed ``heartbeat_tick`` (the thesis suggests ~10x). Randomized election timeouts are
    drawn from ``[election_tick, 2 * election_tick)`` with ``rng`` (Raft §5.2).
    """

    id: int
    election_tick: int = 10
    heartbeat_tick: int = 1
    max_size_per_msg: int = 1 << 20  # bytes of entries per append message (at least one entry is always sent)
    max_inflight_msgs: int = 256  # append messages in flight per follower in REPLICATE state
    pre_vote: bool = True  # Raft thesis §9.6
    check_quorum: bool = True  # Raft thesis §6.2
    applied: int = 0  # restart point: the last index the state machine already applied
    rng: random.Random = field(default_factory=random.Random)

    def validate(self) -> None:
        """Raises ValueError for an unusable configuration."""
        if self.id <= 0:
            raise ValueError("node id must be positive")
        if self.heartbeat_tick <= 0:
            raise ValueError("heartbeat_tick must be positive")
        if self.election_tick <= self.heartbeat_tick:
            raise ValueError("election_tick must be greater than heartbeat_tick")
        if self.max_inflight_msgs <= 0:
            raise ValueError("max_inflight_msgs must be positive")
        if self.max_size_per_msg <= 0:
            self.max_size_per_msg = NO_LIMIT
