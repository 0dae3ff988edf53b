"""The aiohttp side of the JSON gateway: ``POST /v3/<path>`` (and ``/v3beta/<path>``) calls the member's gRPC
servicers in-process and answers as etcd 3.4's grpc-gateway does.

Unary calls read the first JSON value of the body (an empty body is an empty request; what follows the first value
is ignored) and answer the response as JSON, or an error as ``{"error": msg, "message": msg, "code": N}`` with the
HTTP status grpc-gateway maps the code to (InvalidArgument 400, NotFound 404, FailedPrecondition 412, ...). A body
that is not valid JSON for the request type is InvalidArgument with Go's message. Streaming calls
(``/v3/watch``, ``/v3/lease/keepalive``, ``/v3/election/observe``, ``/v3/maintenance/snapshot``) answer
newline-delimited ``{"result": ...}`` objects; requests of client-streaming calls are read from the body one JSON
value after another as they arrive.

Unknown paths under the prefixes answer 404 ``Not Found``; other methods than POST on a known path 405.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator

import grpc
import grpc.aio
from aiohttp import WSMsgType, web
from google.protobuf.message import DecodeError, Message

from coord.server.gateway import jsonpb
from coord.server.gateway.calls import EOF, CallFailed, GatewayContext, Handler, ServiceTable, Status, invoke
from coord.server.gateway.gojson import GoJSONError, ValueSplitter, ValueTooLarge
from coord.server.gateway.routes import PREFIXES, Route, lookup
from coord.server.gateway.streams import BodyValues, ResultStream, error_response, stream_error_chunk

log = logging.getLogger(__name__)

# Requests of one stream waiting for the servicer; past this the gateway stops reading the body (backpressure).
_QUEUED_REQUESTS = 64


class _Refused(Exception):
    def __init__(self, status: Status) -> None:
        super().__init__(status.details)
        self.status = status


def plain_text(status: int, text: str) -> web.Response:
    """A plain-text answer as Go's ``http.Error`` writes it."""
    return web.Response(
        status=status,
        text=text + "\n",
        content_type="text/plain",
        charset="utf-8",
        headers={"X-Content-Type-Options": "nosniff"},
    )


