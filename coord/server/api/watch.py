"""The etcd Watch service: one bidirectional stream carries many watchers (see coord.server.mvcc.watchable).

Auth: each create request needs read permission on its range, checked with the stream's credentials when it
arrives (as etcd); a refused create is answered, as by etcd, with a created-and-canceled response whose watch id is
-1 and whose cancel reason is the gRPC rendering of the auth error.
"""

from __future__ import annotations

import asyncio
import contextlib

import grpc

from coord._proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from coord.server.api.common import Headers
from coord.server.api.validation import UndecodableRequest, read_request
from coord.server.auth import AuthGate
from coord.server.mvcc.watchable import WatchHub, WatchStream
from coord.server.rejection import Rejected

Context = grpc.aio.ServicerContext[rpc_pb2.WatchRequest, rpc_pb2.WatchResponse]


class WatchService(rpc_pb2_grpc.WatchServicer):
    def __init__(self, hub: WatchHub, *, gate: AuthGate, headers: Headers) -> None:
        self._hub = hub
        self._gate = gate
        self._headers = headers

    async def Watch(self, request_iterator: object, context: Context) -> None:  # type: ignore[override]
        stream = self._hub.open_stream()
        reader = asyncio.create_task(self._read_requests(stream, context))
        try:
            while True:
                response = await stream.next_response()
                if response is None:
                    break
                await context.write(response)
        finally:
            reader.cancel()  # a no-op if it already ended
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader  # a failure is reported below
            self._hub.close_stream(stream)
        # The stream closes early only when reading requests failed: end the call with that failure.
        error = None if reader.cancelled() else reader.exception()
        if isinstance(error, UndecodableRequest):
            await context.abort(grpc.StatusCode.INTERNAL, error.status_details)
        if error is not None:
            raise error

    async def _read_requests(self, stream: WatchStream, context: Context) -> None:
        """Handle requests until the client half-closes. As in etcd, a half-close only ends the requests: the
        watchers keep sending events until the client cancels the call or goes away (which cancels the handler).
        A request that fails (one that does not decode, say) closes the stream; :meth:`Watch` reports why."""
        try:
            while True:
                request = await read_request(context)
                if not isinstance(request, rpc_pb2.WatchRequest):
                    return  # the client half-closed; keep delivering
                kind = request.WhichOneof("request_union")
                if kind == "create_request":
                    if self._permitted(stream, request.create_request, context):
                        self._hub.create(stream, request.create_request)
                elif kind == "cancel_request":
                    self._hub.cancel(stream, request.cancel_request.watch_id)
                elif kind == "progress_request":
                    self._hub.request_progress(stream)
        except Exception:
            stream.close()
            raise

    def _permitted(self, stream: WatchStream, request: rpc_pb2.WatchCreateRequest, context: Context) -> bool:
        try:
            self._gate.check_watch(self._gate.credentials(context), request)
        except Rejected as refusal:
            stream.send(
                rpc_pb2.WatchResponse(
                    header=self._headers.make(self._hub.current_revision()),
                    watch_id=-1,
                    created=True,
                    canceled=True,
                    cancel_reason=self._gate.cancel_reason(refusal),
                )
            )
            return False
        return True
