"""Cluster and Maintenance calls."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import coord
from coord.testing import Cluster, free_port
from tests.client.conftest import Backend
from tests.conftest import require_etcd


def test_member_list(backend: Backend) -> None:
    backend.require("member_list")
    with coord.connect(backend.endpoint, timeout=5) as client:
        members = client.member_list().members
        assert len(members) == 1
        assert members[0].client_urls == (f"http://{backend.endpoint}",)
        assert members[0].id == client.status().member_id


def test_hash_kv_and_alarms(backend: Backend) -> None:
    backend.require("kv", "hash_kv")
    with coord.connect(backend.endpoint, timeout=10) as client:
        client.put("h", "1")
        rev = client.put("h", "2").revision
        at_rev = client.hash_kv(rev)
        assert at_rev.hash == client.hash_kv(rev).hash
        client.put("h", "3")
        assert client.hash_kv(rev).hash == at_rev.hash  # the hash up to a revision does not change later
        assert client.hash_kv().hash != at_rev.hash
        assert client.alarms() == []


def test_snapshot_defragment_alarms(backend: Backend, tmp_path: Path) -> None:
    backend.require("kv", "maintenance")
    with coord.connect(backend.endpoint, timeout=10) as client:
        for i in range(20):
            client.put(f"s/{i}", "x" * 100)
        target = tmp_path / "backup.db"
        written = client.snapshot(target)
        assert written == target.stat().st_size > 0
        assert not (tmp_path / "backup.db.part").exists()
        client.defragment()
        assert client.alarms() == []
        assert client.get("s/19").value == b"x" * 100


@pytest.mark.parametrize("kind", ["etcd", "coord"])
def test_move_leader(kind: str, tmp_path: Path) -> None:
    if kind == "etcd":
        require_etcd()
    with Cluster(kind, tmp_path / "cluster", 3, heartbeat_ms=50, election_ms=500) as cluster:
        cluster.wait_healthy()
        with coord.connect(cluster.endpoints, timeout=10) as client:
            status = client.status()
            target = next(m.id for m in client.member_list().members if m.id != status.leader)
            client.move_leader(target)
            assert all(client.status(endpoint=e).leader == target for e in cluster.endpoints)


def test_status_of_an_unreachable_endpoint_fails_within_the_deadline(backend: Backend) -> None:
    backend.require("status")
    with coord.connect(backend.endpoint, timeout=1) as client:
        started = time.monotonic()
        with pytest.raises(coord.errors.EtcdError):
            client.status(endpoint=f"127.0.0.1:{free_port()}")
        assert time.monotonic() - started < 5
        assert client.status().member_id != 0  # the client itself is unaffected
