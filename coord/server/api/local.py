"""An in-process etcd client for the Lock and Election services, as etcd's v3lock and v3election servers use one.

etcd serves Lock and Election with its own client library (``clientv3/concurrency``) talking to the same member;
coord-server runs the same recipes directly on the node: writes are proposed like any KV request, reads come from a
committed view, and waiting for a key's deletion uses the watch hub (no polling).

Errors: etcd's recipe servers return the client library's errors, which are not gRPC statuses, so every refusal
(``etcdserver: ...``, ``election: ...``, ``session expired``) reaches the caller as code UNKNOWN with etcd's message.

Auth: as etcd's recipe servers act with their caller's credentials, each Lock/Election call first binds its caller
(:meth:`LocalClient.bind_caller`); every read, watch and write the recipe then makes is checked against that user
(reads here, writes by the applier). The binding lives in a context variable, so it follows the call into the tasks
it starts and never leaks into other calls; a call that binds nobody acts as an anonymous user.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Coroutine
from typing import Any, NoReturn

import grpc
from google.protobuf.message import Message

from coord._proto.etcdserverpb import rpc_pb2
from coord._proto.mvccpb import kv_pb2
from coord.errors import COMPACTED, ErrorSpec, EtcdError
from coord.server.api import validation
from coord.server.api.common import Headers, abort
from coord.server.api.kv import propose_checked
from coord.server.auth import AuthGate, AuthInfo
from coord.server.mvcc import kv_ops
from coord.server.mvcc.watchable import WatchHub, WatchStream
from coord.server.node import Node
from coord.server.rejection import Rejected
from coord.server.requests import Kind

log = logging.getLogger(__name__)

# The credentials of the Lock/Election call being served (see LocalClient.bind_caller).
_caller: contextvars.ContextVar[AuthInfo | None] = contextvars.ContextVar("coord_local_caller", default=None)

# concurrency.NewSession's default TTL: the lease Lock and Campaign grant when the request names none.
SESSION_TTL = 60

_RR = rpc_pb2.RangeRequest


def recipe_error(message: str) -> ErrorSpec:
    """How etcd's recipe servers report an error: gRPC code UNKNOWN with the client library's message."""
    return ErrorSpec(grpc.StatusCode.UNKNOWN, message, EtcdError)


async def abort_unknown(context: grpc.aio.ServicerContext[Any, Any], refusal: Rejected) -> NoReturn:
    await abort(context, recipe_error(refusal.spec.message))


def prefix_end(prefix: bytes) -> bytes:
    """clientv3.GetPrefixRangeEnd: the prefix with its last byte below 0xff incremented; "\\0" when there is none."""
    for i in range(len(prefix) - 1, -1, -1):
        if prefix[i] < 0xFF:
            return prefix[:i] + bytes([prefix[i] + 1])
    return b"\x00"


def first_created(prefix: bytes) -> rpc_pb2.RangeRequest:
    """clientv3.WithFirstCreate on a prefix: the key created first."""
    return _RR(key=prefix, range_end=prefix_end(prefix), sort_target=_RR.CREATE, sort_order=_RR.ASCEND, limit=1)


def last_created_before(prefix: bytes, max_create_revision: int) -> rpc_pb2.RangeRequest:
    """clientv3.WithLastCreate + WithMaxCreateRev: the newest key created at or below ``max_create_revision``."""
    return _RR(
        key=prefix,
        range_end=prefix_end(prefix),
        sort_target=_RR.CREATE,
        sort_order=_RR.DESCEND,
        limit=1,
        max_create_revision=max_create_revision,
    )


def create_revision_is(key: bytes, revision: int) -> rpc_pb2.Compare:
    return rpc_pb2.Compare(
        key=key, target=rpc_pb2.Compare.CREATE, result=rpc_pb2.Compare.EQUAL, create_revision=revision
    )


class WatchLost(Exception):
    """The watch ended before the awaited event (server stopping, or its start revision was compacted)."""


class KeyWatch:
    """One watcher on the hub, read as a sequence of event responses (the ``created`` response is skipped)."""

    def __init__(self, hub: WatchHub, request: rpc_pb2.WatchCreateRequest) -> None:
        self._hub = hub
        self._stream: WatchStream = hub.open_stream()
        hub.create(self._stream, request)

    async def next(self) -> rpc_pb2.WatchResponse:
        """The next response carrying events; raises WatchLost when the watcher is canceled or the stream closed."""
        while True:
            response = await self._stream.next_response()
            if response is None or response.canceled:
                if response is not None and response.compact_revision:
                    raise WatchLost(COMPACTED.message)
                raise WatchLost("lost watcher waiting for delete")
            if response.events:
                return response

    def close(self) -> None:
        self._hub.close_stream(self._stream)

    def __enter__(self) -> KeyWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalClient:
    """The KV, Lease and Watch calls the recipes need, run on this member."""

    def __init__(
        self, node: Node, hub: WatchHub, headers: Headers, max_request_bytes: int, max_txn_ops: int, *, gate: AuthGate
    ) -> None:
        self._node = node
        self._gate = gate
        self._hub = hub
        self.headers = headers
        self._max_request_bytes = max_request_bytes
        self._max_txn_ops = max_txn_ops
        self._background: set[asyncio.Task[None]] = set()

    def bind_caller(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        """Make the rest of this call act as the gRPC caller; raises Rejected for an invalid token."""
        _caller.set(self._gate.credentials(context))

    async def _propose(self, kind: Kind, request: Message) -> Message:
        return await propose_checked(self._node, kind, request, _caller.get(), self._max_request_bytes)

    def range(self, request: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
        validation.check_range(request)
        self._gate.check_range(_caller.get(), request.key, request.range_end)
        with self._node.read() as view:
            resp = kv_ops.range_(view, request)
        self.headers.fill(resp.header)
        return resp

    async def txn(self, request: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
        validation.check_txn(request, self._max_txn_ops, key_length=False)
        if kv_ops.served_locally(request):
            self._gate.check_txn(_caller.get(), request)
            with self._node.read() as view:
                resp = kv_ops.txn(view, request, lambda _lease: False)
        else:
            proposed = await self._propose(Kind.TXN, request)
            assert isinstance(proposed, rpc_pb2.TxnResponse)
            resp = proposed
        self.headers.fill(resp.header)
        return resp

    async def delete(self, key: bytes) -> rpc_pb2.DeleteRangeResponse:
        request = rpc_pb2.DeleteRangeRequest(key=key)
        validation.check_delete(request)
        resp = await self._propose(Kind.DELETE_RANGE, request)
        assert isinstance(resp, rpc_pb2.DeleteRangeResponse)
        self.headers.fill(resp.header)
        return resp

    async def grant(self, ttl: int = SESSION_TTL) -> int:
        """Grant a lease nobody keeps alive (what etcd's recipe servers do for a request with lease 0)."""
        grant = rpc_pb2.LeaseGrantRequest(TTL=ttl, ID=self._node.next_id() & (2**63 - 1))
        resp = await self._propose(Kind.LEASE_GRANT, grant)
        assert isinstance(resp, rpc_pb2.LeaseGrantResponse)
        return resp.ID

    def watch(self, request: rpc_pb2.WatchCreateRequest) -> KeyWatch:
        """A watcher on the hub; raises Rejected when the caller may not read the watched range."""
        self._gate.check_watch(_caller.get(), request)
        return KeyWatch(self._hub, request)

    async def wait_delete(self, key: bytes, revision: int) -> None:
        """Return once ``key`` is deleted at or after ``revision`` (concurrency.waitDelete)."""
        request = rpc_pb2.WatchCreateRequest(
            key=key, start_revision=revision, filters=[rpc_pb2.WatchCreateRequest.NOPUT]
        )
        with self.watch(request) as watch:
            while True:
                try:
                    response = await watch.next()
                except WatchLost as lost:
                    raise Rejected(recipe_error(str(lost))) from None
                if any(event.type == kv_pb2.Event.DELETE for event in response.events):
                    return

    async def wait_deletes(self, prefix: bytes, max_create_revision: int) -> rpc_pb2.ResponseHeader:
        """Return once no key under ``prefix`` created at or below ``max_create_revision`` is left
        (concurrency.waitDeletes): wait for the newest such key's deletion, then look again."""
        while True:
            resp = self.range(last_created_before(prefix, max_create_revision))
            if not resp.kvs:
                return resp.header
            await self.wait_delete(resp.kvs[0].key, resp.header.revision + 1)

    def in_background(self, work: Coroutine[Any, Any, object], what: str) -> None:
        """Run clean-up that must outlive a canceled RPC (etcd uses the client's own context for it)."""

        async def run() -> None:
            try:
                await work
            except Exception as exc:  # best effort, as in etcd: the lease expiry removes the key anyway
                log.info("%s failed: %s", what, exc)

        task = asyncio.get_running_loop().create_task(run(), name=f"coord-{what}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)
