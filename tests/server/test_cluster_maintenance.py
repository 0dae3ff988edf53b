"""Maintenance and membership with the real etcdctl: endpoint status/health across a cluster, move-leader, member
list, and the NOSPACE alarm of --quota-backend-bytes."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import grpc
import pytest

from coord._proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from coord.testing import Cluster, start_coord_server
from tests.faults._cluster_ops import leader, status

ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"


def etcdctl(endpoints: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ETCDCTL, "--endpoints", ",".join(endpoints), "--command-timeout", "10s", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
    )


@pytest.mark.parametrize("kind", ["coord", "etcd"])
def test_etcdctl_cluster_status_health_and_move_leader(kind: str, tmp_path: Path) -> None:
    with Cluster(kind, tmp_path, 3) as cluster:
        lead = leader(cluster, timeout=20)
        one = [cluster.members[0].endpoint]
        table = etcdctl(one, "endpoint", "status", "--cluster", "-w", "table")
        assert table.returncode == 0, table.stderr
        rows = [line for line in table.stdout.splitlines() if "127.0.0.1" in line]
        assert len(rows) == 3
        assert sum(row.split("|")[5].strip() == "true" for row in rows) == 1  # exactly one IS LEADER
        health = etcdctl(one, "endpoint", "health", "--cluster")
        assert health.returncode == 0, health.stderr
        assert (health.stdout + health.stderr).count("is healthy") == 3
        members = etcdctl(one, "member", "list")
        assert members.returncode == 0 and len(members.stdout.splitlines()) == 3
        target = next(m for m in cluster.members if m is not lead)
        target_id = status(target.endpoint).header.member_id
        moved = etcdctl(cluster.endpoints, "move-leader", f"{target_id:x}")
        assert moved.returncode == 0, moved.stderr
        assert leader(cluster, timeout=10) is target
        # Asked of a follower, MoveLeader is refused as etcd refuses it.
        with grpc.insecure_channel(lead.endpoint) as ch, pytest.raises(grpc.RpcError) as err:
            rpc_pb2_grpc.MaintenanceStub(ch).MoveLeader(rpc_pb2.MoveLeaderRequest(targetID=target_id), timeout=10)
        assert (err.value.code(), err.value.details()) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "etcdserver: not leader",
        )


def test_nospace_alarm_refuses_growth_until_disarmed(tmp_path: Path) -> None:
    """--quota-backend-bytes: a write that would pass the quota raises NOSPACE; while raised, puts are refused
    with etcd's error but reads and deletes work; after deleting, compacting and disarming, puts work again."""
    server = start_coord_server(tmp_path / "c", extra_args=["--quota-backend-bytes", str(2 * 1024 * 1024)])
    try:
        with grpc.insecure_channel(server.endpoint) as ch:
            kv = rpc_pb2_grpc.KVStub(ch)
            maint = rpc_pb2_grpc.MaintenanceStub(ch)
            value = b"x" * 100_000
            refused = None
            for i in range(100):
                try:
                    kv.Put(rpc_pb2.PutRequest(key=b"big/%03d" % i, value=value), timeout=10)
                except grpc.RpcError as exc:
                    refused = exc
                    break
            assert refused is not None, "the quota was never enforced"
            assert (refused.code(), refused.details()) == (
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "etcdserver: mvcc: database space exceeded",
            )
            deadline = time.monotonic() + 10
            while not maint.Alarm(rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.GET), timeout=5).alarms:
                assert time.monotonic() < deadline, "the NOSPACE alarm was not raised"
                time.sleep(0.05)
            listed = etcdctl([server.endpoint], "alarm", "list")
            assert "alarm:NOSPACE" in listed.stdout, listed
            st = maint.Status(rpc_pb2.StatusRequest(), timeout=5)
            assert any("alarm:NOSPACE" in e for e in st.errors)
            # Even a tiny put is refused while the alarm is raised; reads and deletes are not.
            with pytest.raises(grpc.RpcError) as err:
                kv.Put(rpc_pb2.PutRequest(key=b"small", value=b"1"), timeout=10)
            assert err.value.details() == "etcdserver: mvcc: database space exceeded"
            assert kv.Range(rpc_pb2.RangeRequest(key=b"big/000"), timeout=5).count == 1
            deleted = kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"big/", range_end=b"big0"), timeout=10)
            assert deleted.deleted > 0
            kv.Compact(rpc_pb2.CompactionRequest(revision=deleted.header.revision, physical=True), timeout=10)
            disarm = etcdctl([server.endpoint], "alarm", "disarm")
            assert disarm.returncode == 0, disarm.stderr
            assert not maint.Alarm(rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.GET), timeout=5).alarms
            kv.Put(rpc_pb2.PutRequest(key=b"small", value=b"1"), timeout=10)
    finally:
        server.stop()
