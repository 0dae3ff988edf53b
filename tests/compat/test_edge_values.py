"""Values at the edges of their types, against real etcd: lease ids and alarm types.

etcd's lease id is an int64 chosen by the client or the server, and etcd accepts any non-zero value, negative ones
included. An alarm type is an open int32 enum: etcd stores a type it does not know, negative ones included. Each step
is sent to a fresh etcd and to the server under test; the answers must be identical after the header normalisation
of ``tests/compat/differential.py``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message

from coord._proto.authpb import auth_pb2
from coord._proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from coord.testing import ServerProcess
from tests.compat.conftest import COMPAT_TARGET
from tests.compat.differential import normalise

EDGE_IDS = [-5, -(2**63), 2**63 - 1]


def edge_call(channel: grpc.Channel, method: str, request: Message) -> tuple[str, str, bytes]:
    """(status code, details, normalised response bytes) for Lease, KV or Maintenance.<method>."""
    stub: Any = rpc_pb2_grpc.LeaseStub(channel)
    if method in ("Put", "Range"):
        stub = rpc_pb2_grpc.KVStub(channel)
    elif method in ("Alarm", "Status"):
        stub = rpc_pb2_grpc.MaintenanceStub(channel)
    try:
        response = getattr(stub, method)(request, timeout=10)
    except grpc.RpcError as err:
        return err.code().name, err.details() or "", b""
    out = normalise(method, request, response)
    if isinstance(out, rpc_pb2.LeaseTimeToLiveResponse):
        out.TTL = min(out.TTL, 0) or 1  # the remaining TTL depends on timing; only its sign matters
    if isinstance(out, rpc_pb2.AlarmResponse):
        out.ClearField("header")  # etcd 3.4 sends none; coord fills it in, as etcd 3.5 does
        ordered = sorted(out.alarms, key=lambda a: (a.memberID, a.alarm))  # etcd lists them in Go map order
        out = rpc_pb2.AlarmResponse(alarms=ordered)
    if isinstance(out, rpc_pb2.StatusResponse):  # only the alarm errors are compared (their order is Go map order)
        out = rpc_pb2.StatusResponse(errors=sorted(out.errors))
    return "OK", "", out.SerializeToString(deterministic=True)


@pytest.mark.parametrize("lease_id", EDGE_IDS)
def test_edge_lease_ids_match_etcd(ref_server: ServerProcess, target_server: ServerProcess, lease_id: int) -> None:
    steps: list[tuple[str, Message]] = [
        ("LeaseGrant", rpc_pb2.LeaseGrantRequest(ID=lease_id, TTL=100)),
        ("LeaseGrant", rpc_pb2.LeaseGrantRequest(ID=lease_id, TTL=100)),  # already exists
        ("Put", rpc_pb2.PutRequest(key=b"leased", value=b"v", lease=lease_id)),
        ("Range", rpc_pb2.RangeRequest(key=b"leased")),
        ("LeaseTimeToLive", rpc_pb2.LeaseTimeToLiveRequest(ID=lease_id, keys=True)),
        ("LeaseLeases", rpc_pb2.LeaseLeasesRequest()),
        ("LeaseRevoke", rpc_pb2.LeaseRevokeRequest(ID=lease_id)),
        ("Range", rpc_pb2.RangeRequest(key=b"leased")),
        ("LeaseRevoke", rpc_pb2.LeaseRevokeRequest(ID=lease_id)),  # not found
        ("LeaseLeases", rpc_pb2.LeaseLeasesRequest()),
    ]
    with grpc.insecure_channel(ref_server.endpoint) as ref, grpc.insecure_channel(target_server.endpoint) as target:
        for method, request in steps:
            want = edge_call(ref, method, request)
            got = edge_call(target, method, request)
            assert got == want, f"{method} {request}\netcd: {want}\n{COMPAT_TARGET}: {got}"
    assert target_server.alive(), target_server.log()[-4000:]


def test_unknown_alarm_types_match_etcd(ref_server: ServerProcess, target_server: ServerProcess) -> None:
    alarm = rpc_pb2.AlarmRequest
    steps: list[tuple[str, Message]] = [
        ("Alarm", alarm(action=alarm.ACTIVATE, memberID=5, alarm=7)),  # type: ignore[arg-type]
        ("Alarm", alarm(action=alarm.ACTIVATE, memberID=5, alarm=-1)),  # type: ignore[arg-type]
        ("Alarm", alarm(action=alarm.GET)),
        ("Alarm", alarm(action=alarm.GET, alarm=7)),  # type: ignore[arg-type]
        ("Status", rpc_pb2.StatusRequest()),
        ("Put", rpc_pb2.PutRequest(key=b"k", value=b"v")),  # an unknown alarm refuses nothing
        ("Alarm", alarm(action=alarm.DEACTIVATE, memberID=5, alarm=-1)),  # type: ignore[arg-type]
        ("Alarm", alarm(action=alarm.DEACTIVATE, memberID=5, alarm=7)),  # type: ignore[arg-type]
        ("Alarm", alarm(action=alarm.GET)),
    ]
    with grpc.insecure_channel(ref_server.endpoint) as ref, grpc.insecure_channel(target_server.endpoint) as target:
        for method, request in steps:
            want = edge_call(ref, method, request)
            got = edge_call(target, method, request)
            assert got == want, f"{method} {request}\netcd: {want}\n{COMPAT_TARGET}: {got}"
    assert target_server.alive(), target_server.log()[-4000:]


# -- found by the gRPC fuzzer (tests/server/test_grpc_fuzz.py) ------------------------------------------------------

# Over etcd's default --max-request-bytes (1.5 MiB), under its gRPC receive limit (2 MiB).
OVERSIZED = 1_600_000


def raw_call(channel: grpc.Channel, path: str, body: bytes) -> tuple[str, str, bytes]:
    """(status code, details, response bytes) of a unary call whose request is ``body`` as is."""
    try:
        return "OK", "", channel.unary_unary(path)(body, timeout=10)
    except grpc.RpcError as err:
        return err.code().name, err.details() or "", b""


def unknown_field(blob: bytes) -> bytes:
    """``blob`` as length-delimited field 1000, which no etcd message defines."""
    tag, size, out = 1000 << 3 | 2, len(blob), bytearray()
    for value in (tag, size):
        while value > 0x7F:
            out.append(value & 0x7F | 0x80)
            value >>= 7
        out.append(value)
    return bytes(out) + blob


BAD_PEER_URLS = [[], ["http://127.0.0.1:1/path"], ["http://h:1/"], ["ftp://h:1"], ["http://h:x"], ["foo"]]


def test_bad_member_urls_match_etcd(ref_server: ServerProcess, target_server: ServerProcess) -> None:
    """MemberAdd with peer URLs etcd refuses: the same error, and no member added."""
    with grpc.insecure_channel(ref_server.endpoint) as ref, grpc.insecure_channel(target_server.endpoint) as target:
        for urls in BAD_PEER_URLS:
            request = rpc_pb2.MemberAddRequest(peerURLs=urls)
            want = edge_call_cluster(ref, request)
            got = edge_call_cluster(target, request)
            assert got == want, f"MemberAdd {urls}\netcd: {want}\n{COMPAT_TARGET}: {got}"
        for channel in (ref, target):
            members = rpc_pb2_grpc.ClusterStub(channel).MemberList(rpc_pb2.MemberListRequest(), timeout=10).members
            assert len(members) == 1
    assert target_server.alive(), target_server.log()[-4000:]


def edge_call_cluster(channel: grpc.Channel, request: rpc_pb2.MemberAddRequest) -> tuple[str, str]:
    try:
        rpc_pb2_grpc.ClusterStub(channel).MemberAdd(request, timeout=10)
    except grpc.RpcError as err:
        return err.code().name, err.details() or ""
    return "OK", ""


UNDECODABLE = [
    ("/etcdserverpb.KV/Range", "unary"),
    ("/etcdserverpb.KV/Put", "unary"),
    ("/etcdserverpb.Lease/LeaseGrant", "unary"),
    ("/etcdserverpb.Maintenance/Snapshot", "server"),
    ("/v3electionpb.Election/Observe", "server"),
    ("/etcdserverpb.Watch/Watch", "bidi"),
    ("/etcdserverpb.Lease/LeaseKeepAlive", "bidi"),
]


def undecodable_outcome(channel: grpc.Channel, path: str, kind: str) -> tuple[str, str]:
    """(status code, details up to the decoder's own words) for a request that does not decode."""
    body = b"\x0a\x05ab"  # field 1, 5 bytes long, cut after 2
    try:
        if kind == "unary":
            channel.unary_unary(path)(body, timeout=10)
        else:
            call = (
                channel.unary_stream(path)(body, timeout=10)
                if kind == "server"
                else channel.stream_stream(path)(iter([body]), timeout=10)
            )
            for _ in call:
                pass
    except grpc.RpcError as err:
        details = err.details() or ""
        for prefix in ("grpc: error unmarshalling request: ", "grpc: failed to unmarshal the received message "):
            if details.startswith(prefix):
                details = prefix + "..."  # the reason is the decoder's own text (Go's or Python's)
        return err.code().name, details
    return "OK", ""


def test_undecodable_requests_match_etcd(ref_server: ServerProcess, target_server: ServerProcess) -> None:
    """A request whose bytes do not decode: INTERNAL with grpc-go's message, unary and streaming alike."""
    with grpc.insecure_channel(ref_server.endpoint) as ref, grpc.insecure_channel(target_server.endpoint) as target:
        for path, kind in UNDECODABLE:
            want = undecodable_outcome(ref, path, kind)
            got = undecodable_outcome(target, path, kind)
            assert got == want, f"{path}\netcd: {want}\n{COMPAT_TARGET}: {got}"
    assert target_server.alive(), target_server.log()[-4000:]


def test_request_size_rules_match_etcd(ref_server: ServerProcess, target_server: ServerProcess) -> None:
    """Unknown fields are dropped before the size check; a request too large is refused before coord's key length
    limit; a txn served from local state (range ops only) has no size limit, a nested txn goes through the log."""
    big_range = rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"r" * OVERSIZED))
    steps: list[tuple[str, bytes]] = [
        ("Put", rpc_pb2.PutRequest(key=b"k", value=b"v").SerializeToString() + unknown_field(b"u" * OVERSIZED)),
        ("Range", rpc_pb2.RangeRequest(key=b"k").SerializeToString()),
        ("Put", rpc_pb2.PutRequest(key=b"k" * OVERSIZED).SerializeToString()),
        ("Txn", rpc_pb2.TxnRequest(success=[big_range]).SerializeToString()),
        (
            "Txn",
            rpc_pb2.TxnRequest(
                success=[rpc_pb2.RequestOp(request_txn=rpc_pb2.TxnRequest(success=[big_range]))]
            ).SerializeToString(),
        ),
    ]
    response_types = {"Put": rpc_pb2.PutResponse, "Range": rpc_pb2.RangeResponse, "Txn": rpc_pb2.TxnResponse}
    request_types = {"Put": rpc_pb2.PutRequest, "Range": rpc_pb2.RangeRequest, "Txn": rpc_pb2.TxnRequest}
    with grpc.insecure_channel(ref_server.endpoint) as ref, grpc.insecure_channel(target_server.endpoint) as target:
        for method, body in steps:
            path = f"/etcdserverpb.KV/{method}"
            outcomes = []
            for channel in (ref, target):
                code, details, raw = raw_call(channel, path, body)
                if raw:
                    request = request_types[method].FromString(body)
                    raw = normalise(method, request, response_types[method].FromString(raw)).SerializeToString(
                        deterministic=True
                    )
                outcomes.append((code, details, raw))
            want, got = outcomes
            assert got == want, f"{method} ({len(body)} bytes)\netcd: {want}\n{COMPAT_TARGET}: {got}"
    assert target_server.alive(), target_server.log()[-4000:]


