"""The peer gRPC service: Raft frames and snapshots in, plus the calls a member forwards to the leader."""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc

from coord._proto.raftpb import raft_pb2, raft_pb2_grpc
from coord.server.peer.codec import message_from_pb
from coord.server.raft import Message

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[object, object]


class PeerService(raft_pb2_grpc.PeerServicer):
    """The peer calls. Certificate checks (``--peer-crl-file``, ``--peer-cert-allowed-cn``) run before them, in the
    peer server's interceptor (``ServerTLS.peer_interceptors``)."""

    def __init__(
        self,
        cluster_id: Callable[[], int],
        receive: Callable[[list[Message]], None],
        spool_dir: Callable[[], Path],
        members: Callable[[], raft_pb2.MembersResponse],
        lease_keep_alive: Callable[[int], Awaitable[raft_pb2.LeaseResponse]],
        lease_time_to_live: Callable[[int], Awaitable[raft_pb2.LeaseResponse]],
    ) -> None:
        self._cluster_id = cluster_id
        self._receive = receive
        self._spool_dir = spool_dir
        self._members = members
        self._lease_keep_alive = lease_keep_alive
        self._lease_time_to_live = lease_time_to_live

    async def _check_cluster(self, cluster_id: int, context: Context) -> None:
        mine = self._cluster_id()
        if cluster_id and mine and cluster_id != mine:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, f"cluster id mismatch: {cluster_id:x} is not {mine:x}"
            )

    async def Stream(self, request_iterator: AsyncIterator[raft_pb2.Frame], context: Context) -> raft_pb2.FrameAck:
        try:
            async for frame in request_iterator:
                await self._check_cluster(frame.cluster_id, context)
                try:
                    self._receive([message_from_pb(pb) for pb in frame.messages])
                except ValueError as exc:
                    log.warning("dropping a malformed frame from %x: %s", getattr(frame, "from"), exc)
        except asyncio.CancelledError:
            pass  # the sender went away or this member is stopping; Raft retries over a new stream
        return raft_pb2.FrameAck()

    async def Snapshot(
        self, request_iterator: AsyncIterator[raft_pb2.SnapshotChunk], context: Context
    ) -> raft_pb2.SnapshotAck:
        spool = self._spool_dir()
        spool.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="in-", dir=spool)
        path = Path(name)
        loop = asyncio.get_running_loop()
        message = None
        try:
            with os.fdopen(fd, "wb") as out:
                async for chunk in request_iterator:
                    if chunk.HasField("message"):
                        await self._check_cluster(chunk.cluster_id, context)
                        message = chunk.message
                    if chunk.data:
                        await loop.run_in_executor(None, out.write, chunk.data)
                await loop.run_in_executor(None, out.flush)
                await loop.run_in_executor(None, os.fsync, out.fileno())
            if message is None or not message.HasField("snapshot"):
                raise ValueError("a snapshot transfer must start with the snapshot message")
            self._receive([message_from_pb(message, snapshot_data=str(path).encode())])
        except (ValueError, OSError) as exc:
            path.unlink(missing_ok=True)
            return raft_pb2.SnapshotAck(installed=False, error=str(exc))
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return raft_pb2.SnapshotAck(installed=True)

    async def Members(self, request: raft_pb2.MembersRequest, context: Context) -> raft_pb2.MembersResponse:
        return self._members()

    async def LeaseKeepAlive(self, request: raft_pb2.LeaseRequest, context: Context) -> raft_pb2.LeaseResponse:
        return await self._lease_keep_alive(request.id)

    async def LeaseTimeToLive(self, request: raft_pb2.LeaseRequest, context: Context) -> raft_pb2.LeaseResponse:
        return await self._lease_time_to_live(request.id)
