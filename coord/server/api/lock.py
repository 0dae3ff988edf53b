"""The etcd Lock service (v3lockpb): etcd's v3lock server, i.e. clientv3/concurrency.Mutex run on the member.

Lock(name, lease) puts ``name/<lease in hex>`` under the lease (granting a 60 s lease nobody keeps alive when the
request names none) and returns once every key under ``name/`` created before it is gone. Unlock(key) deletes the key.
"""

from __future__ import annotations

import asyncio

import grpc

from coord._proto.etcdserverpb import rpc_pb2
from coord._proto.v3lockpb import v3lock_pb2, v3lock_pb2_grpc
from coord.server.api.local import LocalClient, abort_unknown, create_revision_is, first_created, recipe_error
from coord.server.rejection import Rejected

Context = grpc.aio.ServicerContext[object, object]

# concurrency.ErrSessionExpired: the lock key vanished (its lease expired) while waiting for the earlier holders.
SESSION_EXPIRED = recipe_error("session expired")


class LockService(v3lock_pb2_grpc.LockServicer):
    def __init__(self, client: LocalClient) -> None:
        self._client = client

    async def Lock(self, request: v3lock_pb2.LockRequest, context: Context) -> v3lock_pb2.LockResponse:
        try:
            self._client.bind_caller(context)
            key, header = await self._lock(request.name, request.lease)
        except Rejected as refusal:
            await abort_unknown(context, refusal)
        return v3lock_pb2.LockResponse(header=header, key=key)

    async def _lock(self, name: bytes, lease: int) -> tuple[bytes, rpc_pb2.ResponseHeader]:
        client = self._client
        if lease == 0:
            lease = await client.grant()
        prefix = name + b"/"
        key = prefix + b"%x" % lease
        owner = rpc_pb2.RequestOp(request_range=first_created(prefix))
        resp = await client.txn(
            rpc_pb2.TxnRequest(
                compare=[create_revision_is(key, 0)],
                success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, lease=lease)), owner],
                failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=key)), owner],
            )
        )
        my_rev = resp.header.revision
        if not resp.succeeded:
            my_rev = resp.responses[0].response_range.kvs[0].create_revision
        holder = resp.responses[1].response_range.kvs
        if not holder or holder[0].create_revision == my_rev:
            return key, resp.header
        try:
            await client.wait_deletes(prefix, my_rev - 1)
            mine = client.range(rpc_pb2.RangeRequest(key=key))
        except (Rejected, asyncio.CancelledError):
            # As etcd's Mutex.Lock: give up the place in the queue when waiting fails or the caller goes away.
            client.in_background(client.delete(key), "lock-release")
            raise
        if not mine.kvs:
            raise Rejected(SESSION_EXPIRED)
        return key, mine.header

    async def Unlock(self, request: v3lock_pb2.UnlockRequest, context: Context) -> v3lock_pb2.UnlockResponse:
        try:
            self._client.bind_caller(context)
            resp = await self._client.delete(request.key)
        except Rejected as refusal:
            await abort_unknown(context, refusal)
        return v3lock_pb2.UnlockResponse(header=resp.header)
