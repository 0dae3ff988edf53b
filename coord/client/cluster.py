"""Cluster membership calls: list, add, remove, update, promote. Mixed into :class:`coord.AsyncClient`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from coord._proto.etcdserverpb import rpc_pb2
from coord.client._channel import Endpoint, Metadata, Transport
from coord.client._retry import RetryKind
from coord.client.results import Header

__all__ = ["ClusterMixin", "Member", "MemberList"]


@dataclass(frozen=True, slots=True)
class Member:
    """One cluster member. ``name`` is empty and ``client_urls`` empty for a member added but not yet started."""

    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool

    @classmethod
    def from_pb(cls, m: rpc_pb2.Member) -> Member:
        return cls(m.ID, m.name, tuple(m.peerURLs), tuple(m.clientURLs), m.isLearner)


@dataclass(frozen=True, slots=True)
class MemberList:
    header: Header
    members: tuple[Member, ...]


class ClusterMixin:
    _transport: Transport

    async def member_list(self, *, timeout: float | None = None) -> MemberList:
        """Every member of the cluster (as the answering member knows it)."""

        async def attempt(ep: Endpoint, left: float, md: Metadata) -> rpc_pb2.MemberListResponse:
            return await ep.cluster.MemberList(rpc_pb2.MemberListRequest(), timeout=left, metadata=md)

        resp = await self._transport.call("member_list", attempt, kind=RetryKind.SAFE, timeout=timeout)
        return MemberList(Header.from_pb(resp.header), tuple(Member.from_pb(m) for m in resp.members))

    async def member_add(
        self, peer_urls: Sequence[str], *, is_learner: bool = False, timeout: float | None = None
    ) -> Member:
        """Add a member (start it afterwards with the returned ID's cluster configuration).

        Raises EtcdError ``Peer URLs already exists``. Not retried unless provably not applied.
        """
        request = rpc_pb2.MemberAddRequest(peerURLs=list(peer_urls), isLearner=is_learner)

        async def attempt(ep: Endpoint, left: float, md: Metadata) -> rpc_pb2.MemberAddResponse:
            return await ep.cluster.MemberAdd(request, timeout=left, metadata=md)

        resp = await self._transport.call("member_add", attempt, kind=RetryKind.UNSAFE, timeout=timeout)
        return Member.from_pb(resp.member)

    async def member_remove(self, member_id: int, *, timeout: float | None = None) -> MemberList:
        """Remove a member; returns the remaining members. Raises EtcdError ``member not found``."""
        request = rpc_pb2.MemberRemoveRequest(ID=member_id)

        async def attempt(ep: Endpoint, left: float, md: Metadata) -> rpc_pb2.MemberRemoveResponse:
            return await ep.cluster.MemberRemove(request, timeout=left, metadata=md)

        resp = await self._transport.call("member_remove", attempt, kind=RetryKind.UNSAFE, timeout=timeout)
        return MemberList(Header.from_pb(resp.header), tuple(Member.from_pb(m) for m in resp.members))

    async def member_update(
        self, member_id: int, peer_urls: Sequence[str], *, timeout: float | None = None
    ) -> MemberList:
        """Replace a member's peer URLs (idempotent, so retried like a read)."""
        request = rpc_pb2.MemberUpdateRequest(ID=member_id, peerURLs=list(peer_urls))

        async def attempt(ep: Endpoint, left: float, md: Metadata) -> rpc_pb2.MemberUpdateResponse:
            return await ep.cluster.MemberUpdate(request, timeout=left, metadata=md)

        resp = await self._transport.call("member_update", attempt, kind=RetryKind.SAFE, timeout=timeout)
        return MemberList(Header.from_pb(resp.header), tuple(Member.from_pb(m) for m in resp.members))

    async def member_promote(self, member_id: int, *, timeout: float | None = None) -> MemberList:
        """Promote a caught-up learner to a voting member."""
        request = rpc_pb2.MemberPromoteRequest(ID=member_id)

        async def attempt(ep: Endpoint, left: float, md: Metadata) -> rpc_pb2.MemberPromoteResponse:
            return await ep.cluster.MemberPromote(request, timeout=left, metadata=md)

        resp = await self._transport.call("member_promote", attempt, kind=RetryKind.UNSAFE, timeout=timeout)
        return MemberList(Header.from_pb(resp.header), tuple(Member.from_pb(m) for m in resp.members))
