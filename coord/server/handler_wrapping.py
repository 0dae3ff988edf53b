"""Wrapping grpc.aio method handlers, for the server's interceptors: a check run before the servicer method, and a
per-method cache so that a handler is wrapped once, not on every call."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc


def checked_first(
    handler: Any,
    check: Callable[[Any, Any], Awaitable[None]],
    request_deserializer: Callable[[bytes], Any] | None = None,
) -> Any:
    """``handler`` (a grpc method handler of any of the four kinds) with ``await check(request, context)`` run before
    the servicer method; ``check`` ends the call by aborting. For a request-streaming method ``request`` is the
    request iterator, not yet read. A response-streaming method keeps its style (grpc.aio serves an async generator or
    a coroutine writing to its context). ``request_deserializer`` replaces the handler's."""
    serializers = {
        "request_deserializer": request_deserializer or handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(_checked_call(handler.unary_unary, check), **serializers)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(_checked_call(handler.stream_unary, check), **serializers)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(_checked_stream(handler.unary_stream, check), **serializers)
    return grpc.stream_stream_rpc_method_handler(_checked_stream(handler.stream_stream, check), **serializers)


def _checked_call(inner: Any, check: Callable[[Any, Any], Awaitable[None]]) -> Callable[[Any, Any], Awaitable[Any]]:
    async def call(request: Any, context: Any) -> Any:
        await check(request, context)
        return await inner(request, context)

    return call


def _checked_stream(inner: Any, check: Callable[[Any, Any], Awaitable[None]]) -> Callable[[Any, Any], Any]:
    if inspect.isasyncgenfunction(inner):

        async def generate(request: Any, context: Any) -> AsyncIterator[Any]:
            await check(request, context)
            async for response in inner(request, context):
                yield response

        return generate

    async def write(request: Any, context: Any) -> None:
        await check(request, context)
        await inner(request, context)

    return write


class WrappedHandlers:
    """Per method, the wrapped form of the handler an interceptor's continuation answered, built once: grpc.aio asks
    the interceptors on every call, and wrapping is the costly part."""

    def __init__(self, wrap: Callable[[Any, str], Any]) -> None:
        self._wrap = wrap
        self._cache: dict[str, tuple[Any, Any]] = {}

    def get(self, method: str, handler: Any) -> Any:
        """``wrap(handler, method)``, reused while the continuation keeps answering the same handler for ``method``."""
        cached = self._cache.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(handler, method)
        self._cache[method] = (handler, wrapped)
        return wrapped