class Gateway:
    """etcd's HTTP/JSON gateway over the servicers of a :class:`ServiceTable`.

    Usage::

        gateway = Gateway(ServiceTable(servicers, interceptors), max_message_bytes=limit)
        gateway.add_routes(app)

    ``max_message_bytes`` is the gRPC server's receive limit: a decoded request larger than that is refused with
    ResourceExhausted ``grpc: received message larger than max (N vs. M)``, exactly as etcd's gRPC server refuses
    what its gateway forwards. One JSON value in a body may be at most ``max_json_bytes`` (default: four times the
    message limit, room for base64 and field names); a larger one is refused with ResourceExhausted too.
    """

    def __init__(self, table: ServiceTable, max_message_bytes: int, max_json_bytes: int | None = None) -> None:
        self._table = table
        self._max_message = max_message_bytes
        self._max_json = max_json_bytes if max_json_bytes is not None else 4 * max_message_bytes

    def add_routes(self, app: web.Application) -> None:
        for prefix in PREFIXES:
            app.router.add_route("*", prefix + "{tail:.*}", self.handle)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        route = lookup(request.path)
        if route is None:
            return plain_text(404, "Not Found")
        metadata = _metadata(request)
        if (route.client_streaming or route.server_streaming) and _is_websocket(request):
            return await self._websocket(request, route, metadata)
        if request.method != "POST":
            return plain_text(405, "Method Not Allowed")
        if route.client_streaming:
            return await self._bidirectional(request, route, metadata)
        try:
            message = await self._read_one(request, route)
        except _Refused as refused:
            return error_response(refused.status)
        if route.server_streaming:
            return await self._server_streaming(request, route, metadata, message)
        return await self._unary(request, route, metadata, message)

    # -- requests --------------------------------------------------------------------------------------------------

    def _too_large(self) -> _Refused:
        return _Refused(
            Status(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"coord: a JSON request value is larger than the gateway's limit of {self._max_json} bytes",
            )
        )

    def _decode(self, raw: bytes, route: Route, bad_json: grpc.StatusCode) -> Message:
        try:
            message = jsonpb.from_text(raw.decode("utf-8", "replace"), route.request_type)
        except GoJSONError as error:
            raise _Refused(Status(bad_json, str(error))) from None
        if route.recursive:
            # gRPC's deserializer bounds nesting (and the member decodes logged requests with the same bound): a
            # request built here must not nest deeper than one that arrives over gRPC.
            try:
                route.request_type.FromString(message.SerializeToString())
            except DecodeError:
                raise _Refused(Status(bad_json, jsonpb.TOO_DEEP)) from None
        size = message.ByteSize()
        if size > self._max_message:
            raise _Refused(
                Status(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"grpc: received message larger than max ({size} vs. {self._max_message})",
                )
            )
        return message

    async def _read_one(self, request: web.Request, route: Route) -> Message:
        """The request of a unary-request call: the body's first JSON value, or an empty request for an empty body."""
        body = BodyValues(request, self._max_json, self._max_json)
        try:
            async with contextlib.aclosing(body.values()) as values:
                async for raw in values:
                    return self._decode(raw, route, grpc.StatusCode.INVALID_ARGUMENT)
        except ValueTooLarge:
            raise self._too_large() from None
        return route.request_type()

    # -- calls -----------------------------------------------------------------------------------------------------

    async def _resolve(self, route: Route, metadata: tuple[tuple[str, str], ...]) -> Handler:
        try:
            handler = await self._table.resolve(route.method, metadata)
        except grpc.aio.AbortError:
            raise CallFailed(Status(grpc.StatusCode.UNKNOWN, "coord: an interceptor aborted the call")) from None
        except Exception as error:
            raise CallFailed(Status(grpc.StatusCode.UNKNOWN, f"Unexpected {type(error)}: {error}")) from None
        if handler is None:
            raise CallFailed(Status(grpc.StatusCode.UNIMPLEMENTED, "Method not found!"))
        return handler

    async def _unary(
        self, request: web.Request, route: Route, metadata: tuple[tuple[str, str], ...], message: Message
    ) -> web.StreamResponse:
        context = GatewayContext(metadata, _peer(request))
        try:
            handler = await self._resolve(route, metadata)
            response = await invoke(handler, message, context)
        except CallFailed as failed:
            return error_response(failed.status)
        return web.Response(body=jsonpb.dumps(jsonpb.to_json(response)), content_type="application/json")

    async def _server_streaming(
        self, request: web.Request, route: Route, metadata: tuple[tuple[str, str], ...], message: Message
    ) -> web.StreamResponse:
        stream = ResultStream(request)
        context = GatewayContext(metadata, _peer(request), sink=stream.send)
        try:
            handler = await self._resolve(route, metadata)
            await invoke(handler, message, context)
        except CallFailed as failed:
            if stream.broken:
                return stream.response
            await stream.fail(failed.status)
        return await stream.close()

    async def _bidirectional(
        self, request: web.Request, route: Route, metadata: tuple[tuple[str, str], ...]
    ) -> web.StreamResponse:
        values = BodyValues(request, self._max_json).values()
        queue: asyncio.Queue[object] = asyncio.Queue(_QUEUED_REQUESTS)
        try:
            first_raw = await anext(values, None)
            if first_raw is not None:
                # As grpc-gateway: a bad first request fails the call (Unknown); later ones only end the stream.
                queue.put_nowait(self._decode(first_raw, route, grpc.StatusCode.UNKNOWN))
        except ValueTooLarge:
            return error_response(self._too_large().status)
        except _Refused as refused:
            return error_response(refused.status)
        if first_raw is None:
            await values.aclose()
            if not route.keep_open:
                queue.put_nowait(EOF)
            feeder = None
        else:
            feeder = asyncio.create_task(self._feed(values, route, queue), name="coord-gateway-body")
        stream = ResultStream(request)
        context = GatewayContext(metadata, _peer(request), requests=queue, sink=stream.send)
        try:
            handler = await self._resolve(route, metadata)
            await invoke(handler, queue, context)
        except CallFailed as failed:
            if stream.broken:
                return stream.response
            await stream.fail(failed.status)
        finally:
            if feeder is not None:
                feeder.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await feeder
        return await stream.close()

    async def _feed(self, values: AsyncGenerator[bytes, None], route: Route, queue: asyncio.Queue[object]) -> None:
        """Queue the body's later requests; at the end of the body half-close, unless the route keeps open."""
        try:
            async for raw in values:
                try:
                    message = self._decode(raw, route, grpc.StatusCode.UNKNOWN)
                except _Refused as refused:
                    log.debug("gateway %s: ending the request stream at a bad request: %s", route.path, refused)
                    break
                await queue.put(message)
        except ValueTooLarge as error:
            log.debug("gateway %s: ending the request stream: %s", route.path, error)
        except (ConnectionError, asyncio.IncompleteReadError, OSError) as error:
            log.debug("gateway %s: request body ended early: %s", route.path, error)
        finally:
            await values.aclose()
        if not route.keep_open:
            await queue.put(EOF)

    # -- websockets ------------------------------------------------------------------------------------------------

    async def _websocket(
        self, request: web.Request, route: Route, metadata: tuple[tuple[str, str], ...]
    ) -> web.StreamResponse:
        """A streaming call over a websocket, as etcd's gateway offers it (grpc-websocket-proxy): each text or binary
        message carries request JSON values, each response is one text message ``{"result": ...}``. A malformed
        request ends the request stream (later messages are ignored, as etcd's gateway drops them); an error ends the
        call with one message holding the error object, then the socket closes; the client closing the socket
        cancels the call."""
        ws = web.WebSocketResponse(max_msg_size=self._max_json)
        await ws.prepare(request)
        queue: asyncio.Queue[object] = asyncio.Queue(_QUEUED_REQUESTS)

        async def send(message: Message) -> None:
            await ws.send_str(jsonpb.dumps({"result": jsonpb.to_json(message)}).decode())

        async def run() -> None:
            context = GatewayContext(metadata, _peer(request), requests=queue, sink=send)
            try:
                handler = await self._resolve(route, metadata)
                if route.client_streaming:
                    await invoke(handler, queue, context)
                else:
                    first = await queue.get()
                    if first is not EOF:
                        await invoke(handler, first, context)
            except CallFailed as failed:
                if not ws.closed:
                    await ws.send_str(jsonpb.dumps(stream_error_chunk(failed.status)).decode())
            except ConnectionError:
                pass  # the client went away while we wrote

        call = asyncio.create_task(run(), name="coord-gateway-websocket-call")
        feeder = asyncio.create_task(self._feed_websocket(ws, route, queue, call), name="coord-gateway-websocket")
        try:
            await call
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # this handler is being cancelled, not just the call
        finally:
            for task in (call, feeder):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await ws.close()
        return ws

    async def _feed_websocket(
        self, ws: web.WebSocketResponse, route: Route, queue: asyncio.Queue[object], call: asyncio.Task[None]
    ) -> None:
        splitter = ValueSplitter(self._max_json)
        ended = False
        try:
            async for msg in ws:
                if ended or msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    continue
                data = msg.data.encode() if isinstance(msg.data, str) else msg.data
                try:
                    for raw in [*splitter.feed(data), *filter(None, [splitter.finish()])]:
                        await queue.put(self._decode(raw, route, grpc.StatusCode.UNKNOWN))
                except (_Refused, ValueTooLarge) as error:
                    log.debug("gateway %s: ending the websocket request stream: %s", route.path, error)
                    ended = True
                    if not route.keep_open:
                        await queue.put(EOF)
        finally:
            call.cancel()  # the socket is closed: the client is gone


