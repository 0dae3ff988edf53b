"""Calls from this member to another one over the peer port: cluster discovery when joining, and the lease calls a
follower forwards to the leader."""

from __future__ import annotations

import grpc

from coord._proto.raftpb import raft_pb2, raft_pb2_grpc
from coord.server.peer.transport import CHANNEL_OPTIONS, peer_target


class PeerClient:
    """One cached channel per peer; channels to peers whose URLs changed are replaced."""

    def __init__(self) -> None:
        self._channels: dict[int, tuple[list[str], grpc.aio.Channel]] = {}

    def stub(self, peer_id: int, urls: list[str]) -> raft_pb2_grpc.PeerStub:
        cached = self._channels.get(peer_id)
        if cached is None or cached[0] != urls:
            channel = grpc.aio.insecure_channel(peer_target(urls), options=CHANNEL_OPTIONS)
            self._channels[peer_id] = (urls, channel)
            return raft_pb2_grpc.PeerStub(channel)
        return raft_pb2_grpc.PeerStub(cached[1])

    async def close(self) -> None:
        for _, channel in self._channels.values():
            await channel.close(grace=None)
        self._channels.clear()


async def fetch_members(urls: list[str], timeout: float) -> raft_pb2.MembersResponse:
    """Ask the member at ``urls`` for the cluster id and member table. Raises grpc.aio.AioRpcError."""
    async with grpc.aio.insecure_channel(peer_target(urls), options=CHANNEL_OPTIONS) as channel:
        return await raft_pb2_grpc.PeerStub(channel).Members(raft_pb2.MembersRequest(), timeout=timeout)
