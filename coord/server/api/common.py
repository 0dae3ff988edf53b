"""What every servicer shares: the response header and turning refusals into gRPC statuses."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn

import grpc

from coord._proto.etcdserverpb import rpc_pb2
from coord.errors import ErrorSpec
from coord.server.node import Node


class Headers:
    """Fills ResponseHeader as etcd does: cluster and member id, raft term, and the current revision if unset."""

    def __init__(self, node: Node, cluster_id: int) -> None:
        self._node = node
        self.cluster_id = cluster_id
        self.member_id = node.member_id

    def make(self, revision: int) -> rpc_pb2.ResponseHeader:
        """A complete header at ``revision``."""
        return rpc_pb2.ResponseHeader(
            cluster_id=self.cluster_id, member_id=self.member_id, revision=revision, raft_term=self._node.term
        )

    def fill(self, header: rpc_pb2.ResponseHeader, with_revision: bool = True) -> None:
        """Complete ``header``; ``with_revision=False`` leaves the revision unset, as etcd's Cluster service does."""
        header.cluster_id = self.cluster_id
        header.member_id = self.member_id
        header.raft_term = self._node.term
        if with_revision and header.revision == 0:
            with self._node.read() as view:
                header.revision = view.current_revision


async def abort(context: grpc.aio.ServicerContext[object, object], spec: ErrorSpec) -> NoReturn:
    """End the call with etcd's status for ``spec``."""
    await context.abort(spec.code, spec.message)
    raise AssertionError("unreachable: abort raises")


async def not_yet(context: grpc.aio.ServicerContext[object, object], what: str) -> NoReturn:
    """Refuse an RPC this server version does not serve, with UNIMPLEMENTED and a message naming it."""
    await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"coord: {what} is not supported by this server version yet")
    raise AssertionError("unreachable: abort raises")


def checked_first(
    handler: Any,
    check: Callable[[Any, Any], Awaitable[None]],
    request_deserializer: Callable[[bytes], Any] | None = None,
) -> Any:
    """``handler`` (a unary-request grpc method handler) with ``await check(request, context)`` run before the
    servicer method; ``check`` ends the call by aborting. A response-streaming method keeps its style (grpc.aio serves
    an async generator or a coroutine writing to its context). ``request_deserializer`` replaces the handler's."""
    deserializer = request_deserializer or handler.request_deserializer
    if handler.unary_unary is not None:
        inner: Any = handler.unary_unary

        async def unary(request: Any, context: Any) -> Any:
            await check(request, context)
            return await inner(request, context)

        return grpc.unary_unary_rpc_method_handler(
            unary, request_deserializer=deserializer, response_serializer=handler.response_serializer
        )
    inner_stream: Any = handler.unary_stream

    async def stream_gen(request: Any, context: Any) -> AsyncIterator[Any]:
        await check(request, context)
        async for item in inner_stream(request, context):
            yield item

    async def stream_writer(request: Any, context: Any) -> None:
        await check(request, context)
        await inner_stream(request, context)

    return grpc.unary_stream_rpc_method_handler(
        stream_gen if inspect.isasyncgenfunction(inner_stream) else stream_writer,
        request_deserializer=deserializer,
        response_serializer=handler.response_serializer,
    )
