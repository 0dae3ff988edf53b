"""The two directions of a gateway call over HTTP/1.1: JSON request values read from the body as they arrive, and
responses written as etcd's grpc-gateway writes them.

A streaming answer is one ``{"result": <response>}`` object per line, each sent as its own HTTP chunk (etcd3gw reads
a watch chunk by chunk). An error after the first line is one more object, ``{"error": {"grpc_code": N, "http_code":
H, "message": "...", "http_status": "..."}}``; an error before any line sets the HTTP status as well.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from http import HTTPStatus
from typing import Any

import grpc
from aiohttp import web

from coord.server.gateway.calls import Status
from coord.server.gateway.gojson import ValueSplitter, ValueTooLarge
from coord.server.gateway.jsonpb import dumps, to_json

_READ_CHUNK = 64 * 1024

# grpc-gateway's HTTPStatusFromCode.
_HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 408,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 412,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}


def http_status(code: grpc.StatusCode) -> int:
    """The HTTP status etcd's gateway answers for a gRPC status code."""
    return _HTTP_STATUS.get(code, 500)


def grpc_number(code: grpc.StatusCode) -> int:
    """The numeric value of a gRPC status code (INVALID_ARGUMENT is 3)."""
    number: int = code.value[0]
    return number


def error_response(status: Status) -> web.Response:
    """A failed unary call, as etcd 3.4 answers it: ``{"error": msg, "message": msg, "code": N}``."""
    body = {"error": status.details, "message": status.details, "code": grpc_number(status.code)}
    return web.Response(status=http_status(status.code), body=dumps(body), content_type="application/json")


def stream_error_chunk(status: Status) -> dict[str, Any]:
    http = http_status(status.code)
    return {
        "error": {
            "grpc_code": grpc_number(status.code),
            "http_code": http,
            "message": status.details,
            "http_status": HTTPStatus(http).phrase,
        }
    }


class ResultStream:
    """Writes the responses of a streaming call; headers go out with the first line (or at :meth:`close`).

    A write that fails because the client went away marks the stream ``broken`` and raises ConnectionError, which
    ends the servicer's call as a failed gRPC write would.
    """

    def __init__(self, request: web.Request) -> None:
        self._request = request
        self.response = web.StreamResponse(headers={"Content-Type": "application/json"})
        self.response.enable_chunked_encoding()
        self.started = False
        self.broken = False

    async def _write(self, data: bytes, status: int = 200) -> None:
        try:
            if not self.started:
                self.response.set_status(status)
                self.started = True
                await self.response.prepare(self._request)
            if data:
                await self.response.write(data)
        except ConnectionError:
            self.broken = True
            raise

    async def send(self, message: Any) -> None:
        """Write one ``{"result": ...}`` line as its own chunk and wait until it is handed to the transport."""
        await self._write(dumps({"result": to_json(message)}) + b"\n")

    async def fail(self, status: Status) -> None:
        """Write the error object; it sets the HTTP status when nothing was written yet."""
        await self._write(dumps(stream_error_chunk(status)), http_status(status.code))

    async def close(self) -> web.StreamResponse:
        """End the answer (sending the headers first if nothing was written); a client already gone is no error."""
        try:
            await self._write(b"")
            await self.response.write_eof()
        except ConnectionError:
            self.broken = True
        return self.response


class BodyValues:
    """The JSON values of a request body, in order, as they arrive (see :class:`gojson.ValueSplitter`).

    ``max_value_bytes`` bounds one value and ``max_total_bytes`` (if given) the whole body read;
    :class:`~coord.server.gateway.gojson.ValueTooLarge` is raised past either.
    """

    def __init__(self, request: web.Request, max_value_bytes: int, max_total_bytes: int | None = None) -> None:
        self._content = request.content
        self._splitter = ValueSplitter(max_value_bytes)
        self._max_total = max_total_bytes
        self._total = 0

    async def values(self) -> AsyncGenerator[bytes, None]:
        """Yield each complete value; at the end of the body, yield what is left (an incomplete value) if any."""
        while True:
            chunk = await self._content.readany()
            if not chunk:
                break
            self._total += len(chunk)
            if self._max_total is not None and self._total > self._max_total:
                raise ValueTooLarge(self._total, self._max_total)
            for value in self._splitter.feed(chunk):
                yield value
        rest = self._splitter.finish()
        if rest is not None:
            yield rest
