"""The etcd KV service: Range, Put, DeleteRange, Txn, Compact.

Auth: reads are checked here against the caller's credentials (read permission on every key they cover, the whole
of a read-only txn); writes carry the credentials in their log entry and are checked by the applier on every member
(coord.server.auth.apply). Compaction needs no permission, as in etcd 3.4.
"""

from __future__ import annotations

import grpc
from google.protobuf.message import Message

from coord._proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from coord.errors import REQUEST_TOO_LARGE
from coord.server.api import validation
from coord.server.api.common import Headers, abort
from coord.server.auth import AuthGate, AuthInfo
from coord.server.mvcc import kv_ops
from coord.server.node import Node
from coord.server.rejection import Rejected
from coord.server.requests import Kind, encode

Context = grpc.aio.ServicerContext[object, object]


class KVService(rpc_pb2_grpc.KVServicer):
    """Linearizable reads wait for a ReadIndex round (this member then has applied everything committed before the
    read began) and read a local transaction; serializable reads read local state at once. Writes go through Raft
    and are answered once committed and applied here."""

    def __init__(
        self, node: Node, headers: Headers, max_request_bytes: int, max_txn_ops: int, *, gate: AuthGate
    ) -> None:
        self._node = node
        self._gate = gate
        self._headers = headers
        self._max_request_bytes = max_request_bytes
        self._max_txn_ops = max_txn_ops

    async def Range(self, request: rpc_pb2.RangeRequest, context: Context) -> rpc_pb2.RangeResponse:
        try:
            validation.check_range(request)
            info = self._gate.credentials(context)
            if not request.serializable:
                await self._node.read_barrier()
            self._gate.check_range(info, request.key, request.range_end)
            with self._node.read() as view:
                resp = kv_ops.range_(view, request)
        except Rejected as refusal:
            await abort(context, refusal.spec)
        self._headers.fill(resp.header)
        return resp

    async def Put(self, request: rpc_pb2.PutRequest, context: Context) -> rpc_pb2.PutResponse:
        try:
            validation.check_put(request, key_length=False)
            resp = await self._propose(Kind.PUT, request, self._gate.credentials(context))
        except Rejected as refusal:
            await abort(context, refusal.spec)
        assert isinstance(resp, rpc_pb2.PutResponse)
        self._headers.fill(resp.header)
        return resp

    async def DeleteRange(self, request: rpc_pb2.DeleteRangeRequest, context: Context) -> rpc_pb2.DeleteRangeResponse:
        try:
            validation.check_delete(request)
            resp = await self._propose(Kind.DELETE_RANGE, request, self._gate.credentials(context))
        except Rejected as refusal:
            await abort(context, refusal.spec)
        assert isinstance(resp, rpc_pb2.DeleteRangeResponse)
        self._headers.fill(resp.header)
        return resp

    async def Txn(self, request: rpc_pb2.TxnRequest, context: Context) -> rpc_pb2.TxnResponse:
        try:
            validation.check_txn(request, self._max_txn_ops, key_length=False)
            info = self._gate.credentials(context)
            if kv_ops.served_locally(request):
                await self._node.read_barrier()
                self._gate.check_txn(info, request)
                with self._node.read() as view:
                    resp = kv_ops.txn(view, request, lambda _lease: False)
            else:
                proposed = await self._propose(Kind.TXN, request, info)
                assert isinstance(proposed, rpc_pb2.TxnResponse)
                resp = proposed
        except Rejected as refusal:
            await abort(context, refusal.spec)
        self._headers.fill(resp.header)
        return resp

    async def Compact(self, request: rpc_pb2.CompactionRequest, context: Context) -> rpc_pb2.CompactionResponse:
        try:
            resp = await self._propose(Kind.COMPACT, request, self._gate.credentials(context))
        except Rejected as refusal:
            await abort(context, refusal.spec)
        assert isinstance(resp, rpc_pb2.CompactionResponse)
        self._headers.fill(resp.header)
        return resp

    async def _propose(self, kind: Kind, request: Message, info: AuthInfo | None) -> Message:
        return await propose_checked(self._node, kind, request, info, self._max_request_bytes)


async def propose_checked(
    node: Node, kind: Kind, request: Message, info: AuthInfo | None, max_request_bytes: int
) -> Message:
    """Refuse a request that is too large (etcd's first refusal once the request is well formed), then a key that is
    too long (coord's limit); then replicate it and return its response. The KV service and the in-process client
    of the Lock and Election services both write through here."""
    request_id = node.next_id()
    data = encode(kind, request_id, request, info)
    if len(data) > max_request_bytes:
        raise Rejected(REQUEST_TOO_LARGE)
    validation.check_key_lengths(request)
    return await node.propose(request_id, data)
