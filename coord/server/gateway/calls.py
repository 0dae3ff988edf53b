"""Calling the member's grpc.aio servicers in-process, as the gRPC server would.

:class:`ServiceTable` collects the method handlers of servicer objects (through the generated
``add_*Servicer_to_server`` functions) and runs the same server interceptors as the gRPC server (metrics, auth) before
reaching them. :class:`GatewayContext` is the ``grpc.aio.ServicerContext`` the servicers see: it carries the request
metadata (the HTTP ``Authorization`` header becomes the ``token`` metadata, as etcd's gateway passes it), feeds
streamed requests to ``read()`` and hands ``write()`` responses to the HTTP side. A call ends with a :class:`Status`
computed exactly as grpc.aio computes it: the code and details given to ``abort``, else those set on the context, else
UNKNOWN with ``Unexpected <class ...>: ...`` for an exception; a method nobody registered is UNIMPLEMENTED ``Method not
found!``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

import grpc
import grpc.aio

from coord._proto.etcdserverpb import rpc_pb2_grpc
from coord._proto.v3electionpb import v3election_pb2_grpc
from coord._proto.v3lockpb import v3lock_pb2_grpc

log = logging.getLogger(__name__)

# Servicer base class -> the generated function that registers such a servicer on a server.
_REGISTRARS: list[tuple[type, Callable[[Any, Any], None]]] = [
    (rpc_pb2_grpc.KVServicer, rpc_pb2_grpc.add_KVServicer_to_server),
    (rpc_pb2_grpc.WatchServicer, rpc_pb2_grpc.add_WatchServicer_to_server),
    (rpc_pb2_grpc.LeaseServicer, rpc_pb2_grpc.add_LeaseServicer_to_server),
    (rpc_pb2_grpc.ClusterServicer, rpc_pb2_grpc.add_ClusterServicer_to_server),
    (rpc_pb2_grpc.MaintenanceServicer, rpc_pb2_grpc.add_MaintenanceServicer_to_server),
    (rpc_pb2_grpc.AuthServicer, rpc_pb2_grpc.add_AuthServicer_to_server),
    (v3lock_pb2_grpc.LockServicer, v3lock_pb2_grpc.add_LockServicer_to_server),
    (v3election_pb2_grpc.ElectionServicer, v3election_pb2_grpc.add_ElectionServicer_to_server),
]

if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]
    Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    Handler = grpc.RpcMethodHandler
    Interceptor = grpc.aio.ServerInterceptor
ResponseSink = Callable[[Any], Awaitable[None]]

# What read() returns once the client half-closed (grpc.aio.EOF; the type stubs do not declare it).
EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Status:
    """How a call ended: a gRPC status code and its details (empty for OK)."""

    code: grpc.StatusCode
    details: str = ""

    @property
    def ok(self) -> bool:
        return self.code == grpc.StatusCode.OK


OK = Status(grpc.StatusCode.OK)


class CallFailed(Exception):
    """A call ended with a non-OK status."""

    def __init__(self, status: Status) -> None:
        super().__init__(f"{status.code.name}: {status.details}")
        self.status = status


class _CallDetails(grpc.HandlerCallDetails):
    def __init__(self, method: str, metadata: tuple[tuple[str, str], ...]) -> None:
        self.method = method
        self.invocation_metadata = metadata


class _Collector:
    """Stands in for a grpc server while a generated ``add_*Servicer_to_server`` registers a servicer."""

    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}

    def add_generic_rpc_handlers(self, handlers: Iterable[object]) -> None:
        pass  # the same handlers also arrive through add_registered_method_handlers

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Handler]) -> None:
        for name, handler in handlers.items():
            self.handlers[f"/{service}/{name}"] = handler


class ServiceTable:
    """The servicers the gateway can call, behind the gRPC server's interceptors.

    Usage::

        table = ServiceTable([kv_service, watch_service, lease_service], interceptors=[metrics.interceptor()])
        handler = await table.resolve("/etcdserverpb.KV/Range", metadata)

    Every servicer must derive from one of the generated etcd servicer base classes; others raise TypeError.
    """

    def __init__(self, servicers: Sequence[object], interceptors: Sequence[Interceptor] = ()) -> None:
        collector = _Collector()
        for servicer in servicers:
            for base, register in _REGISTRARS:
                if isinstance(servicer, base):
                    register(servicer, collector)
                    break
            else:
                raise TypeError(f"{type(servicer).__name__} is not an etcd servicer")
        self._handlers = collector.handlers
        self._interceptors = tuple(interceptors)

    async def resolve(self, method: str, metadata: tuple[tuple[str, str], ...]) -> Handler | None:
        """The handler for ``method`` after the interceptors (None if nobody serves it), as grpc.aio finds it."""
        details = _CallDetails(method, metadata)

        async def run(index: int, call_details: grpc.HandlerCallDetails) -> Handler | None:
            if index == len(self._interceptors):
                return self._handlers.get(call_details.method)
            return await self._interceptors[index].intercept_service(
                lambda next_details: run(index + 1, next_details),  # type: ignore[arg-type,return-value]
                call_details,
            )

        return await run(0, details)


class GatewayContext(grpc.aio.ServicerContext[Any, Any]):
    """The servicer context of one gateway call.

    ``requests`` feeds ``read()``: a request message, or ``EOF`` (``grpc.aio.EOF``) once the client half-closed.
    ``sink`` gets every message passed to ``write()``. ``abort()`` raises ``grpc.aio.AbortError`` as grpc.aio does.
    """

    def __init__(
        self,
        metadata: tuple[tuple[str, str], ...],
        peer: str,
        requests: asyncio.Queue[Any] | None = None,
        sink: ResponseSink | None = None,
    ) -> None:
        self._metadata = metadata
        self._peer = peer
        self._requests = requests
        self._sink = sink
        self._code: grpc.StatusCode | None = None
        self._details = ""
        self._trailing: Any = ()
        self._done_callbacks: list[Callable[[Any], None]] = []
        self._cancelled = False
        self._done = False

    # -- the call's messages -----------------------------------------------------------------------------------------

    async def read(self) -> Any:
        if self._requests is None:
            raise RuntimeError("read() is only valid in a client-streaming call")
        return await self._requests.get()

    async def write(self, message: Any) -> None:
        if self._sink is None:
            raise RuntimeError("write() is only valid in a server-streaming call")
        await self._sink(message)

    async def send_initial_metadata(self, initial_metadata: Any) -> None:
        pass  # the gateway forwards no gRPC metadata to the HTTP client

    # -- status ----------------------------------------------------------------------------------------------------

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> NoReturn:
        if code == grpc.StatusCode.OK:
            raise ValueError("abort() needs a non-OK status code")
        self._code = code
        self._details = details
        self._trailing = trailing_metadata
        raise grpc.aio.AbortError()

    async def abort_with_status(self, status: Any) -> NoReturn:
        await self.abort(status.code, status.details, status.trailing_metadata)

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code  # type: ignore[return-value]  # None until set, as in grpc.aio

    def details(self) -> str:
        return self._details

    def set_trailing_metadata(self, trailing_metadata: Any) -> None:
        self._trailing = trailing_metadata

    def trailing_metadata(self) -> Any:
        return self._trailing

    # -- call properties -------------------------------------------------------------------------------------------

    def invocation_metadata(self) -> Any:
        return self._metadata

    def peer(self) -> str:
        return self._peer

    def peer_identities(self) -> None:
        return None

    def peer_identity_key(self) -> None:
        return None

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}

    def time_remaining(self) -> Any:
        return None  # the gateway sets no deadline, as etcd's does not

    def set_compression(self, compression: grpc.Compression) -> None:
        pass

    def disable_next_message_compression(self) -> None:
        pass

    def add_done_callback(self, callback: Any) -> None:
        self._done_callbacks.append(callback)

    def cancelled(self) -> bool:
        return self._cancelled

    def done(self) -> bool:
        return self._done

    def finish(self, cancelled: bool) -> None:
        """Mark the call over and run the done callbacks (errors in them are logged)."""
        self._done = True
        self._cancelled = cancelled
        for callback in self._done_callbacks:
            try:
                callback(self)
            except Exception:
                log.exception("done callback %r of a gateway call failed", callback)

    def status_after(self, error: BaseException | None) -> Status:
        """The call's status once the handler returned (``error`` None) or raised ``error``."""
        if isinstance(error, grpc.aio.AbortError):
            return Status(self._code or grpc.StatusCode.UNKNOWN, self._details)
        if error is not None:
            return Status(self._code or grpc.StatusCode.UNKNOWN, f"Unexpected {type(error)}: {error}")
        if self._code is not None and self._code != grpc.StatusCode.OK:
            return Status(self._code, self._details)
        return OK


