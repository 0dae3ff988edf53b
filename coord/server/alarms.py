"""Alarms (etcd's NOSPACE and CORRUPT): replicated, so every member refuses the same writes while one is raised.

An alarm is raised by a member (for NOSPACE: when the backend would grow past --quota-backend-bytes) by proposing
an ACTIVATE entry; an operator disarms it (``etcdctl alarm disarm``) once space was reclaimed. While NOSPACE is
raised the applier refuses every request that would add data (puts, txns with puts, lease grants) with
"etcdserver: mvcc: database space exceeded", on every member; reads, deletes and compaction still work.
"""

from __future__ import annotations

import struct
from typing import Any

from coord._proto.etcdserverpb import rpc_pb2
from coord.server.storage import Backend

META_ALARMS = b"alarms"
_PAIR = struct.Struct(">Qi")  # member id, alarm type (an open int32 enum: etcd stores unknown types too)


def active_alarms(backend: Backend, txn: Any) -> list[tuple[int, int]]:
    """(member id, alarm type) pairs currently raised, sorted."""
    raw = txn.get(META_ALARMS, db=backend.meta) or b""
    return [_PAIR.unpack_from(raw, i) for i in range(0, len(raw), _PAIR.size)]


def _store(backend: Backend, txn: Any, alarms: list[tuple[int, int]]) -> None:
    txn.put(META_ALARMS, b"".join(_PAIR.pack(m, a) for m, a in sorted(set(alarms))), db=backend.meta)


def alarm_name(alarm: int) -> str:
    """The alarm type as Go prints it: its name, or the number for a type the API does not define."""
    try:
        return rpc_pb2.AlarmType.Name(alarm)
    except ValueError:
        return str(alarm)


def nospace(backend: Backend, txn: Any) -> bool:
    return any(a == rpc_pb2.NOSPACE for _, a in active_alarms(backend, txn))


def apply_alarm(backend: Backend, txn: Any, req: rpc_pb2.AlarmRequest) -> rpc_pb2.AlarmResponse:
    """GET lists raised alarms (all, or of one type); ACTIVATE raises one; DEACTIVATE disarms one. The response
    lists the alarms the request concerned, as etcd's does."""
    alarms = active_alarms(backend, txn)
    resp = rpc_pb2.AlarmResponse()
    if req.action == rpc_pb2.AlarmRequest.GET:
        for member, alarm in alarms:
            if req.alarm in (rpc_pb2.NONE, alarm):
                resp.alarms.add(memberID=member, alarm=alarm)
        return resp
    pair = (req.memberID, int(req.alarm))
    if req.action == rpc_pb2.AlarmRequest.ACTIVATE:
        if req.alarm == rpc_pb2.NONE:
            return resp
        if pair not in alarms:
            _store(backend, txn, [*alarms, pair])
        resp.alarms.add(memberID=pair[0], alarm=pair[1])
    elif req.action == rpc_pb2.AlarmRequest.DEACTIVATE:
        remaining = [
            p for p in alarms if not (p[0] == req.memberID and (req.alarm == rpc_pb2.NONE or p[1] == req.alarm))
        ]
        if len(remaining) != len(alarms):
            for m, a in alarms:
                if (m, a) not in remaining:
                    resp.alarms.add(memberID=m, alarm=a)
            _store(backend, txn, remaining)
    return resp


def adds_data(kind_name: str, request: Any) -> bool:
    """Whether a request would grow the store (refused while NOSPACE is raised)."""
    if kind_name in ("PUT", "LEASE_GRANT"):
        return True
    if kind_name == "TXN":
        return _txn_puts(request)
    return False


def _txn_puts(txn: rpc_pb2.TxnRequest) -> bool:
    for op in [*txn.success, *txn.failure]:
        which = op.WhichOneof("request")
        if which == "request_put" or (which == "request_txn" and _txn_puts(op.request_txn)):
            return True
    return False
