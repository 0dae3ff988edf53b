"""Multi-member coord-server clusters under faults: leader crash, partition, lagging follower, membership changes
and a whole-cluster crash. Every test names the fault it injects and the guarantee it checks.

Members run as real processes on 127.0.0.1 (coord.testing.Cluster) with a 50 ms heartbeat and a 500 ms election
timeout; every process is stopped by PID when the test ends. Waits are bounded and generous: these tests assert
behaviour, never speed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from coord._proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from coord.testing import Cluster
from tests.faults._cluster_ops import WriteLoad, channel, get, hash_kv, leader, put, status, wait_converged

ELECTION_S = 0.5


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with Cluster("coord", tmp_path, 3, heartbeat_ms=50, election_ms=int(ELECTION_S * 1000)) as c:
        leader(c, timeout=20)
        yield c


def _count(endpoint: str, prefix: bytes) -> set[bytes]:
    return {kv.key for kv in get(endpoint, prefix, prefix=True).kvs}


def test_leader_sigkill_under_write_load_loses_no_acknowledged_write(cluster: Cluster) -> None:
    """Fault: SIGKILL of the leader while 4 writers put keys through every member.
    Guarantees: a new leader is elected; every acknowledged write survives; all members converge (HashKV)."""
    old = leader(cluster, timeout=10)
    load = WriteLoad([m.endpoint for m in cluster.members], threads=4, max_writes=4000).start()
    try:
        deadline = time.monotonic() + 30
        while load.count() < 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        killed_at = time.monotonic()
        old.kill()
        new = leader(cluster, timeout=20 * ELECTION_S, exclude=old)
        elected_after = time.monotonic() - killed_at
        assert new is not old
        before = load.count()
        deadline = time.monotonic() + 30
        while load.count() < before + 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert load.count() >= before + 200, "writes did not resume after the new leader was elected"
    finally:
        load.stop()
    print(f"new leader after {elected_after:.2f}s ({elected_after / ELECTION_S:.1f} election timeouts)")
    survivors = [m for m in cluster.members if m.alive()]
    wait_converged(cluster, timeout=30)
    for member in survivors:
        assert load.acked <= _count(member.endpoint, b"load/"), f"{member.name} lost acknowledged writes"
    # The killed leader comes back, catches up, and agrees.
    old.restart()
    wait_converged(cluster, timeout=30)
    assert load.acked <= _count(old.endpoint, b"load/")


def test_partitioned_leader_steps_down_and_refuses_then_converges(tmp_path: Path) -> None:
    """Fault: every message TO the leader is blackholed (its peer proxy), so it is cut off in a minority of one.
    Guarantees: it steps down and refuses writes and linearizable reads (etcd's retryable errors, never a wrong
    answer); the majority elects a new leader and keeps writing; after healing all members converge."""
    with Cluster("coord", tmp_path, 3, heartbeat_ms=50, election_ms=500, peer_proxies=True) as c:
        old = leader(c, timeout=20)
        put(old.endpoint, b"before", b"1")
        c.proxies[c.members.index(old)].blackhole()
        others = [m for m in c.members if m is not old]
        new = leader(c, timeout=20, exclude=old)
        assert new is not old
        put(new.endpoint, b"during", b"2")
        # The old leader no longer leads, and neither writes nor linearizable reads succeed there.
        deadline = time.monotonic() + 10
        while status(old.endpoint).leader == status(old.endpoint).header.member_id:
            assert time.monotonic() < deadline, "the cut-off leader did not step down"
            time.sleep(0.05)
        for call in (
            lambda: put(old.endpoint, b"refused", b"x", timeout=15),
            lambda: get(old.endpoint, b"during"),
        ):
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert err.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
            assert err.value.details() in (
                "etcdserver: no leader",
                "etcdserver: leader changed",
                "etcdserver: request timed out",
                "Deadline Exceeded",
            ), err.value.details()
        # A serializable read is served locally, and shows the cut-off member's (stale but committed) state.
        assert [kv.key for kv in get(old.endpoint, b"before", serializable=True).kvs] == [b"before"]
        for m in others:
            assert [kv.value for kv in get(m.endpoint, b"during").kvs] == [b"2"]
        c.proxies[c.members.index(old)].heal()
        wait_converged(c, timeout=30)
        assert [kv.value for kv in get(old.endpoint, b"during").kvs] == [b"2"]


def test_follower_far_behind_rejoins_through_a_snapshot(tmp_path: Path) -> None:
    """Fault: a follower is stopped while the others apply more entries than --snapshot-count (so the leader
    compacts its log past the follower). Guarantee: on restart it catches up through a snapshot and converges."""
    with Cluster("coord", tmp_path, 3, extra_args=["--snapshot-count", "100"]) as c:
        lead = leader(c, timeout=20)
        follower = next(m for m in c.members if m is not lead)
        follower.stop()
        with channel(lead.endpoint) as ch:
            kv = rpc_pb2_grpc.KVStub(ch)
            for i in range(600):
                kv.Put(rpc_pb2.PutRequest(key=b"k/%04d" % i, value=b"%d" % i), timeout=10)
        follower.restart()
        wait_converged(c, timeout=60)
        assert len(_count(follower.endpoint, b"k/")) == 600
        assert "installed a snapshot" in follower.log()


def test_learner_added_promoted_then_old_leader_removed_while_writing(cluster: Cluster) -> None:
    """Membership: add a fourth member as a learner, promote it, then remove the old leader, with writes running.
    Guarantees: writes continue throughout; every acknowledged write is on every remaining member."""
    old = leader(cluster, timeout=10)
    load = WriteLoad([m.endpoint for m in cluster.members if m is not old], threads=2, max_writes=20_000).start()
    try:
        peer_url = cluster.reserve("m3")
        with channel(old.endpoint) as ch:
            stub = rpc_pb2_grpc.ClusterStub(ch)
            added = stub.MemberAdd(rpc_pb2.MemberAddRequest(peerURLs=[peer_url], isLearner=True), timeout=15)
            assert added.member.isLearner
            initial = ",".join(f"{m.extra['name']}={m.extra['peer_url']}" for m in cluster.members) + f",m3={peer_url}"
            new = cluster.add_member("m3", initial)
            deadline = time.monotonic() + 60
            while True:
                try:
                    stub.MemberPromote(rpc_pb2.MemberPromoteRequest(ID=added.member.ID), timeout=15)
                    break
                except grpc.RpcError as exc:
                    assert "in sync" in (exc.details() or ""), exc.details()
                    assert time.monotonic() < deadline, "the learner never caught up"
                    time.sleep(0.2)
            members = stub.MemberList(rpc_pb2.MemberListRequest(), timeout=5).members
            assert not any(m.isLearner for m in members) and len(members) == 4
            old_id = status(old.endpoint).header.member_id
            stub.MemberRemove(rpc_pb2.MemberRemoveRequest(ID=old_id), timeout=15)
        # The removed member shuts itself down; the rest elect a leader and keep writing.
        deadline = time.monotonic() + 20
        while old.alive():
            assert time.monotonic() < deadline, "the removed member did not stop"
            time.sleep(0.1)
        leader(cluster, timeout=20)
        before = load.count()
        deadline = time.monotonic() + 30
        while load.count() < before + 100 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert load.count() >= before + 100, "writes did not continue after the membership changes"
    finally:
        load.stop()
    wait_converged(cluster, timeout=30)
    assert load.acked <= _count(new.endpoint, b"load/")


def test_whole_cluster_sigkill_and_restart_keeps_acknowledged_writes(cluster: Cluster) -> None:
    """Fault: SIGKILL of every member at once, mid-load. Guarantee: after restarting them all, every acknowledged
    write is there on every member, and the members agree."""
    load = WriteLoad([m.endpoint for m in cluster.members], threads=4, max_writes=4000).start()
    deadline = time.monotonic() + 30
    while load.count() < 300 and time.monotonic() < deadline:
        time.sleep(0.05)
    for m in cluster.members:
        m.kill()
    load.stop()
    acked = set(load.acked)
    assert acked, "no write was acknowledged before the crash"
    for m in cluster.members:
        m.restart()
    leader(cluster, timeout=20)
    wait_converged(cluster, timeout=30)
    for m in cluster.members:
        assert acked <= _count(m.endpoint, b"load/"), f"{m.name} lost acknowledged writes"
    assert len({hash_kv(m.endpoint) for m in cluster.members}) == 1