def test_negative_hash_revision_matches_etcd(ref_server: ServerProcess, target_server: ServerProcess) -> None:
    """HashKV at a negative revision hashes no change at all (as at revision 1 of a fresh store), not the current
    state as revision 0 does. Hashes are compared within each server only: the two implementations hash differently."""
    with grpc.insecure_channel(ref_server.endpoint) as ref, grpc.insecure_channel(target_server.endpoint) as target:
        shapes = []
        for channel in (ref, target):
            rpc_pb2_grpc.KVStub(channel).Put(rpc_pb2.PutRequest(key=b"k", value=b"v"), timeout=10)
            maintenance = rpc_pb2_grpc.MaintenanceStub(channel)
            hashes = {rev: maintenance.HashKV(rpc_pb2.HashKVRequest(revision=rev), timeout=10) for rev in (-1, 0, 1)}
            shapes.append(
                (
                    hashes[-1].hash == hashes[1].hash,
                    hashes[-1].hash != hashes[0].hash,
                    hashes[-1].compact_revision,
                    hashes[-1].header.revision,
                )
            )
    assert shapes[1] == shapes[0] == (True, True, -1, 2), f"etcd: {shapes[0]}\n{COMPAT_TARGET}: {shapes[1]}"


def test_oversized_auth_requests_match_etcd(ref_server: ServerProcess, target_server: ServerProcess) -> None:
    """Auth requests are proposals too: over --max-request-bytes they are refused with "request is too large" before
    any other check (etcd measures the request as sent, password included)."""
    huge = "n" * OVERSIZED
    steps: list[tuple[str, Message]] = [
        ("RoleAdd", rpc_pb2.AuthRoleAddRequest(name=huge)),
        ("UserAdd", rpc_pb2.AuthUserAddRequest(name="u", password=huge)),
        ("UserAdd", rpc_pb2.AuthUserAddRequest(name="u", password="p")),
        ("UserChangePassword", rpc_pb2.AuthUserChangePasswordRequest(name="u", password=huge)),
        ("RoleAdd", rpc_pb2.AuthRoleAddRequest(name="r")),
        (
            "RoleGrantPermission",
            rpc_pb2.AuthRoleGrantPermissionRequest(name="r", perm=auth_pb2.Permission(key=huge.encode())),
        ),
        ("UserGrantRole", rpc_pb2.AuthUserGrantRoleRequest(user="u", role=huge)),
    ]
    with grpc.insecure_channel(ref_server.endpoint) as ref, grpc.insecure_channel(target_server.endpoint) as target:
        for method, request in steps:
            outcomes = []
            for channel in (ref, target):
                try:
                    getattr(rpc_pb2_grpc.AuthStub(channel), method)(request, timeout=20)
                    outcomes.append(("OK", ""))
                except grpc.RpcError as err:
                    outcomes.append((err.code().name, err.details() or ""))
            want, got = outcomes
            assert got == want, f"{method}\netcd: {want}\n{COMPAT_TARGET}: {got}"
    assert target_server.alive(), target_server.log()[-4000:]


