"""Lease calls and the keep-alive loop."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

import coord
from coord.errors import LeaseNotFoundError
from tests.client.conftest import Backend


@pytest.fixture
def client(backend: Backend) -> Iterator[coord.Client]:
    backend.require("kv", "lease")
    with coord.connect(backend.endpoint, timeout=5) as c:
        yield c


def test_grant_attach_time_to_live_revoke(client: coord.Client) -> None:
    lease = client.grant(30)
    assert lease.ttl == 30 and lease.id != 0
    client.put("leased", "v", lease=lease.id)
    info = client.time_to_live(lease.id, keys=True)
    assert info.granted_ttl == 30 and 0 < info.ttl <= 30 and info.keys == (b"leased",)
    assert lease.id in client.leases()
    kv = client.get("leased").kv
    assert kv is not None and kv.lease == lease.id
    client.revoke(lease.id)
    assert client.get("leased").kv is None
    assert client.time_to_live(lease.id).ttl == -1
    with pytest.raises(LeaseNotFoundError):
        client.revoke(lease.id)
    with pytest.raises(LeaseNotFoundError):
        client.keep_alive_once(lease.id)
    with pytest.raises(LeaseNotFoundError):
        client.put("k", "v", lease=lease.id)


def test_chosen_id_and_minimum_ttl(client: coord.Client) -> None:
    lease = client.grant(1, lease_id=0x1234)
    assert lease.id == 0x1234 and lease.ttl >= 1
    with pytest.raises(coord.errors.LeaseExistsError):
        client.grant(10, lease_id=0x1234)


def test_keep_alive_loop_keeps_the_lease(client: coord.Client) -> None:
    lease = client.grant(2)
    client.put("kept", "v", lease=lease.id)
    keep_alive = client.keep_alive(lease.id)
    try:
        refreshes = [next(keep_alive) for _ in range(5)]  # 5 refreshes at ttl/3: about 2.7 s > the TTL
        assert all(r.id == lease.id and r.ttl == 2 for r in refreshes)
        assert client.get("kept").value == b"v"
    finally:
        keep_alive.close()


def test_keep_alive_loop_reports_a_revoked_lease(client: coord.Client) -> None:
    lease = client.grant(3)
    keep_alive = client.keep_alive(lease.id, interval=0.1)
    try:
        next(keep_alive)
        client.revoke(lease.id)
        deadline = time.monotonic() + 5
        with pytest.raises(LeaseNotFoundError):
            while time.monotonic() < deadline:
                next(keep_alive)
    finally:
        keep_alive.close()
