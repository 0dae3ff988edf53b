"""The leader's view of each follower (Raft figure 2: nextIndex[], matchIndex[]) plus flow control, and the
membership and vote tally.

A follower's progress is in one of three states:
- PROBE: we do not know where its log matches ours; send one append per heartbeat and back off on rejection.
- REPLICATE: the logs match up to ``match``; stream appends optimistically (pipelining), bounded by ``Inflights``.
- SNAPSHOT: it needs entries we compacted; a snapshot is on its way, send nothing else until it is reported.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable

from . import quorum


class ProgressState(enum.IntEnum):
    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2


class Inflights:
    """Last indexes of the append messages sent but not yet acknowledged, at most ``capacity`` of them."""

    __slots__ = ("_queue", "capacity")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._queue: deque[int] = deque()

    def add(self, last_index: int) -> None:
        self._queue.append(last_index)

    def free_le(self, index: int) -> None:
        """Acknowledge every message whose last index is ``<= index``."""
        q = self._queue
        while q and q[0] <= index:
            q.popleft()

    def free_first_one(self) -> None:
        if self._queue:
            self._queue.popleft()

    def full(self) -> bool:
        return len(self._queue) >= self.capacity

    def count(self) -> int:
        return len(self._queue)

    def reset(self) -> None:
        self._queue.clear()


class Progress:
    """Replication progress of one peer, as tracked by the leader. Invariant: ``match < next``."""

    __slots__ = ("inflights", "is_learner", "match", "next", "pending_snapshot", "probe_sent", "recent_active", "state")

    def __init__(self, next_index: int, max_inflight: int, is_learner: bool) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.pending_snapshot = 0
        self.recent_active = True
        self.is_learner = is_learner
        self.inflights = Inflights(max_inflight)

    def reset_state(self, state: ProgressState) -> None:
        self.probe_sent = False
        self.pending_snapshot = 0
        self.state = state
        self.inflights.reset()

    def become_probe(self) -> None:
        if self.state == ProgressState.SNAPSHOT:
            pending = self.pending_snapshot
            self.reset_state(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self.reset_state(ProgressState.PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self.reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        self.reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def sent_entries(self, count: int, last_index: int) -> None:
        """Record an append message just sent carrying ``count`` entries up to ``last_index``."""
        if self.state == ProgressState.REPLICATE:
            if count:
                self.next = last_index + 1
                self.inflights.add(last_index)
        elif self.state == ProgressState.PROBE:
            self.probe_sent = True

    def maybe_update(self, index: int) -> bool:
        """The peer acknowledged entries up to ``index``. Returns whether ``match`` advanced."""
        updated = False
        if self.match < index:
            self.match = index
            updated = True
            self.probe_sent = False
        self.next = max(self.next, index + 1)
        return updated

    def maybe_decrease_to(self, rejected: int, match_hint: int) -> bool:
        """The peer rejected an append at ``rejected``; move ``next`` back. Returns False for a stale rejection."""
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.probe_sent = False
        return True

    def is_paused(self) -> bool:
        if self.state == ProgressState.PROBE:
            return self.probe_sent
        if self.state == ProgressState.REPLICATE:
            return self.inflights.full()
        return True

    def __repr__(self) -> str:
        kind = "learner " if self.is_learner else ""
        return f"{kind}{self.state.name} match={self.match} next={self.next} inflight={self.inflights.count()}"


class ProgressTracker:
    """Membership (voters, learners), one ``Progress`` per member, and the votes of the current election."""

    def __init__(self, max_inflight: int) -> None:
        self.max_inflight = max_inflight
        self.voters: set[int] = set()
        self.learners: set[int] = set()
        self.progress: dict[int, Progress] = {}
        self.votes: dict[int, bool] = {}

    def ids(self) -> list[int]:
        """All members in a deterministic order."""
        return sorted(self.progress)

    def set_members(self, voters: Iterable[int], learners: Iterable[int], next_index: int) -> None:
        self.voters = set(voters)
        self.learners = set(learners) - self.voters
        members = self.voters | self.learners
        for gone in set(self.progress) - members:
            del self.progress[gone]
        for node in sorted(members):
            pr = self.progress.get(node)
            if pr is None:
                self.progress[node] = Progress(next_index, self.max_inflight, node in self.learners)
            else:
                pr.is_learner = node in self.learners

    def committed(self) -> int:
        """The largest index replicated on a quorum of voters (Raft §5.3: leader rule for commitIndex)."""
        return quorum.committed_index([self.progress[v].match for v in self.voters])

    def quorum_active(self) -> bool:
        """Whether a quorum of voters was recently active (CheckQuorum, Raft thesis §6.2)."""
        active = sum(1 for v in self.voters if self.progress[v].recent_active)
        return active >= quorum.majority(len(self.voters))

    def reset_votes(self) -> None:
        self.votes = {}

    def record_vote(self, node: int, granted: bool) -> None:
        self.votes.setdefault(node, granted)

    def tally(self) -> quorum.VoteResult:
        return quorum.vote_result(self.voters, self.votes)
