"""The etcd Maintenance service: Status, Hash, HashKV and Alarm (no alarm can be raised yet)."""

from __future__ import annotations

import grpc

from coord._proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from coord.server.api.common import Headers, abort, not_yet
from coord.server.node import Node
from coord.server.rejection import Rejected

Context = grpc.aio.ServicerContext[object, object]

# The etcd API version whose behaviour coord-server reproduces; clients use it for feature detection.
ETCD_API_VERSION = "3.4.0"


class MaintenanceService(rpc_pb2_grpc.MaintenanceServicer):
    def __init__(self, node: Node, headers: Headers) -> None:
        self._node = node
        self._headers = headers

    async def Status(self, request: rpc_pb2.StatusRequest, context: Context) -> rpc_pb2.StatusResponse:
        node = self._node
        resp = rpc_pb2.StatusResponse(
            version=ETCD_API_VERSION,
            dbSize=node.backend.size(),
            dbSizeInUse=node.backend.size_in_use(),
            leader=node.member_id,
            raftIndex=node.last_index,
            raftTerm=node.term,
            raftAppliedIndex=node.applied_index,
        )
        self._headers.fill(resp.header)
        return resp

    async def HashKV(self, request: rpc_pb2.HashKVRequest, context: Context) -> rpc_pb2.HashKVResponse:
        try:
            with self._node.read() as view:
                crc, _ = view.hash_kv(request.revision)
                resp = rpc_pb2.HashKVResponse(hash=crc, compact_revision=view.compact_revision)
                resp.header.revision = view.current_revision
        except Rejected as refusal:
            await abort(context, refusal.spec)
        self._headers.fill(resp.header)
        return resp

    async def Hash(self, request: rpc_pb2.HashRequest, context: Context) -> rpc_pb2.HashResponse:
        """The hash of the whole key-value history kept (coord hashes its MVCC data, not LMDB's pages)."""
        with self._node.read() as view:
            crc, _ = view.hash_kv(0)
            resp = rpc_pb2.HashResponse(hash=crc)
            resp.header.revision = view.current_revision
        self._headers.fill(resp.header)
        return resp

    async def Alarm(self, request: rpc_pb2.AlarmRequest, context: Context) -> rpc_pb2.AlarmResponse:
        """No alarm is ever raised yet (the NOSPACE quota alarm arrives with the cluster issue): GET answers the empty
        list, and ACTIVATE/DEACTIVATE change nothing, as etcd does for an alarm that is not raised."""
        resp = rpc_pb2.AlarmResponse()
        self._headers.fill(resp.header)
        return resp

    async def Defragment(self, request: rpc_pb2.DefragmentRequest, context: Context) -> rpc_pb2.DefragmentResponse:
        await not_yet(context, "Maintenance.Defragment")

    async def Snapshot(  # type: ignore[override]
        self, request: rpc_pb2.SnapshotRequest, context: Context
    ) -> rpc_pb2.SnapshotResponse:
        await not_yet(context, "Maintenance.Snapshot")

    async def MoveLeader(self, request: rpc_pb2.MoveLeaderRequest, context: Context) -> rpc_pb2.MoveLeaderResponse:
        await not_yet(context, "Maintenance.MoveLeader")

    async def Downgrade(self, request: rpc_pb2.DowngradeRequest, context: Context) -> rpc_pb2.DowngradeResponse:
        await not_yet(context, "Maintenance.Downgrade")