def test_leases_are_listed_soonest_expiry_first_as_etcd(
    ref_server: ServerProcess, target_server: ServerProcess
) -> None:
    grants = [(7, 300), (3, 100), (9, 200), (5, 100)]
    orders = []
    for server in (ref_server, target_server):
        with grpc.insecure_channel(server.endpoint) as channel:
            lease = rpc_pb2_grpc.LeaseStub(channel)
            for lease_id, ttl in grants:
                lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(ID=lease_id, TTL=ttl), timeout=10)
            listed = [s.ID for s in lease.LeaseLeases(rpc_pb2.LeaseLeasesRequest(), timeout=10).leases]
        orders.append(listed)
    want, got = orders
    assert got == want == [3, 5, 9, 7], f"etcd: {want}\n{COMPAT_TARGET}: {got}"


def test_watch_without_a_valid_token_is_refused_as_etcd(
    ref_server: ServerProcess, target_server: ServerProcess
) -> None:
    """With auth on, a watch create with a bad token or none is answered created+canceled with the error as reason."""
    answers: list[list[tuple[bool, bool, str, int]]] = []
    for server in (ref_server, target_server):
        with grpc.insecure_channel(server.endpoint) as channel:
            auth = rpc_pb2_grpc.AuthStub(channel)
            auth.UserAdd(rpc_pb2.AuthUserAddRequest(name="root", password="pw"), timeout=10)
            auth.UserGrantRole(rpc_pb2.AuthUserGrantRoleRequest(user="root", role="root"), timeout=10)
            auth.AuthEnable(rpc_pb2.AuthEnableRequest(), timeout=10)
            seen = []
            for metadata in ([("token", "bogus")], []):
                stop = threading.Event()

                def requests(stop: threading.Event = stop) -> Iterator[rpc_pb2.WatchRequest]:
                    yield rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"k"))
                    stop.wait(10)

                call = rpc_pb2_grpc.WatchStub(channel).Watch(requests(), metadata=metadata, timeout=10)
                try:
                    first = next(call)
                    seen.append((first.created, first.canceled, first.cancel_reason, first.watch_id))
                finally:
                    stop.set()
                    call.cancel()
            answers.append(seen)
    want, got = answers
    assert got == want, f"etcd: {want}\n{COMPAT_TARGET}: {got}"
    assert want[0][3] == -1 and "invalid auth token" in want[0][2]
