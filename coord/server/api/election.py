"""The etcd Election service (v3electionpb): etcd's v3election server, i.e. clientv3/concurrency.Election run on
the member.

A candidate's key is ``name/<lease in hex>``; the leader is the key under ``name/`` created first. As in etcd, a
request whose lease is 0 (Campaign, and also Proclaim and Resign with a LeaderKey whose lease is 0) first grants a
60 s lease nobody keeps alive.
"""

from __future__ import annotations

import asyncio

import grpc

from coord._proto.etcdserverpb import rpc_pb2
from coord._proto.mvccpb import kv_pb2
from coord._proto.v3electionpb import v3election_pb2, v3election_pb2_grpc
from coord.server.api.local import (
    LocalClient,
    WatchLost,
    abort_unknown,
    create_revision_is,
    first_created,
    prefix_end,
    recipe_error,
)
from coord.server.rejection import Rejected

Context = grpc.aio.ServicerContext[object, object]
ObserveContext = grpc.aio.ServicerContext[v3election_pb2.LeaderRequest, v3election_pb2.LeaderResponse]

NOT_LEADER = recipe_error("election: not leader")
NO_LEADER = recipe_error("election: no leader")
MISSING_LEADER_KEY = recipe_error('"leader" field must be provided')


class ElectionService(v3election_pb2_grpc.ElectionServicer):
    def __init__(self, client: LocalClient) -> None:
        self._client = client

    async def Campaign(
        self, request: v3election_pb2.CampaignRequest, context: Context
    ) -> v3election_pb2.CampaignResponse:
        try:
            self._client.bind_caller(context)
            return await self._campaign(request)
        except Rejected as refusal:
            await abort_unknown(context, refusal)

    async def _campaign(self, request: v3election_pb2.CampaignRequest) -> v3election_pb2.CampaignResponse:
        client = self._client
        lease = request.lease or await client.grant()
        prefix = request.name + b"/"
        key = prefix + b"%x" % lease
        resp = await client.txn(
            rpc_pb2.TxnRequest(
                compare=[create_revision_is(key, 0)],
                success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=request.value, lease=lease))],
                failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=key))],
            )
        )
        leader = v3election_pb2.LeaderKey(name=request.name, key=key, rev=resp.header.revision, lease=lease)
        if not resp.succeeded:
            kv = resp.responses[0].response_range.kvs[0]
            leader.rev = kv.create_revision
            if kv.value != request.value:
                try:
                    await self._proclaim(leader, request.value)
                except Rejected:
                    await self._resign(leader)
                    raise
        try:
            await client.wait_deletes(prefix, leader.rev - 1)
        except asyncio.CancelledError:
            # As etcd's Election.Campaign: a candidate whose caller went away withdraws.
            client.in_background(self._resign(leader), "campaign-withdraw")
            raise
        return v3election_pb2.CampaignResponse(header=resp.header, leader=leader)

    async def Proclaim(
        self, request: v3election_pb2.ProclaimRequest, context: Context
    ) -> v3election_pb2.ProclaimResponse:
        try:
            self._client.bind_caller(context)
            if not request.HasField("leader"):
                raise Rejected(MISSING_LEADER_KEY)
            leader = v3election_pb2.LeaderKey()
            leader.CopyFrom(request.leader)
            if leader.lease == 0:
                leader.lease = await self._client.grant()
            header = await self._proclaim(leader, request.value)
        except Rejected as refusal:
            await abort_unknown(context, refusal)
        return v3election_pb2.ProclaimResponse(header=header)

    async def _proclaim(self, leader: v3election_pb2.LeaderKey, value: bytes) -> rpc_pb2.ResponseHeader:
        resp = await self._client.txn(
            rpc_pb2.TxnRequest(
                compare=[create_revision_is(leader.key, leader.rev)],
                success=[
                    rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=leader.key, value=value, lease=leader.lease))
                ],
            )
        )
        if not resp.succeeded:
            raise Rejected(NOT_LEADER)
        return resp.header

    async def Resign(self, request: v3election_pb2.ResignRequest, context: Context) -> v3election_pb2.ResignResponse:
        """Delete the leader key if it is still the one elected; not being the leader is no error (as in etcd)."""
        try:
            self._client.bind_caller(context)
            if not request.HasField("leader"):
                raise Rejected(MISSING_LEADER_KEY)
            if request.leader.lease == 0:
                await self._client.grant()  # etcd's election server opens a session, and so grants a lease, here too
            header = await self._resign(request.leader)
        except Rejected as refusal:
            await abort_unknown(context, refusal)
        return v3election_pb2.ResignResponse(header=header)

    async def _resign(self, leader: v3election_pb2.LeaderKey) -> rpc_pb2.ResponseHeader:
        resp = await self._client.txn(
            rpc_pb2.TxnRequest(
                compare=[create_revision_is(leader.key, leader.rev)],
                success=[rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=leader.key))],
            )
        )
        return resp.header

    async def Leader(self, request: v3election_pb2.LeaderRequest, context: Context) -> v3election_pb2.LeaderResponse:
        try:
            self._client.bind_caller(context)
            resp = self._client.range(first_created(request.name + b"/"))
            if not resp.kvs:
                raise Rejected(NO_LEADER)
        except Rejected as refusal:
            await abort_unknown(context, refusal)
        return v3election_pb2.LeaderResponse(header=resp.header, kv=resp.kvs[0])

    async def Observe(  # type: ignore[override]
        self, request: v3election_pb2.LeaderRequest, context: ObserveContext
    ) -> None:
        """Stream the leader and each change of its value (concurrency.Election.Observe): with no leader, wait for the
        first key put under the prefix; when the leader's key is deleted, look for the next leader. The stream ends
        (status OK) if a watch is lost, as in etcd."""
        try:
            self._client.bind_caller(context)
            await self._observe(request.name + b"/", context)
        except WatchLost:
            return
        except Rejected as refusal:
            await abort_unknown(context, refusal)

    async def _observe(self, prefix: bytes, context: ObserveContext) -> None:
        client = self._client
        while True:
            resp = client.range(first_created(prefix))
            if resp.kvs:
                header, kv = resp.header, resp.kvs[0]
            else:
                header, kv = await self._first_put(prefix, resp.header.revision)
            await context.write(v3election_pb2.LeaderResponse(header=header, kv=kv))
            with client.watch(rpc_pb2.WatchCreateRequest(key=kv.key, start_revision=header.revision + 1)) as watch:
                deleted = False
                while not deleted:
                    changes = await watch.next()
                    for event in changes.events:
                        if event.type == kv_pb2.Event.DELETE:
                            deleted = True
                            break
                        await context.write(v3election_pb2.LeaderResponse(header=changes.header, kv=event.kv))

    async def _first_put(self, prefix: bytes, revision: int) -> tuple[rpc_pb2.ResponseHeader, kv_pb2.KeyValue]:
        """The first key put under ``prefix`` from ``revision`` on, with the header at its revision."""
        request = rpc_pb2.WatchCreateRequest(key=prefix, range_end=prefix_end(prefix), start_revision=revision)
        with self._client.watch(request) as watch:
            while True:
                changes = await watch.next()
                for event in changes.events:
                    if event.type == kv_pb2.Event.PUT:
                        header = rpc_pb2.ResponseHeader()
                        header.CopyFrom(changes.header)
                        header.revision = event.kv.mod_revision
                        return header, event.kv