# HTTP headers grpc-gateway forwards as ``grpcgateway-<name>`` metadata (its "permanent" headers).
_FORWARDED_HEADERS = (
    "Accept",
    "Accept-Charset",
    "Accept-Language",
    "Cache-Control",
    "Content-Type",
    "Cookie",
    "Host",
    "Origin",
    "Pragma",
    "Referer",
    "User-Agent",
    "Via",
)
_METADATA_HEADER_PREFIX = "grpc-metadata-"


def _metadata(request: web.Request) -> tuple[tuple[str, str], ...]:
    """gRPC metadata for the call, as etcd's gateway builds it: the Authorization header travels as ``token``,
    ``Grpc-Metadata-<key>`` headers as ``<key>``, and the standard headers as ``grpcgateway-<name>``."""
    pairs: list[tuple[str, str]] = []
    for name, value in request.headers.items():
        lower = name.lower()
        if lower == "authorization":
            pairs.append(("token", value))
        elif lower.startswith(_METADATA_HEADER_PREFIX) and len(lower) > len(_METADATA_HEADER_PREFIX):
            pairs.append((lower[len(_METADATA_HEADER_PREFIX) :], value))
    for name in _FORWARDED_HEADERS:
        forwarded = request.headers.get(name)
        if forwarded is not None:
            pairs.append((f"grpcgateway-{name.lower()}", forwarded))
    return tuple(pairs)


def _is_websocket(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


def _peer(request: web.Request) -> str:
    peername = request.transport.get_extra_info("peername") if request.transport is not None else None
    if isinstance(peername, tuple) and len(peername) >= 2:
        return f"ipv4:{peername[0]}:{peername[1]}"
    return "unknown"
