"""Assembles a member: storage, node loop, gRPC services and HTTP endpoints; starts and stops them in order."""

from __future__ import annotations

import asyncio
import logging

import grpc
from aiohttp import web

from coord._proto.etcdserverpb import rpc_pb2_grpc
from coord._proto.v3electionpb import v3election_pb2_grpc
from coord._proto.v3lockpb import v3lock_pb2_grpc
from coord.server.api.cluster import ClusterService
from coord.server.api.common import Headers
from coord.server.api.election import ElectionService
from coord.server.api.http import make_app
from coord.server.api.kv import KVService
from coord.server.api.lease import LeaseService
from coord.server.api.local import LocalClient
from coord.server.api.lock import LockService
from coord.server.api.maintenance import MaintenanceService
from coord.server.api.watch import WatchService
from coord.server.config import ServerConfig, host_port
from coord.server.lease import Lessor, min_lease_ttl, stored_leases
from coord.server.membership import Member, load_or_create_identity
from coord.server.mvcc.watchable import WatchHub
from coord.server.node import Node
from coord.server.storage import Backend

log = logging.getLogger(__name__)

# Room for protobuf framing on top of the largest request, as etcd allows.
_GRPC_OVERHEAD_BYTES = 512 * 1024


class MemberServer:
    """One coord-server member. ``await start()`` listens; ``await stop()`` drains and closes everything."""

    def __init__(self, config: ServerConfig) -> None:
        members = config.initial_members()
        if len(members) > 1:
            raise SystemExit(
                "coord-server: multi-member clusters (--initial-cluster with several members) are not supported yet; "
                "start a single member"
            )
        self.config = config
        # The map is address space, not disk: room for the quota plus headroom for copy-on-write pages.
        self.backend = Backend(config.data_dir, map_size=config.quota_backend_bytes * 2 + 256 * 1024**2)
        member_id, cluster_id = load_or_create_identity(
            self.backend, config.initial_advertise_peer_urls, config.initial_cluster_token
        )
        self.node = Node(
            self.backend,
            member_id,
            log_retain=config.snapshot_count,
            min_lease_ttl=min_lease_ttl(config.election_timeout_ms),
        )
        headers = Headers(self.node, cluster_id)
        me = Member(member_id, config.name, config.initial_advertise_peer_urls, config.advertise_client_urls)
        self._grpc = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", config.max_request_bytes + _GRPC_OVERHEAD_BYTES),
                ("grpc.max_send_message_length", 2**31 - 1),
                ("grpc.max_concurrent_streams", 2**31 - 1),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 5000),
                ("grpc.http2.max_pings_without_data", 0),
            ]
        )
        rpc_pb2_grpc.add_KVServicer_to_server(
            KVService(self.node, headers, config.max_request_bytes, config.max_txn_ops), self._grpc
        )
        self.watch_hub = WatchHub(self.node.read, headers.make)
        self.node.add_change_listener(self.watch_hub.on_change)
        rpc_pb2_grpc.add_WatchServicer_to_server(WatchService(self.watch_hub), self._grpc)
        self.lessor = Lessor(self._expire_lease)
        self.node.add_lease_listener(self._on_lease_changes)
        self._lease_service = LeaseService(self.node, self.lessor, headers)
        rpc_pb2_grpc.add_LeaseServicer_to_server(self._lease_service, self._grpc)
        rpc_pb2_grpc.add_MaintenanceServicer_to_server(MaintenanceService(self.node, headers), self._grpc)
        rpc_pb2_grpc.add_ClusterServicer_to_server(ClusterService([me], headers), self._grpc)
        local = LocalClient(self.node, self.watch_hub, headers, config.max_request_bytes, config.max_txn_ops)
        v3lock_pb2_grpc.add_LockServicer_to_server(LockService(local), self._grpc)
        v3election_pb2_grpc.add_ElectionServicer_to_server(ElectionService(local), self._grpc)
        self._http = web.AppRunner(make_app(self.node), access_log=None)

    def _on_lease_changes(self, changes: list[tuple[int, int]]) -> None:
        for lease_id, ttl in changes:
            if ttl:
                self.lessor.on_granted(lease_id, ttl)
            else:
                self.lessor.on_revoked(lease_id)

    async def _expire_lease(self, lease_id: int) -> None:
        await self._lease_service.revoke(lease_id)

    async def start(self) -> None:
        await self.node.start()
        with self.backend.read() as txn:
            self.lessor.restore(stored_leases(self.backend, txn))
        self.lessor.start()
        self.watch_hub.start()
        self._progress = asyncio.create_task(self._progress_loop(), name="coord-watch-progress")
        await self._http.setup()
        for url in self.config.listen_client_http_urls:
            host, port = host_port(url)
            await web.TCPSite(self._http, host, port).start()
        # Bind the gRPC ports last: an open client port tells callers the member is fully up.
        for url in self.config.listen_client_urls:
            host, port = host_port(url)
            self._grpc.add_insecure_port(f"{host}:{port}")
        await self._grpc.start()
        log.info(
            "coord-server %s serving gRPC on %s and HTTP on %s (data dir %s)",
            self.config.name,
            ",".join(self.config.listen_client_urls),
            ",".join(self.config.listen_client_http_urls),
            self.config.data_dir,
        )

    async def _progress_loop(self) -> None:
        interval = self.config.watch_progress_notify_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            self.watch_hub.progress_tick()

    async def stop(self) -> None:
        """Stop accepting calls, let in-flight ones finish (bounded), then stop the node and close the store."""
        await self._grpc.stop(grace=2.0)
        self._progress.cancel()
        await self.lessor.stop()
        await self.watch_hub.stop()
        await self._http.cleanup()
        await self.node.stop()
        self.backend.close()
