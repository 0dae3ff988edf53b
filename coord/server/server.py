"""Assembles a member: storage, Raft node, peer transport, gRPC services and HTTP endpoints; starts and stops them in
order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import grpc
from aiohttp import web

from coord._proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from coord._proto.raftpb import raft_pb2, raft_pb2_grpc
from coord._proto.v3electionpb import v3election_pb2_grpc
from coord._proto.v3lockpb import v3lock_pb2_grpc
from coord.errors import LEADER_CHANGED, NO_LEADER
from coord.server.api.auth import AdminOnly, AuthService
from coord.server.api.cluster import ClusterService
from coord.server.api.common import Headers
from coord.server.api.election import ElectionService
from coord.server.api.http import make_app
from coord.server.api.kv import KVService
from coord.server.api.lease import LeaseService
from coord.server.api.local import LocalClient
from coord.server.api.lock import LockService
from coord.server.api.maintenance import MaintenanceService
from coord.server.api.validation import DecodeGuard
from coord.server.api.watch import WatchService
from coord.server.auth import AuthGate, TokenConfigError, provider_from_flag
from coord.server.bootstrap import bootstrap_new_cluster
from coord.server.config import ServerConfig, host_port
from coord.server.lease import Lessor, StoredLease, min_lease_ttl, stored_leases
from coord.server.membership import Member, store_identity, stored_identity
from coord.server.metrics import WATCHERS, Metrics
from coord.server.mvcc.watchable import WatchHub
from coord.server.node import Node, NodeOptions
from coord.server.peer.client import PeerClient, fetch_members
from coord.server.peer.service import PeerService
from coord.server.peer.transport import Transport
from coord.server.raft import SnapshotMetadata
from coord.server.rejection import Rejected
from coord.server.requests import Kind
from coord.server.storage import Backend
from coord.server.tls import ServerTLS, TLSConfigError

log = logging.getLogger(__name__)

# Room for protobuf framing on top of the largest request, as etcd allows.
_GRPC_OVERHEAD_BYTES = 512 * 1024
_JOIN_TIMEOUT_S = 30.0


class MemberServer:
    """One coord-server member. ``await start()`` listens; ``await stop()`` drains and closes everything."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self._initial = config.initial_members()
        if config.name not in self._initial:
            raise SystemExit(f"coord-server: --initial-cluster has no member named {config.name!r}")
        if sorted(self._initial[config.name]) != sorted(config.initial_advertise_peer_urls):
            raise SystemExit(
                f"coord-server: --initial-cluster lists {config.name}={','.join(self._initial[config.name])}, but "
                f"--initial-advertise-peer-urls is {','.join(config.initial_advertise_peer_urls)}"
            )
        try:
            tokens = provider_from_flag(config.auth_token, config.auth_token_ttl)
        except TokenConfigError as exc:
            raise SystemExit(f"coord-server: {exc}") from None
        try:
            self.tls = ServerTLS.from_config(config)
        except TLSConfigError as exc:
            raise SystemExit(f"coord-server: {exc}") from None
        self._peer_dialer = self.tls.peer_dialer()
        # The map is address space, not disk: room for the quota plus headroom for copy-on-write pages.
        self.backend = Backend(config.data_dir, map_size=config.quota_backend_bytes * 2 + 256 * 1024**2)
        self.auth_gate = AuthGate(self.backend, tokens, config.bcrypt_cost, self.tls.client_cert_auth)
        self.stopped = asyncio.Event()
        self.failed = False  # the member stopped itself because it could not go on: the process exits non-zero
        self._publisher: asyncio.Task[None] | None = None
        self._progress: asyncio.Task[None] | None = None
        self._removal: asyncio.Task[None] | None = None
        self._bootstrapped: SnapshotMetadata | None = None
        self._seed_peers: dict[int, list[str]] = {}

    # -- identity and bootstrap -------------------------------------------------------------------------------------

    async def _identity(self) -> tuple[int, int]:
        """(member id, cluster id): stored ones, or a new cluster's (bootstrapped here), or an existing cluster's
        (asked from its members; this member then waits for the leader's snapshot)."""
        stored = stored_identity(self.backend)
        if stored is not None:
            return stored
        token = self.config.initial_cluster_token
        if self.config.initial_cluster_state == "new":
            with self.backend.write() as txn:
                new = bootstrap_new_cluster(self.backend, txn, self._initial, self.config.name, token)
            self._bootstrapped = new.raft
            return new.member_id, new.cluster_id
        return await self._join_existing()

    async def _join_existing(self) -> tuple[int, int]:
        mine = sorted(self.config.initial_advertise_peer_urls)
        others = [urls for name, urls in self._initial.items() if name != self.config.name]
        deadline = time.monotonic() + _JOIN_TIMEOUT_S
        last_error = "no other member listed in --initial-cluster"
        while others and time.monotonic() < deadline:
            for urls in others:
                try:
                    resp = await fetch_members(urls, timeout=2.0, dialer=self._peer_dialer)
                except grpc.aio.AioRpcError as exc:
                    last_error = f"{urls[0]}: {exc.details()}"
                    continue
                for m in resp.members:
                    # Until the leader's snapshot brings the member table, reach the others at these URLs.
                    self._seed_peers[m.id] = list(m.peer_urls)
                for m in resp.members:
                    if sorted(m.peer_urls) == mine:
                        with self.backend.write() as txn:
                            store_identity(self.backend, txn, m.id, resp.cluster_id)
                        return m.id, resp.cluster_id
                last_error = f"the cluster has no member with peer URLs {','.join(mine)} (add it with member add)"
            await asyncio.sleep(0.5)
        raise SystemExit(f"coord-server: cannot join the existing cluster: {last_error}")

    # -- assembly ----------------------------------------------------------------------------------------------------

    def _assemble(self, mid: int, cid: int) -> None:
        config = self.config
        self.member_id, self.cluster_id = mid, cid
        self.node = Node(
            self.backend,
            mid,
            NodeOptions(
                heartbeat_ms=config.heartbeat_interval_ms,
                election_ms=config.election_timeout_ms,
                snapshot_count=config.snapshot_count,
                min_lease_ttl=min_lease_ttl(config.election_timeout_ms),
                request_timeout_s=5.0 + 2 * config.election_timeout_ms / 1000,
                quota_bytes=config.quota_backend_bytes,
            ),
        )
        if self._bootstrapped is not None:
            self.node.storage.bootstrapped(self._bootstrapped)
        self.transport = Transport(
            mid,
            cid,
            self.backend,
            self.node.report_unreachable,
            self.node.report_snapshot,
            self.node.spool_dir(),
            self._peer_dialer,
        )
        self.peer_client = PeerClient(self._peer_dialer)
        headers = Headers(self.node, cid)
        gate = self.auth_gate
        self.metrics = Metrics()
        # Metrics outermost, so refusals by the others are counted; the JSON gateway runs the same list.
        # AdminOnly: maintenance and membership calls that need the root role when auth is enabled.
        # DecodeGuard first: etcd (grpc-go) decodes a request before any interceptor runs. Only the TLS checks (the
        # CRL's) come before it: etcd refuses those callers' connections before anything is decoded.
        self._interceptors = [
            *self.tls.client_interceptors(),
            DecodeGuard(),
            self.metrics.interceptor(),
            AdminOnly(gate),
        ]
        self._grpc = grpc.aio.server(
            interceptors=self._interceptors,
            options=[
                ("grpc.max_receive_message_length", config.max_request_bytes + _GRPC_OVERHEAD_BYTES),
                ("grpc.max_send_message_length", 2**31 - 1),
                ("grpc.max_concurrent_streams", 2**31 - 1),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 5000),
                ("grpc.http2.max_pings_without_data", 0),
            ],
        )
        self.kv_service = KVService(self.node, headers, config.max_request_bytes, config.max_txn_ops, gate=gate)
        rpc_pb2_grpc.add_KVServicer_to_server(self.kv_service, self._grpc)
        self.watch_hub = WatchHub(
            self.node.read, headers.make, fragment_bytes=config.max_request_bytes + _GRPC_OVERHEAD_BYTES
        )
        self.node.add_change_listener(self.watch_hub.on_change)
        self.watch_service = WatchService(self.watch_hub, gate=gate, headers=headers)
        rpc_pb2_grpc.add_WatchServicer_to_server(self.watch_service, self._grpc)
        self.lessor = Lessor(
            self._expire_lease,
            checkpoint=self._propose_checkpoint if config.lease_checkpoint else None,
            load=self._stored_leases,
            checkpoint_interval=config.lease_checkpoint_interval_ms / 1000,
            extend_seconds=config.election_timeout_ms / 1000,
        )
        self.node.add_lease_listener(self._on_lease_changes)
        self.node.add_leader_listener(self._on_leader_change)
        self.node.add_restore_listener(self._on_restore)
        self.lease_service = LeaseService(self.node, self.lessor, headers, self._forward_lease, gate=gate)
        rpc_pb2_grpc.add_LeaseServicer_to_server(self.lease_service, self._grpc)
        self.maintenance_service = MaintenanceService(self.node, headers)
        rpc_pb2_grpc.add_MaintenanceServicer_to_server(self.maintenance_service, self._grpc)
        self.cluster_service = ClusterService(self.node, headers, config.initial_cluster_token)
        rpc_pb2_grpc.add_ClusterServicer_to_server(self.cluster_service, self._grpc)
        self.auth_service = AuthService(self.node, headers, gate, config.max_request_bytes)
        rpc_pb2_grpc.add_AuthServicer_to_server(self.auth_service, self._grpc)
        local = LocalClient(self.node, self.watch_hub, headers, config.max_request_bytes, config.max_txn_ops, gate=gate)
        self.lock_service = LockService(local)
        v3lock_pb2_grpc.add_LockServicer_to_server(self.lock_service, self._grpc)
        self.election_service = ElectionService(local)
        v3election_pb2_grpc.add_ElectionServicer_to_server(self.election_service, self._grpc)
        app = make_app(
            self.node,
            servicers=[
                self.kv_service,
                self.watch_service,
                self.lease_service,
                self.maintenance_service,
                self.cluster_service,
                self.auth_service,
                self.lock_service,
                self.election_service,
            ],
            interceptors=self._interceptors,
            metrics=self.metrics,
            lessor=self.lessor,
            max_message_bytes=config.max_request_bytes + _GRPC_OVERHEAD_BYTES,
        )
        self.metrics.gauge_callback(WATCHERS, "Total number of watchers.", self.watch_hub.watcher_count)
        # handler_cancellation: a client that closes a streaming gateway call (a watch) cancels it at once.
        self._http = web.AppRunner(app, access_log=None, handler_cancellation=True)

        self._peer_grpc = grpc.aio.server(
            interceptors=self.tls.peer_interceptors(),
            options=[
                ("grpc.max_receive_message_length", 2**31 - 1),
                ("grpc.max_send_message_length", 2**31 - 1),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 1000),
                ("grpc.http2.max_pings_without_data", 0),
            ],
        )
        raft_pb2_grpc.add_PeerServicer_to_server(
            PeerService(
                lambda: self.cluster_id,
                self.node.receive,
                self.node.spool_dir,
                self._members_response,
                self._peer_keep_alive,
                self._peer_time_to_live,
            ),
            self._peer_grpc,
        )
        self.node.add_members_listener(self._on_members)

    # -- leases ------------------------------------------------------------------------------------------------------

    def _on_lease_changes(self, changes: list[tuple[int, int]]) -> None:
        for lease_id, ttl in changes:
            if ttl:
                self.lessor.on_granted(lease_id, ttl)
            else:
                self.lessor.on_revoked(lease_id)

    def _on_leader_change(self, leader: int, is_me: bool) -> None:
        if is_me:
            self.lessor.lead()
        else:
            self.lessor.demote()

    def _on_restore(self) -> None:
        self.lessor.restore(self._stored_leases())
        self.watch_hub.resync()

    def _stored_leases(self) -> dict[int, StoredLease]:
        with self.backend.read() as txn:
            return stored_leases(self.backend, txn)

    async def _propose_checkpoint(self, request: rpc_pb2.LeaseCheckpointRequest) -> None:
        await self.node.propose(*self.node.encode(Kind.LEASE_CHECKPOINT, request))

    async def _expire_lease(self, lease_id: int) -> None:
        await self.lease_service.revoke(lease_id)

    async def _forward_lease(self, keep_alive: bool, lease_id: int) -> tuple[int, int]:
        """Ask the leader for a lease's (TTL, granted TTL); TTL -1 means no such lease. Raises Rejected."""
        leader = self.node.leader_id
        urls = self.transport.peer_urls(leader) if leader else None
        if not urls:
            raise Rejected(NO_LEADER)
        stub = await self.peer_client.stub(leader, urls)
        call = stub.LeaseKeepAlive if keep_alive else stub.LeaseTimeToLive
        try:
            resp = await call(raft_pb2.LeaseRequest(id=lease_id), timeout=self.node.options.request_timeout_s)  # type: ignore[misc]
        except grpc.aio.AioRpcError:
            raise Rejected(NO_LEADER) from None
        if resp.not_leader:
            raise Rejected(LEADER_CHANGED)
        return resp.ttl, resp.granted_ttl

    async def _peer_keep_alive(self, lease_id: int) -> raft_pb2.LeaseResponse:
        if not self.node.is_leader:
            return raft_pb2.LeaseResponse(not_leader=True)
        ttl = self.lessor.keep_alive(lease_id)
        return raft_pb2.LeaseResponse(ttl=ttl if ttl else -1)

    async def _peer_time_to_live(self, lease_id: int) -> raft_pb2.LeaseResponse:
        if not self.node.is_leader:
            return raft_pb2.LeaseResponse(not_leader=True)
        remaining = self.lessor.remaining(lease_id)
        if remaining is None:
            return raft_pb2.LeaseResponse(ttl=-1)
        return raft_pb2.LeaseResponse(ttl=remaining[0], granted_ttl=remaining[1])

    # -- membership --------------------------------------------------------------------------------------------------

    def _members_response(self) -> raft_pb2.MembersResponse:
        return raft_pb2.MembersResponse(
            cluster_id=self.cluster_id,
            leader=self.node.leader_id,
            members=[
                raft_pb2.Member(
                    id=m.id, name=m.name, peer_urls=m.peer_urls, client_urls=m.client_urls, is_learner=m.is_learner
                )
                for m in self.node.members.values()
            ],
        )

    def _on_members(self, members: dict[int, Member]) -> None:
        self.transport.set_peers({m.id: m.peer_urls for m in members.values()})

    async def _publish_attributes(self) -> None:
        """Record this member's name and client URLs in the replicated member table (etcd's "publish")."""
        me = rpc_pb2.Member(ID=self.member_id, name=self.config.name, clientURLs=self.config.advertise_client_urls)
        while True:
            current = self.node.members.get(self.member_id)
            if current is not None and current.name == me.name and current.client_urls == list(me.clientURLs):
                return
            try:
                await self.node.propose(*self.node.encode(Kind.MEMBER_ATTR, me))
            except Rejected as refusal:
                log.debug("publishing member attributes: %s; retrying", refusal.spec.message)
                await asyncio.sleep(0.2)

    # -- lifecycle ---------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        # The peer port opens first: a member joining an existing cluster must be reachable to get its snapshot.
        mid, cid = await self._identity()
        self._assemble(mid, cid)
        for url in self.config.listen_peer_urls:
            self.tls.add_peer_port(self._peer_grpc, url)
        await self._peer_grpc.start()
        peers = dict(self._seed_peers)
        peers.update({m.id: m.peer_urls for m in self.node.members.values()})
        self.transport.set_peers(peers)
        self.lessor.restore(self._stored_leases())
        self.lessor.start()
        self.watch_hub.start()
        await self.node.start(self.transport)
        self._progress = asyncio.create_task(self._progress_loop(), name="coord-watch-progress")
        self._publisher = asyncio.create_task(self._publish_attributes(), name="coord-publish")
        # As etcd, serve clients only once this member's name and client URLs are in the replicated member table
        # (immediate on a restart: they are already there).
        await self._publisher
        self._removal = asyncio.create_task(self._watch_removal(), name="coord-removal")
        await self._http.setup()
        for url in self.config.listen_client_http_urls:
            host, port = host_port(url)
            await web.TCPSite(self._http, host, port, ssl_context=self.tls.http_ssl_context(url)).start()
        # Bind the gRPC client ports last: an open client port tells callers the member is fully up.
        for url in self.config.listen_client_urls:
            self.tls.add_client_port(self._grpc, url)
        await self._grpc.start()
        log.info(
            "coord-server %s (member %x, cluster %x) serving gRPC on %s, HTTP on %s, peers on %s (data dir %s)",
            self.config.name,
            mid,
            cid,
            ",".join(self.config.listen_client_urls),
            ",".join(self.config.listen_client_http_urls),
            ",".join(self.config.listen_peer_urls),
            self.config.data_dir,
        )

    async def _watch_removal(self) -> None:
        removed = asyncio.create_task(self.node.removed.wait())
        halted = asyncio.create_task(self.node.halted.wait())
        try:
            await asyncio.wait([removed, halted], return_when=asyncio.FIRST_COMPLETED)
        finally:
            removed.cancel()
            halted.cancel()
        if self.node.halted.is_set():
            log.error("this member cannot go on (see the error above); shutting down")
            self.failed = True
        else:
            log.warning("the member has been permanently removed from the cluster; shutting down")
        self.stopped.set()

    async def _progress_loop(self) -> None:
        interval = self.config.watch_progress_notify_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            self.watch_hub.progress_tick()

    async def stop(self) -> None:
        """Stop accepting calls, let in-flight ones finish (bounded), then stop the node and close the store."""
        await self._grpc.stop(grace=2.0)
        for task in (self._progress, self._publisher, self._removal):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.lessor.stop()
        await self.watch_hub.stop()
        await self._http.cleanup()
        await self.node.stop()
        await self.transport.stop()
        await self.peer_client.close()
        await self._peer_grpc.stop(grace=0.5)
        self.backend.close()
