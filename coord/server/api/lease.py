"""The etcd Lease service: Grant and Revoke go through the log; KeepAlive, TimeToLive and Leases are answered by
this member's lessor and store."""

from __future__ import annotations

import grpc

from coord._proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from coord.server.api.common import Headers, abort
from coord.server.lease import Lessor, stored_leases
from coord.server.node import Node
from coord.server.rejection import Rejected
from coord.server.requests import Kind

Context = grpc.aio.ServicerContext[object, object]
StreamContext = grpc.aio.ServicerContext[rpc_pb2.LeaseKeepAliveRequest, rpc_pb2.LeaseKeepAliveResponse]


class LeaseService(rpc_pb2_grpc.LeaseServicer):
    def __init__(self, node: Node, lessor: Lessor, headers: Headers) -> None:
        self._node = node
        self._lessor = lessor
        self._headers = headers

    async def LeaseGrant(self, request: rpc_pb2.LeaseGrantRequest, context: Context) -> rpc_pb2.LeaseGrantResponse:
        grant = rpc_pb2.LeaseGrantRequest()
        grant.CopyFrom(request)
        if grant.ID == 0:
            # The proposer picks the id so that applying the entry is deterministic on every member.
            grant.ID = self._node.next_id() & (2**63 - 1)
        try:
            resp = await self._node.propose(*self._node.encode(Kind.LEASE_GRANT, grant))
        except Rejected as refusal:
            await abort(context, refusal.spec)
        assert isinstance(resp, rpc_pb2.LeaseGrantResponse)
        self._headers.fill(resp.header)
        return resp

    async def LeaseRevoke(self, request: rpc_pb2.LeaseRevokeRequest, context: Context) -> rpc_pb2.LeaseRevokeResponse:
        try:
            resp = await self.revoke(request.ID)
        except Rejected as refusal:
            await abort(context, refusal.spec)
        self._headers.fill(resp.header)
        return resp

    async def revoke(self, lease_id: int) -> rpc_pb2.LeaseRevokeResponse:
        """Revoke through the log (also how the lessor expires a lease); raises Rejected for an unknown lease."""
        resp = await self._node.propose(*self._node.encode(Kind.LEASE_REVOKE, rpc_pb2.LeaseRevokeRequest(ID=lease_id)))
        assert isinstance(resp, rpc_pb2.LeaseRevokeResponse)
        return resp

    async def LeaseKeepAlive(self, request_iterator: object, context: StreamContext) -> None:  # type: ignore[override]
        """Renew each lease named on the stream; an unknown lease is answered with TTL 0, as etcd does."""
        while True:
            request = await context.read()
            if not isinstance(request, rpc_pb2.LeaseKeepAliveRequest):
                return  # the client half-closed
            resp = rpc_pb2.LeaseKeepAliveResponse(ID=request.ID, TTL=self._lessor.keep_alive(request.ID))
            self._headers.fill(resp.header)
            await context.write(resp)

    async def LeaseTimeToLive(
        self, request: rpc_pb2.LeaseTimeToLiveRequest, context: Context
    ) -> rpc_pb2.LeaseTimeToLiveResponse:
        """Remaining whole seconds and granted TTL; TTL -1 for an unknown lease; attached keys when asked."""
        resp = rpc_pb2.LeaseTimeToLiveResponse(ID=request.ID, TTL=-1)
        remaining = self._lessor.remaining(request.ID)
        if remaining is not None:
            resp.TTL, resp.grantedTTL = remaining
            if request.keys:
                with self._node.read() as view:
                    resp.keys.extend(view.lease_keys(request.ID))
        self._headers.fill(resp.header)
        return resp

    async def LeaseLeases(self, request: rpc_pb2.LeaseLeasesRequest, context: Context) -> rpc_pb2.LeaseLeasesResponse:
        with self._node.backend.read() as txn:
            ids = sorted(stored_leases(self._node.backend, txn))
        resp = rpc_pb2.LeaseLeasesResponse(leases=[rpc_pb2.LeaseStatus(ID=i) for i in ids])
        self._headers.fill(resp.header)
        return resp
