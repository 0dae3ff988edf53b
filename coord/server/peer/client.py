"""Calls from this member to another one over the peer port: cluster discovery when joining, and the lease calls a
follower forwards to the leader."""

from __future__ import annotations

import asyncio

import grpc

from coord._proto.raftpb import raft_pb2, raft_pb2_grpc
from coord.server.peer.transport import CHANNEL_OPTIONS
from coord.server.tls import PeerDialer


class PeerClient:
    """One cached channel per peer, opened by ``dialer`` (plaintext or TLS by the peer URL's scheme); channels to
    peers whose URLs changed, and channels that failed to connect, are replaced."""

    def __init__(self, dialer: PeerDialer | None = None) -> None:
        self._dialer = dialer or PeerDialer()
        self._channels: dict[int, tuple[list[str], grpc.aio.Channel]] = {}
        self._lock = asyncio.Lock()  # one dial at a time, so that no channel is opened twice and leaked

    async def stub(self, peer_id: int, urls: list[str]) -> raft_pb2_grpc.PeerStub:
        async with self._lock:
            cached = self._channels.get(peer_id)
            # A channel pinned to a peer's former self-signed certificate (peer auto-TLS) would fail forever: a
            # failing channel is dialed afresh.
            failing = cached is not None and cached[1].get_state() == grpc.ChannelConnectivity.TRANSIENT_FAILURE
            if cached is not None and cached[0] == urls and not failing:
                return raft_pb2_grpc.PeerStub(cached[1])
            if cached is not None:
                await cached[1].close(grace=None)
            channel = await self._dialer.channel(urls, CHANNEL_OPTIONS)
            self._channels[peer_id] = (urls, channel)
            return raft_pb2_grpc.PeerStub(channel)

    async def close(self) -> None:
        for _, channel in self._channels.values():
            await channel.close(grace=None)
        self._channels.clear()


async def fetch_members(urls: list[str], timeout: float, dialer: PeerDialer | None = None) -> raft_pb2.MembersResponse:
    """Ask the member at ``urls`` for the cluster id and member table. Raises grpc.aio.AioRpcError."""
    async with await (dialer or PeerDialer()).channel(urls, CHANNEL_OPTIONS) as channel:
        return await raft_pb2_grpc.PeerStub(channel).Members(raft_pb2.MembersRequest(), timeout=timeout)
