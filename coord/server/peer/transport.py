"""Sending Raft traffic to peers over gRPC streams: one long-lived stream per peer, many messages per frame.

Guarantees: messages to one peer leave in the order they were handed over, batched into frames of everything queued
while the previous frame was written. Delivery is best effort, as Raft expects: when a peer cannot be reached its
queue is dropped, the node is told (``report_unreachable``) and the link reconnects with exponential backoff.
Snapshots travel on their own call (``Peer.Snapshot``): the state machine is copied in one read transaction to a
spool file, then streamed in chunks; the outcome is reported with ``report_snapshot``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

from coord._proto.raftpb import raft_pb2, raft_pb2_grpc
from coord.server.peer.codec import message_to_pb
from coord.server.peer.snapshot import state_chunks
from coord.server.raft import Message, MessageType
from coord.server.storage import Backend
from coord.server.tls import PeerDialer

log = logging.getLogger(__name__)

_MAX_QUEUED = 8192
_BACKOFF_MIN = 0.05
_BACKOFF_MAX = 1.0
_SNAPSHOT_TIMEOUT = 300.0

CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 2000),
    ("grpc.keepalive_timeout_ms", 3000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_send_message_length", 2**31 - 1),
    ("grpc.max_receive_message_length", 2**31 - 1),
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


class _Link:
    """The outgoing stream to one peer."""

    def __init__(self, transport: Transport, peer_id: int, urls: list[str]) -> None:
        self.peer_id = peer_id
        self.urls = urls
        self._transport = transport
        self._queue: list[raft_pb2.Message] = []
        self._ready = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name=f"coord-peer-{peer_id:x}")

    def enqueue(self, message: raft_pb2.Message) -> None:
        if len(self._queue) >= _MAX_QUEUED:
            self._queue.clear()
            self._transport.report_unreachable(self.peer_id)
            return
        self._queue.append(message)
        self._ready.set()

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        backoff = _BACKOFF_MIN
        while True:
            channel = await self._transport.dialer.channel(self.urls, CHANNEL_OPTIONS)
            try:
                call = raft_pb2_grpc.PeerStub(channel).Stream()  # type: ignore[call-arg]
                while True:
                    await self._ready.wait()
                    self._ready.clear()
                    batch, self._queue = self._queue, []
                    if not batch:
                        continue
                    frame = raft_pb2.Frame(cluster_id=self._transport.cluster_id, messages=batch)
                    setattr(frame, "from", self._transport.member_id)
                    await call.write(frame)
                    backoff = _BACKOFF_MIN
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("stream to peer %x failed: %s", self.peer_id, exc)
                self._queue.clear()
                self._transport.report_unreachable(self.peer_id)
            finally:
                await channel.close(grace=None)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX)


class Transport:
    """Routes a Ready's messages to peers. Runs on the event loop; ``send`` never blocks. ``dialer`` opens the
    channels: plaintext to http:// peer URLs, TLS with this member's peer certificate to https:// ones (the default
    dialer has no certificate and verifies https:// peers against gRPC's bundled CAs)."""

    def __init__(
        self,
        member_id: int,
        cluster_id: int,
        backend: Backend,
        report_unreachable: Callable[[int], None],
        report_snapshot: Callable[[int, bool], None],
        spool_dir: Path,
        dialer: PeerDialer | None = None,
    ) -> None:
        self.member_id = member_id
        self.dialer = dialer or PeerDialer()
        self.cluster_id = cluster_id
        self._backend = backend
        self._report_unreachable = report_unreachable
        self._report_snapshot = report_snapshot
        self._spool_dir = spool_dir
        self._links: dict[int, _Link] = {}
        self._peers: dict[int, list[str]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def report_unreachable(self, peer_id: int) -> None:
        self._report_unreachable(peer_id)

    def set_peers(self, peers: dict[int, list[str]]) -> None:
        """The other members and their peer URLs; links to members no longer listed are closed."""
        peers = {pid: urls for pid, urls in peers.items() if pid != self.member_id and urls}
        for pid in list(self._links):
            if pid not in peers or peers[pid] != self._links[pid].urls:
                self._spawn(self._links.pop(pid).close())
        self._peers = peers

    def peer_urls(self, peer_id: int) -> list[str] | None:
        return self._peers.get(peer_id)

    def send(self, messages: list[Message]) -> None:
        for m in messages:
            if m.to == self.member_id:
                continue
            if m.type == MessageType.SNAP:
                self._spawn(self._send_snapshot(m))
                continue
            link = self._links.get(m.to)
            if link is None:
                urls = self._peers.get(m.to)
                if urls is None:
                    continue  # not (or no longer) a member we know how to reach
                link = self._links[m.to] = _Link(self, m.to, urls)
            link.enqueue(message_to_pb(m))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_snapshot(self, m: Message) -> None:
        urls = self._peers.get(m.to)
        if urls is None:
            self._report_snapshot(m.to, False)
            return
        spool = await asyncio.get_running_loop().run_in_executor(None, self._spool_state)
        ok = False
        try:
            async with await self.dialer.channel(urls, CHANNEL_OPTIONS) as channel:
                ack = await raft_pb2_grpc.PeerStub(channel).Snapshot(
                    self._snapshot_chunks(m, spool), timeout=_SNAPSHOT_TIMEOUT
                )
                ok = ack.installed
                if not ok:
                    log.warning("peer %x refused a snapshot: %s", m.to, ack.error)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("sending a snapshot to peer %x failed: %s", m.to, exc)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(spool)
        log.info("snapshot at index %d to peer %x: %s", m.snapshot.metadata.index if m.snapshot else 0, m.to, ok)
        self._report_snapshot(m.to, ok)

    def _spool_state(self) -> Path:
        """Copy the state machine (one read transaction) to a spool file; runs in a worker thread."""
        self._spool_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="out-", dir=self._spool_dir)
        with os.fdopen(fd, "wb") as out, self._backend.read() as txn:
            for chunk in state_chunks(self._backend, txn):
                out.write(chunk)
        return Path(name)

    async def _snapshot_chunks(self, m: Message, spool: Path) -> AsyncIterator[raft_pb2.SnapshotChunk]:
        first = raft_pb2.SnapshotChunk(cluster_id=self.cluster_id, message=message_to_pb(m))
        setattr(first, "from", self.member_id)
        yield first
        loop = asyncio.get_running_loop()
        with open(spool, "rb") as stream:
            while True:
                data = await loop.run_in_executor(None, stream.read, 1 << 20)
                if not data:
                    return
                yield raft_pb2.SnapshotChunk(data=data)

    async def stop(self) -> None:
        for link in self._links.values():
            await link.close()
        self._links.clear()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
