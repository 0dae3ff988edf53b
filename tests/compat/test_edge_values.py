"""Values at the edges of their types, against real etcd: lease ids and alarm types.

etcd's lease id is an int64 chosen by the client or the server, and etcd accepts any non-zero value, negative ones
included. An alarm type is an open int32 enum: etcd stores a type it does not know, negative ones included. Each step
is sent to a fresh etcd and to the server under test; the answers must be identical after the header normalisation
of ``tests/compat/differential.py``.
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf.message import Message

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
