"""The etcd KV service: Range, Put, DeleteRange, Txn, Compact."""

from __future__ import annotations

import grpc
from google.protobuf.message import Message

from coord._proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from coord.errors import REQUEST_TOO_LARGE
from coord.server.api import validation
from coord.server.api.common import Headers, abort
from coord.server.mvcc import kv_ops
from coord.server.node import Node
from coord.server.rejection import Rejected
from coord.server.requests import Kind

Context = grpc.aio.ServicerContext[object, object]


class KVService(rpc_pb2_grpc.KVServicer):
    """Reads are served from a local read transaction (a single member is always up to date, so every read is
    linearizable); writes go through the node's log and are answered once durable and applied."""

    def __init__(self, node: Node, headers: Headers, max_request_bytes: int, max_txn_ops: int) -> None:
        self._node = node
        self._headers = headers
        self._max_request_bytes = max_request_bytes
        self._max_txn_ops = max_txn_ops

    async def Range(self, request: rpc_pb2.RangeRequest, context: Context) -> rpc_pb2.RangeResponse:
        try:
            validation.check_range(request)
            with self._node.read() as view:
                resp = kv_ops.range_(view, request)
        except Rejected as refusal:
            await abort(context, refusal.spec)
        self._headers.fill(resp.header)
        return resp

    async def Put(self, request: rpc_pb2.PutRequest, context: Context) -> rpc_pb2.PutResponse:
        try:
            validation.check_put(request)
            resp = await self._propose(Kind.PUT, request)
        except Rejected as refusal:
            await abort(context, refusal.spec)
        assert isinstance(resp, rpc_pb2.PutResponse)
        self._headers.fill(resp.header)
        return resp

    async def DeleteRange(self, request: rpc_pb2.DeleteRangeRequest, context: Context) -> rpc_pb2.DeleteRangeResponse:
        try:
            validation.check_delete(request)
            resp = await self._propose(Kind.DELETE_RANGE, request)
        except Rejected as refusal:
            await abort(context, refusal.spec)
        assert isinstance(resp, rpc_pb2.DeleteRangeResponse)
        self._headers.fill(resp.header)
        return resp

    async def Txn(self, request: rpc_pb2.TxnRequest, context: Context) -> rpc_pb2.TxnResponse:
        try:
            validation.check_txn(request, self._max_txn_ops)
            if kv_ops.is_read_only(request):
                with self._node.read() as view:
                    resp = kv_ops.txn(view, request, lambda _lease: False)
            else:
                proposed = await self._propose(Kind.TXN, request)
                assert isinstance(proposed, rpc_pb2.TxnResponse)
                resp = proposed
        except Rejected as refusal:
            await abort(context, refusal.spec)
        self._headers.fill(resp.header)
        return resp

    async def Compact(self, request: rpc_pb2.CompactionRequest, context: Context) -> rpc_pb2.CompactionResponse:
        try:
            resp = await self._propose(Kind.COMPACT, request)
        except Rejected as refusal:
            await abort(context, refusal.spec)
        assert isinstance(resp, rpc_pb2.CompactionResponse)
        self._headers.fill(resp.header)
        return resp

    async def _propose(self, kind: Kind, request: Message) -> Message:
        request_id, data = self._node.encode(kind, request)
        if len(data) > self._max_request_bytes:
            raise Rejected(REQUEST_TOO_LARGE)
        return await self._node.propose(request_id, data)
