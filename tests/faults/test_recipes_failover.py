"""Recipes across a server failover: a lock held through a 3-member coord cluster survives the SIGKILL of the leader
(its lease lives in the replicated state and its keep-alives fail over to another member), keeps excluding a
contender, and still fences writes; released, it passes to the contender with a larger token.

Fault: SIGKILL of the Raft leader while a client holds a lock. Guarantee: the lock is never silently lost and never
held twice.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import coord
from coord.testing import Cluster
from tests.faults._cluster_ops import leader

ELECTION_S = 0.5


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with Cluster("coord", tmp_path, 3, heartbeat_ms=50, election_ms=int(ELECTION_S * 1000)) as c:
        leader(c, timeout=20)
        yield c


def test_a_lock_survives_a_leader_kill_and_keeps_excluding(cluster: Cluster) -> None:
    endpoints = [m.endpoint for m in cluster.members]
    lost = threading.Event()
    with coord.connect(endpoints, timeout=5) as holder, coord.connect(endpoints, timeout=5) as contender:
        with holder.lock("jobs", ttl=10, timeout=10) as lock:
            lock.on_lost(lambda _error: lost.set())
            first_token = lock.token
            old = leader(cluster, timeout=10)
            old.kill()
            leader(cluster, timeout=20 * ELECTION_S, exclude=old)
            # The holder's lease is alive on the new leader: the contender must wait, and time out.
            with pytest.raises(coord.LockTimeout), contender.lock("jobs", timeout=2):
                pytest.fail("the contender got a lock that is still held")
            assert lock.is_held and not lost.is_set()
            guard = lock.guard()
            fenced = holder.txn(compare=[guard], success=[coord.Put("fenced", "by-holder")])
            assert fenced.succeeded
        assert not lost.is_set()  # released normally, never lost
        with contender.lock("jobs", timeout=10) as second:
            assert second.token > first_token
            # The old holder's guard no longer passes: a late write from it is fenced off.
            late = holder.txn(compare=[guard], success=[coord.Put("fenced", "stale")])
            assert not late.succeeded
        assert contender.get("fenced").value == b"by-holder"


def test_a_leadership_survives_a_leader_kill_and_the_next_leader_has_a_larger_epoch(cluster: Cluster) -> None:
    endpoints = [m.endpoint for m in cluster.members]
    with coord.connect(endpoints, timeout=5) as first, coord.connect(endpoints, timeout=5) as second:
        leadership = first.election("scheduler", ttl=10).campaign("first", timeout=10)
        epoch = leadership.epoch
        old = leader(cluster, timeout=10)
        old.kill()
        leader(cluster, timeout=20 * ELECTION_S, exclude=old)
        with pytest.raises(coord.ElectionTimeout):
            second.election("scheduler", ttl=10).campaign("second", timeout=2)
        assert leadership.is_leader
        leadership.proclaim("first, after the failover")
        seen = second.election("scheduler").leader()
        assert seen is not None and (seen.value, seen.epoch) == (b"first, after the failover", epoch)
        leadership.resign()
        taken = second.election("scheduler", ttl=10).campaign("second", timeout=10)
        assert taken.epoch > epoch
        taken.resign()
