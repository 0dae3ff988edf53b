"""The etcd Lease service: Grant and Revoke go through the log; KeepAlive, TimeToLive and Leases are answered by
this member's lessor and store.

Auth (etcd 3.4): Revoke needs write permission on every key attached to the lease, unless the caller holds the root
role (checked by the applier); TimeToLive with ``keys`` needs read permission on the attached keys (as etcd 3.5,
since the key names would leak otherwise); Grant, KeepAlive and Leases need none.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc

from coord._proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from coord.server.api.common import Headers, abort
from coord.server.api.validation import UndecodableRequest, read_request
from coord.server.auth import SYSTEM, AuthGate, AuthInfo
from coord.server.lease import Lessor, stored_leases
from coord.server.node import Node
from coord.server.rejection import Rejected
from coord.server.requests import Kind, encode

Context = grpc.aio.ServicerContext[object, object]
StreamContext = grpc.aio.ServicerContext[rpc_pb2.LeaseKeepAliveRequest, rpc_pb2.LeaseKeepAliveResponse]


# Asks the leader for (TTL, granted TTL) of a lease: keep_alive=True renews it. TTL -1: no such lease.
ForwardToLeader = Callable[[bool, int], Awaitable[tuple[int, int]]]


class LeaseService(rpc_pb2_grpc.LeaseServicer):
    """Grant and Revoke go through the log. Deadlines live on the leader (its lessor expires leases), so a follower
    forwards KeepAlive and TimeToLive to the leader."""

    def __init__(
        self, node: Node, lessor: Lessor, headers: Headers, forward: ForwardToLeader, *, gate: AuthGate
    ) -> None:
        self._node = node
        self._gate = gate
        self._lessor = lessor
        self._headers = headers
        self._forward = forward

    async def _keep_alive(self, lease_id: int) -> int:
        """The renewed TTL, or 0 for an unknown lease (etcd's answer). Raises Rejected without a leader."""
        if self._node.is_leader:
            return self._lessor.keep_alive(lease_id)
        ttl, _ = await self._forward(True, lease_id)
        return max(ttl, 0)

    async def _remaining(self, lease_id: int) -> tuple[int, int] | None:
        if self._node.is_leader:
            return self._lessor.remaining(lease_id)
        ttl, granted = await self._forward(False, lease_id)
        return None if ttl < 0 else (ttl, granted)

    async def LeaseGrant(self, request: rpc_pb2.LeaseGrantRequest, context: Context) -> rpc_pb2.LeaseGrantResponse:
        grant = rpc_pb2.LeaseGrantRequest()
        grant.CopyFrom(request)
        if grant.ID == 0:
            # The proposer picks the id so that applying the entry is deterministic on every member.
            grant.ID = self._node.next_id() & (2**63 - 1)
        try:
            request_id = self._node.next_id()
            data = encode(Kind.LEASE_GRANT, request_id, grant, self._gate.credentials(context))
            resp = await self._node.propose(request_id, data)
        except Rejected as refusal:
            await abort(context, refusal.spec)
        assert isinstance(resp, rpc_pb2.LeaseGrantResponse)
        self._headers.fill(resp.header)
        return resp

    async def LeaseRevoke(self, request: rpc_pb2.LeaseRevokeRequest, context: Context) -> rpc_pb2.LeaseRevokeResponse:
        try:
            resp = await self.revoke(request.ID, self._gate.credentials(context))
        except Rejected as refusal:
            await abort(context, refusal.spec)
        self._headers.fill(resp.header)
        return resp

    async def revoke(self, lease_id: int, auth: AuthInfo | None = SYSTEM) -> rpc_pb2.LeaseRevokeResponse:
        """Revoke through the log as ``auth`` (by default the server itself: how the lessor expires a lease, which
        no permission check refuses); raises Rejected for an unknown lease or a caller lacking permission."""
        request_id = self._node.next_id()
        data = encode(Kind.LEASE_REVOKE, request_id, rpc_pb2.LeaseRevokeRequest(ID=lease_id), auth)
        resp = await self._node.propose(request_id, data)
        assert isinstance(resp, rpc_pb2.LeaseRevokeResponse)
        return resp

    async def LeaseKeepAlive(self, request_iterator: object, context: StreamContext) -> None:  # type: ignore[override]
        """Renew each lease named on the stream; an unknown lease is answered with TTL 0, as etcd does."""
        while True:
            try:
                request = await read_request(context)
            except UndecodableRequest as bad:
                await context.abort(grpc.StatusCode.INTERNAL, bad.status_details)
            if not isinstance(request, rpc_pb2.LeaseKeepAliveRequest):
                return  # the client half-closed
            try:
                ttl = await self._keep_alive(request.ID)
            except Rejected as refusal:
                await abort(context, refusal.spec)  # type: ignore[arg-type]
            resp = rpc_pb2.LeaseKeepAliveResponse(ID=request.ID, TTL=ttl)
            self._headers.fill(resp.header)
            await context.write(resp)

    async def LeaseTimeToLive(
        self, request: rpc_pb2.LeaseTimeToLiveRequest, context: Context
    ) -> rpc_pb2.LeaseTimeToLiveResponse:
        """Remaining whole seconds and granted TTL; TTL -1 for an unknown lease; attached keys when asked."""
        resp = rpc_pb2.LeaseTimeToLiveResponse(ID=request.ID, TTL=-1)
        try:
            info = self._gate.credentials(context)
            remaining = await self._remaining(request.ID)
            if remaining is not None:
                resp.TTL, resp.grantedTTL = remaining
                if request.keys:
                    with self._node.read() as view:
                        keys = view.lease_keys(request.ID)
                    self._gate.check_keys_readable(info, keys)
                    resp.keys.extend(keys)
        except Rejected as refusal:
            await abort(context, refusal.spec)
        self._headers.fill(resp.header)
        return resp

    async def LeaseLeases(self, request: rpc_pb2.LeaseLeasesRequest, context: Context) -> rpc_pb2.LeaseLeasesResponse:
        with self._node.backend.read() as txn:
            ids = self._lessor.listing_order(list(stored_leases(self._node.backend, txn)))
        resp = rpc_pb2.LeaseLeasesResponse(leases=[rpc_pb2.LeaseStatus(ID=i) for i in ids])
        self._headers.fill(resp.header)
        return resp
