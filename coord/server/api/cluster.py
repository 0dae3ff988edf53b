"""The etcd Cluster service. A single-member server lists itself; membership changes arrive with Raft."""

from __future__ import annotations

import grpc

from coord._proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from coord.server.api.common import Headers, not_yet
from coord.server.membership import Member

Context = grpc.aio.ServicerContext[object, object]


class ClusterService(rpc_pb2_grpc.ClusterServicer):
    def __init__(self, members: list[Member], headers: Headers) -> None:
        self._members = members
        self._headers = headers

    async def MemberList(self, request: rpc_pb2.MemberListRequest, context: Context) -> rpc_pb2.MemberListResponse:
        resp = rpc_pb2.MemberListResponse(
            members=[
                rpc_pb2.Member(
                    ID=m.id, name=m.name, peerURLs=m.peer_urls, clientURLs=m.client_urls, isLearner=m.is_learner
                )
                for m in self._members
            ]
        )
        self._headers.fill(resp.header, with_revision=False)
        return resp

    async def MemberAdd(self, request: rpc_pb2.MemberAddRequest, context: Context) -> rpc_pb2.MemberAddResponse:
        await not_yet(context, "Cluster.MemberAdd")

    async def MemberRemove(
        self, request: rpc_pb2.MemberRemoveRequest, context: Context
    ) -> rpc_pb2.MemberRemoveResponse:
        await not_yet(context, "Cluster.MemberRemove")

    async def MemberUpdate(
        self, request: rpc_pb2.MemberUpdateRequest, context: Context
    ) -> rpc_pb2.MemberUpdateResponse:
        await not_yet(context, "Cluster.MemberUpdate")

    async def MemberPromote(
        self, request: rpc_pb2.MemberPromoteRequest, context: Context
    ) -> rpc_pb2.MemberPromoteResponse:
        await not_yet(context, "Cluster.MemberPromote")
