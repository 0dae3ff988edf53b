"""The etcd Cluster service: list members, and add, remove, update and promote them through Raft.

A membership change is one Raft configuration change (one member at a time, effective when applied), whose entry
also carries the member's record for the replicated member table. Answers come once the change is applied here.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from urllib.parse import urlsplit

import grpc

from coord._proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from coord.errors import (
    LEARNER_NOT_READY,
    MEMBER_BAD_URLS,
    MEMBER_NOT_FOUND,
    MEMBER_NOT_LEARNER,
    PEER_URL_EXISTS,
    TOO_MANY_LEARNERS,
)
from coord.server.api.common import Headers, abort
from coord.server.config import host_port
from coord.server.membership import Member, member_id
from coord.server.node import Node
from coord.server.raft import ConfChange, ConfChangeType
from coord.server.rejection import Rejected
from coord.server.requests import Kind

Context = grpc.aio.ServicerContext[object, object]

# etcd allows one learner at a time.
_MAX_LEARNERS = 1
# A learner may be promoted once its log is within this fraction of the leader's (etcd: 90%).
_READY_FRACTION = 0.9

# etcd's ErrGRPCMemberBadURLs, for any peer URL list its types.NewURLs refuses.


def checked_peer_urls(urls: Sequence[str]) -> list[str]:
    """The peer URLs of a new member, trimmed as etcd trims them.

    Raises Rejected(MEMBER_BAD_URLS) for what etcd's ``types.NewURLs`` refuses (an empty list; a scheme other than
    http(s); no host:port; a path) and for what coord cannot dial (a unix socket; a port that is not a number).
    """
    if not urls:
        raise Rejected(MEMBER_BAD_URLS)
    checked: list[str] = []
    for url in urls:
        url = url.strip()
        try:
            host_port(url)
            path = urlsplit(url).path
        except ValueError:
            raise Rejected(MEMBER_BAD_URLS) from None
        if path:
            raise Rejected(MEMBER_BAD_URLS)
        checked.append(url)
    return checked


def _pb(m: Member) -> rpc_pb2.Member:
    return rpc_pb2.Member(ID=m.id, name=m.name, peerURLs=m.peer_urls, clientURLs=m.client_urls, isLearner=m.is_learner)


class ClusterService(rpc_pb2_grpc.ClusterServicer):
    def __init__(self, node: Node, headers: Headers, cluster_token: str) -> None:
        self._node = node
        self._headers = headers
        self._token = cluster_token

    def _members(self) -> list[rpc_pb2.Member]:
        return [_pb(m) for m in sorted(self._node.members.values(), key=lambda m: m.id)]

    async def MemberList(self, request: rpc_pb2.MemberListRequest, context: Context) -> rpc_pb2.MemberListResponse:
        resp = rpc_pb2.MemberListResponse(members=self._members())
        self._headers.fill(resp.header, with_revision=False)
        return resp

    async def MemberAdd(self, request: rpc_pb2.MemberAddRequest, context: Context) -> rpc_pb2.MemberAddResponse:
        try:
            urls = checked_peer_urls(request.peerURLs)
        except Rejected as refusal:
            await abort(context, refusal.spec)
        taken = {u for m in self._node.members.values() for u in m.peer_urls}
        if taken & set(urls):
            await abort(context, PEER_URL_EXISTS)
        if request.isLearner and sum(m.is_learner for m in self._node.members.values()) >= _MAX_LEARNERS:
            await abort(context, TOO_MANY_LEARNERS)
        new_id = member_id(urls, self._token, salt=str(time.time_ns()).encode())
        record = rpc_pb2.Member(ID=new_id, peerURLs=urls, isLearner=request.isLearner)
        kind = ConfChangeType.ADD_LEARNER if request.isLearner else ConfChangeType.ADD_VOTER
        try:
            await self._node.propose_conf_change(ConfChange(kind, new_id, record.SerializeToString()))
        except Rejected as refusal:
            await abort(context, refusal.spec)
        resp = rpc_pb2.MemberAddResponse(member=record, members=self._members())
        self._headers.fill(resp.header, with_revision=False)
        return resp

    async def MemberRemove(
        self, request: rpc_pb2.MemberRemoveRequest, context: Context
    ) -> rpc_pb2.MemberRemoveResponse:
        if request.ID not in self._node.members:
            await abort(context, MEMBER_NOT_FOUND)
        try:
            await self._node.propose_conf_change(ConfChange(ConfChangeType.REMOVE_NODE, request.ID))
        except Rejected as refusal:
            await abort(context, refusal.spec)
        resp = rpc_pb2.MemberRemoveResponse(members=self._members())
        self._headers.fill(resp.header, with_revision=False)
        return resp

    async def MemberUpdate(
        self, request: rpc_pb2.MemberUpdateRequest, context: Context
    ) -> rpc_pb2.MemberUpdateResponse:
        if request.ID not in self._node.members:
            await abort(context, MEMBER_NOT_FOUND)
        urls = list(request.peerURLs)
        taken = {u for m in self._node.members.values() if m.id != request.ID for u in m.peer_urls}
        if taken & set(urls):
            await abort(context, PEER_URL_EXISTS)
        try:
            await self._node.propose(
                *self._node.encode(Kind.MEMBER_UPDATE, rpc_pb2.Member(ID=request.ID, peerURLs=urls))
            )
        except Rejected as refusal:
            await abort(context, refusal.spec)
        resp = rpc_pb2.MemberUpdateResponse(members=self._members())
        self._headers.fill(resp.header, with_revision=False)
        return resp

    async def MemberPromote(
        self, request: rpc_pb2.MemberPromoteRequest, context: Context
    ) -> rpc_pb2.MemberPromoteResponse:
        member = self._node.members.get(request.ID)
        if member is None:
            await abort(context, MEMBER_NOT_FOUND)
        if not member.is_learner:
            await abort(context, MEMBER_NOT_LEARNER)
        if self._node.is_leader and not self._learner_ready(request.ID):
            await abort(context, LEARNER_NOT_READY)
        try:
            await self._node.propose_conf_change(ConfChange(ConfChangeType.ADD_VOTER, request.ID))
        except Rejected as refusal:
            await abort(context, refusal.spec)
        resp = rpc_pb2.MemberPromoteResponse(members=self._members())
        self._headers.fill(resp.header, with_revision=False)
        return resp

    def _learner_ready(self, learner: int) -> bool:
        assert self._node.raw is not None
        status = self._node.raw.status()
        progress = status.progress.get(learner)
        leader = status.progress.get(self._node.member_id)
        if progress is None or leader is None:
            return False
        return progress.match >= _READY_FRACTION * leader.match