async def _requests_of(queue: asyncio.Queue[Any]) -> AsyncIterator[Any]:
    while True:
        item = await queue.get()
        if item is EOF:
            return
        yield item


async def invoke(handler: Handler, request: Any, context: GatewayContext) -> Any:
    """Run ``handler`` for one call; returns the response of a unary call (None for a server-streaming one).

    ``request`` is the request message, or for a client-streaming call the queue that also feeds ``context.read()``.
    Responses of streaming calls go to the context's sink. Raises :class:`CallFailed` with the call's status when it
    does not end OK. Cancelling the task cancels the servicer, as a client going away does in gRPC.
    """
    if handler.request_streaming:
        argument: Any = _requests_of(request)
        behavior: Any = handler.stream_stream if handler.response_streaming else handler.stream_unary
    else:
        argument = request
        behavior = handler.unary_stream if handler.response_streaming else handler.unary_unary
    response: Any = None
    cancelled = False
    try:
        result = behavior(argument, context)
        if inspect.isasyncgen(result):
            async for message in result:
                await context.write(message)
        elif inspect.isawaitable(result):
            response = await result
        elif handler.response_streaming and result is not None:
            for message in result:
                await context.write(message)
        else:
            response = result
    except asyncio.CancelledError:
        cancelled = True
        raise
    except Exception as error:
        raise CallFailed(context.status_after(error)) from None
    finally:
        context.finish(cancelled)
    status = context.status_after(None)
    if not status.ok:
        raise CallFailed(status)
    if not handler.response_streaming and response is None:
        raise CallFailed(Status(grpc.StatusCode.INTERNAL, "coord: the handler returned no response"))
    return response
