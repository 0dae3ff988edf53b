"""The etcd Maintenance service: Status, Hash, HashKV, Alarm (the NOSPACE quota), MoveLeader, Snapshot, Defragment."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc

from coord._proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from coord.errors import BAD_LEADER_TRANSFEREE, NOT_LEADER
from coord.server import alarms, defrag, snapshot_file
from coord.server.api.common import Headers, abort, not_yet
from coord.server.node import Node
from coord.server.rejection import Rejected
from coord.server.requests import Kind

Context = grpc.aio.ServicerContext[object, object]

# Blob bytes per Snapshot response.
SNAPSHOT_CHUNK_BYTES = 1 << 20

# The etcd API version whose behaviour coord-server reproduces; clients use it for feature detection.
ETCD_API_VERSION = "3.4.0"


class MaintenanceService(rpc_pb2_grpc.MaintenanceServicer):
    def __init__(self, node: Node, headers: Headers) -> None:
        self._node = node
        self._headers = headers

    async def Status(self, request: rpc_pb2.StatusRequest, context: Context) -> rpc_pb2.StatusResponse:
        node = self._node
        me = node.members.get(node.member_id)
        with node.backend.read() as txn:
            raised = alarms.active_alarms(node.backend, txn)
        resp = rpc_pb2.StatusResponse(
            version=ETCD_API_VERSION,
            dbSize=node.backend.size(),
            dbSizeInUse=node.backend.size_in_use(),
            leader=node.leader_id,
            raftIndex=node.raft_status()[1],
            raftTerm=node.term,
            raftAppliedIndex=node.applied_index,
            isLearner=bool(me is not None and me.is_learner),
            errors=[f"memberID:{m} alarm:{alarms.alarm_name(a)} " for m, a in raised],
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
        """GET lists the raised alarms (this member's applied state); ACTIVATE and DEACTIVATE go through Raft, so
        every member raises or disarms the same alarm at the same point of the log."""
        try:
            if request.action == rpc_pb2.AlarmRequest.GET:
                with self._node.backend.read() as txn:
                    resp = alarms.apply_alarm(self._node.backend, txn, request)
            else:
                proposed = await self._node.propose(*self._node.encode(Kind.ALARM, request))
                assert isinstance(proposed, rpc_pb2.AlarmResponse)
                resp = proposed
        except Rejected as refusal:
            await abort(context, refusal.spec)
        self._headers.fill(resp.header)
        return resp

    async def MoveLeader(self, request: rpc_pb2.MoveLeaderRequest, context: Context) -> rpc_pb2.MoveLeaderResponse:
        """Hand leadership to another voting member (asked of the leader, as etcd requires)."""
        node = self._node
        if not node.is_leader:
            await abort(context, NOT_LEADER)
        target = node.members.get(request.targetID)
        if target is None or target.is_learner:
            await abort(context, BAD_LEADER_TRANSFEREE)
        if request.targetID != node.member_id:
            try:
                await node.transfer_leadership(request.targetID)
            except Rejected as refusal:
                await abort(context, refusal.spec)
        resp = rpc_pb2.MoveLeaderResponse()
        self._headers.fill(resp.header)
        return resp

    async def Defragment(self, request: rpc_pb2.DefragmentRequest, context: Context) -> rpc_pb2.DefragmentResponse:
        """Shrink the data file to its live pages (``coord.server.defrag``); writes on this member wait meanwhile.
        The response is empty, as etcd 3.4's. A failed defragment changes nothing and ends the call with UNKNOWN."""
        try:
            await defrag.defragment(self._node)
        except Rejected as refusal:
            await abort(context, refusal.spec)
        except (defrag.DefragmentError, OSError) as exc:
            await context.abort(grpc.StatusCode.UNKNOWN, f"coord: defragment failed: {exc}")
        return rpc_pb2.DefragmentResponse()

    async def Snapshot(
        self, request: rpc_pb2.SnapshotRequest, context: Context
    ) -> AsyncIterator[rpc_pb2.SnapshotResponse]:
        """Stream this member's state machine as a coord snapshot file (``coord.server.snapshot_file``).

        A worker thread copies it in one read transaction to a spool file under the data dir, which is then sent in
        chunks; ``remaining_bytes`` counts down to 0 on the last chunk, which ends with the file's sha256. The first
        response's header carries the revision the snapshot holds. A copy that fails ends the call with UNKNOWN.
        """
        loop = asyncio.get_running_loop()
        node = self._node
        copying = loop.run_in_executor(None, snapshot_file.write_snapshot, node.backend, node.spool_dir())
        try:
            path, info = await asyncio.shield(copying)
        except asyncio.CancelledError:
            copying.add_done_callback(_remove_spool)
            raise
        except OSError as exc:
            await context.abort(grpc.StatusCode.UNKNOWN, f"coord: snapshot failed: {exc}")
        try:
            with open(path, "rb") as stream:
                path.unlink()  # the open file stays readable: nothing is left behind however the call ends
                remaining, first = info.size, True
                while remaining > 0:
                    blob = await loop.run_in_executor(None, stream.read, SNAPSHOT_CHUNK_BYTES)
                    if not blob:
                        await context.abort(grpc.StatusCode.UNKNOWN, "coord: snapshot failed: the spool file shrank")
                    remaining -= len(blob)
                    resp = rpc_pb2.SnapshotResponse(remaining_bytes=remaining, blob=blob)
                    if first:
                        resp.header.revision = info.revision
                        self._headers.fill(resp.header)
                        first = False
                    yield resp
        finally:
            path.unlink(missing_ok=True)

    async def Downgrade(self, request: rpc_pb2.DowngradeRequest, context: Context) -> rpc_pb2.DowngradeResponse:
        await not_yet(context, "Maintenance.Downgrade")


def _remove_spool(copying: asyncio.Future[tuple[Path, snapshot_file.SnapshotInfo]]) -> None:
    """After a Snapshot call was cancelled while its copy ran: remove the spool file the copy made."""
    if not copying.cancelled() and copying.exception() is None:
        with contextlib.suppress(OSError):
            copying.result()[0].unlink()
