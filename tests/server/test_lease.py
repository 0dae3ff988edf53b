"""Leases on coord-server: grant limits, keep-alive, time-to-live, revoke and expiry (keys deleted in one revision,
seen by watchers), and no premature expiry across a restart."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from coord._proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from coord._proto.mvccpb import kv_pb2
from coord.testing import ServerProcess, start_coord_server


def stubs(server: ServerProcess) -> tuple[grpc.Channel, rpc_pb2_grpc.KVStub, rpc_pb2_grpc.LeaseStub]:
    channel = grpc.insecure_channel(server.endpoint)
    return channel, rpc_pb2_grpc.KVStub(channel), rpc_pb2_grpc.LeaseStub(channel)


@pytest.fixture
def conn(coord_server: ServerProcess) -> Iterator[tuple[rpc_pb2_grpc.KVStub, rpc_pb2_grpc.LeaseStub]]:
    channel, kv, lease = stubs(coord_server)
    with channel:
        yield kv, lease


def test_grant_limits_and_errors(conn: tuple[rpc_pb2_grpc.KVStub, rpc_pb2_grpc.LeaseStub]) -> None:
    kv, lease = conn
    assert lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=1)).TTL == 2  # raised to the minimum
    chosen = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=30, ID=42))
    assert (chosen.ID, chosen.TTL) == (42, 30)
    with pytest.raises(grpc.RpcError) as err:
        lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=30, ID=42))
    assert (err.value.code(), err.value.details()) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "etcdserver: lease already exists",
    )
    with pytest.raises(grpc.RpcError) as err:
        lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=9_000_000_001))
    assert (err.value.code(), err.value.details()) == (grpc.StatusCode.OUT_OF_RANGE, "etcdserver: too large lease TTL")
    with pytest.raises(grpc.RpcError) as err:
        lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=7))
    assert (err.value.code(), err.value.details()) == (
        grpc.StatusCode.NOT_FOUND,
        "etcdserver: requested lease not found",
    )
    with pytest.raises(grpc.RpcError) as err:
        kv.Put(rpc_pb2.PutRequest(key=b"k", value=b"v", lease=7))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    unknown = lease.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=7))
    assert (unknown.ID, unknown.TTL, unknown.grantedTTL) == (7, -1, 0)
    answers = list(lease.LeaseKeepAlive(iter([rpc_pb2.LeaseKeepAliveRequest(ID=7)])))
    assert [(a.ID, a.TTL) for a in answers] == [(7, 0)]
    listed = {s.ID for s in lease.LeaseLeases(rpc_pb2.LeaseLeasesRequest()).leases}
    assert 42 in listed and len(listed) == 2


def test_revoke_deletes_attached_keys_in_one_revision_seen_by_watchers(
    conn: tuple[rpc_pb2_grpc.KVStub, rpc_pb2_grpc.LeaseStub], coord_server: ServerProcess
) -> None:
    kv, lease = conn
    lid = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=60)).ID
    for key in (b"svc/a", b"svc/b", b"svc/c"):
        kv.Put(rpc_pb2.PutRequest(key=key, value=b"up", lease=lid))
    kv.Put(rpc_pb2.PutRequest(key=b"svc/b", value=b"moved"))  # detached from the lease
    ttl = lease.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=lid, keys=True))
    assert sorted(ttl.keys) == [b"svc/a", b"svc/c"] and ttl.grantedTTL == 60
    done = threading.Event()

    def requests() -> Iterator[rpc_pb2.WatchRequest]:
        yield rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"svc/", range_end=b"svc0"))
        done.wait(10)  # keep the stream open: etcd ends a watch stream when the client half-closes

    with grpc.insecure_channel(coord_server.endpoint) as channel:
        watch = rpc_pb2_grpc.WatchStub(channel).Watch(requests(), timeout=10)
        assert next(watch).created
        before = kv.Range(rpc_pb2.RangeRequest(key=b"svc/")).header.revision
        lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=lid))
        events = next(watch)
        done.set()
        watch.cancel()
    assert [(e.type, e.kv.key, e.kv.mod_revision) for e in events.events] == [
        (kv_pb2.Event.DELETE, b"svc/a", before + 1),
        (kv_pb2.Event.DELETE, b"svc/c", before + 1),
    ]
    left = kv.Range(rpc_pb2.RangeRequest(key=b"svc/", range_end=b"svc0"))
    assert [k.key for k in left.kvs] == [b"svc/b"]
    assert left.header.revision == before + 1


def test_expiry_and_keep_alive(conn: tuple[rpc_pb2_grpc.KVStub, rpc_pb2_grpc.LeaseStub]) -> None:
    kv, lease = conn
    kept = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=2)).ID
    dying = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=2)).ID
    kv.Put(rpc_pb2.PutRequest(key=b"kept", value=b"1", lease=kept))
    kv.Put(rpc_pb2.PutRequest(key=b"dying", value=b"1", lease=dying))
    deadline = time.monotonic() + 15
    while kv.Range(rpc_pb2.RangeRequest(key=b"dying")).kvs and time.monotonic() < deadline:
        assert [r.TTL for r in lease.LeaseKeepAlive(iter([rpc_pb2.LeaseKeepAliveRequest(ID=kept)]))] == [2]
        time.sleep(0.5)
    assert not kv.Range(rpc_pb2.RangeRequest(key=b"dying")).kvs, "the unrenewed lease did not expire"
    assert kv.Range(rpc_pb2.RangeRequest(key=b"kept")).kvs, "the renewed lease expired"
    assert lease.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=dying)).TTL == -1


def test_restart_gives_every_lease_its_full_ttl(tmp_path: Path) -> None:
    """Fault: the member is killed (SIGKILL) and restarted. Guarantee: a lease is not expired early because of the
    downtime; it gets its full TTL again from the restart."""
    data = tmp_path / "member"
    server = start_coord_server(data)
    try:
        channel, kv, lease = stubs(server)
        with channel:
            lid = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=3)).ID
            kv.Put(rpc_pb2.PutRequest(key=b"held", value=b"1", lease=lid))
        server.kill()
    finally:
        server.stop()
    time.sleep(3.5)  # longer than the TTL while the member is down
    restarted = start_coord_server(data)
    try:
        channel, kv, lease = stubs(restarted)
        with channel:
            assert kv.Range(rpc_pb2.RangeRequest(key=b"held")).kvs
            assert lease.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=lid)).grantedTTL == 3
            deadline = time.monotonic() + 15
            while kv.Range(rpc_pb2.RangeRequest(key=b"held")).kvs and time.monotonic() < deadline:
                time.sleep(0.25)
            assert not kv.Range(rpc_pb2.RangeRequest(key=b"held")).kvs, "the lease never expired after restart"
    finally:
        restarted.stop()
