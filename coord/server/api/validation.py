"""Checks etcd makes on a request before it is proposed, in etcd's order and with etcd's errors.

Each check raises :class:`Rejected`. They need no state: anything that depends on the store (leases, ignore_* on a
missing key, revisions) is checked when the request is applied.

Requests are decoded as etcd decodes them: bytes that do not decode are answered as etcd (grpc-go) answers them, with
INTERNAL and ``grpc: error unmarshalling request: ...``, and fields the API does not define are dropped (so they
neither count towards --max-request-bytes nor reach the log). :class:`DecodeGuard` does it for the methods with one
request (grpc.aio decodes that request before any servicer code runs), :func:`read_request` reports undecodable
requests on the request streams (Watch, LeaseKeepAlive).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message

from coord._proto.etcdserverpb import rpc_pb2
from coord.errors import (
    DUPLICATE_KEY,
    EMPTY_KEY,
    KEY_NOT_FOUND,
    LEASE_PROVIDED,
    TOO_MANY_OPS,
    VALUE_PROVIDED,
)
from coord.server.handler_wrapping import WrappedHandlers, checked_first
from coord.server.mvcc import KEY_TOO_LONG, key_fits
from coord.server.rejection import Rejected


def check_range(req: rpc_pb2.RangeRequest) -> None:
    if not req.key:
        raise Rejected(EMPTY_KEY)


def check_put(req: rpc_pb2.PutRequest, key_length: bool = True) -> None:
    """etcd's checks, then (unless ``key_length`` is False) coord's key length limit: a caller that checks the
    request's size passes False and calls :func:`check_key_lengths` after the size, as etcd refuses a request that is
    too large before anything else (the applier refuses a key that is too long anyway)."""
    if not req.key:
        raise Rejected(EMPTY_KEY)
    if req.ignore_value and req.value:
        raise Rejected(VALUE_PROVIDED)
    if req.ignore_lease and req.lease:
        raise Rejected(LEASE_PROVIDED)
    if key_length and not key_fits(req.key):
        raise Rejected(KEY_TOO_LONG)


def check_key_lengths(request: Message) -> None:
    """coord's key length limit on every key a Put or Txn request writes (nested txns included)."""
    if isinstance(request, rpc_pb2.PutRequest):
        if not key_fits(request.key):
            raise Rejected(KEY_TOO_LONG)
    elif isinstance(request, rpc_pb2.TxnRequest):
        for op in (*request.success, *request.failure):
            kind = op.WhichOneof("request")
            if kind == "request_put":
                check_key_lengths(op.request_put)
            elif kind == "request_txn":
                check_key_lengths(op.request_txn)


def check_delete(req: rpc_pb2.DeleteRangeRequest) -> None:
    if not req.key:
        raise Rejected(EMPTY_KEY)


def check_txn(req: rpc_pb2.TxnRequest, max_txn_ops: int, key_length: bool = True) -> None:
    """etcd's checkTxnRequest then checkIntervals: op counts, empty keys, and keys written twice (and coord's key
    length limit, as :func:`check_put`)."""
    _check_txn_ops(req, max_txn_ops, key_length)
    _intervals(req.success)
    _intervals(req.failure)


def _check_txn_ops(req: rpc_pb2.TxnRequest, max_txn_ops: int, key_length: bool) -> None:
    ops = max(len(req.compare), len(req.success), len(req.failure))
    if ops > max_txn_ops:
        raise Rejected(TOO_MANY_OPS)
    for compare in req.compare:
        if not compare.key:
            raise Rejected(EMPTY_KEY)
    for op in (*req.success, *req.failure):
        kind = op.WhichOneof("request")
        if kind == "request_range":
            check_range(op.request_range)
        elif kind == "request_put":
            check_put(op.request_put, key_length)
        elif kind == "request_delete_range":
            check_delete(op.request_delete_range)
        elif kind == "request_txn":
            # A nested txn gets the budget its parent left over.
            _check_txn_ops(op.request_txn, max_txn_ops - ops, key_length)
        else:
            raise Rejected(KEY_NOT_FOUND)


# Intervals are [begin, end) over byte strings, where an empty end means "no upper bound".
_Interval = tuple[bytes, bytes]


def _point(key: bytes) -> _Interval:
    return key, key + b"\x00"


def _below(a: bytes, end: bytes) -> bool:
    """a < end, where an empty end is +infinity."""
    return not end or a < end


def _overlaps(x: _Interval, y: _Interval) -> bool:
    # Interval begins are never "infinite"; ends may be.
    return _below(x[0], y[1]) and _below(y[0], x[1])


def _hits(deletes: list[_Interval], key: bytes) -> bool:
    point = _point(key)
    return any(_overlaps(d, point) for d in deletes)


def _intervals(ops: object) -> tuple[set[bytes], list[_Interval]]:
    """The keys put and the ranges deleted by ``ops`` (nested txns included); rejects a key written twice.

    Mirrors etcd 3.4: deletes of this level first, then nested txns (whose then/else branches may put the same key),
    then this level's puts. Deletes may overlap deletes. A delete's range_end is taken literally ("\\x00" included).
    """
    deletes: list[_Interval] = []
    puts: set[bytes] = set()
    requests = list(ops)  # type: ignore[call-overload]
    for op in requests:
        if op.WhichOneof("request") == "request_delete_range":
            d = op.request_delete_range
            deletes.append((d.key, d.range_end) if d.range_end else _point(d.key))
    for op in requests:
        if op.WhichOneof("request") != "request_txn":
            continue
        puts_then, deletes_then = _intervals(op.request_txn.success)
        puts_else, deletes_else = _intervals(op.request_txn.failure)
        for key in puts_then:
            if key in puts or _hits(deletes, key):
                raise Rejected(DUPLICATE_KEY)
            puts.add(key)
        for key in puts_else:
            if (key in puts and key not in puts_then) or _hits(deletes, key):
                raise Rejected(DUPLICATE_KEY)
            puts.add(key)
        deletes.extend(deletes_then)
        deletes.extend(deletes_else)
    for op in requests:
        if op.WhichOneof("request") != "request_put":
            continue
        key = op.request_put.key
        if key in puts or _hits(deletes, key):
            raise Rejected(DUPLICATE_KEY)
        puts.add(key)
    return puts, deletes


# -- requests that do not decode ----------------------------------------------------------------------------------

# grpc-go's messages (etcd's answers) for a request that does not decode: in a unary call, and in a streaming one.
UNMARSHAL_REQUEST = "grpc: error unmarshalling request: "
UNMARSHAL_STREAM = "grpc: failed to unmarshal the received message "


class Undecodable:
    """What :class:`DecodeGuard`'s deserializer returns for bytes that are not a valid request (never a servicer's
    business: the guard answers the call before it reaches one)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


class DecodeGuard(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Decodes the request of a unary-request call as etcd does: unknown fields are dropped, and a request that does
    not decode ends the call with etcd's status (INTERNAL, ``grpc: error unmarshalling request: <reason>``, or
    ``grpc: failed to unmarshal the received message <reason>`` for a response-streaming method) instead of
    grpc.aio's UNKNOWN ``Unexpected <class 'DecodeError'>``.

    Usage (first in the server's interceptor list, since grpc-go, and so etcd, decodes before any interceptor)::

        server = grpc.aio.server(interceptors=[DecodeGuard(), metrics.interceptor(), AdminOnly(gate)])

    Request-streaming methods are left alone (their servicers read with :func:`read_request`). The handlers it
    wraps must be coroutines or async generators, as every coord servicer method is.
    """

    def __init__(self) -> None:
        # method -> (the handler the chain answered, its guarded form): built once per handler, not on every call.
        self._guarded = WrappedHandlers(self._guard)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(details)
        if handler is None or handler.request_streaming or handler.request_deserializer is None:
            return handler
        return self._guarded.get(details.method, handler)

    def _guard(self, handler: Any, method: str) -> Any:
        decode: Callable[[bytes], Any] = handler.request_deserializer

        def deserializer(raw: bytes) -> Any:
            try:
                request = decode(raw)
            except DecodeError as error:
                return Undecodable(str(error))
            if isinstance(request, Message):
                request.DiscardUnknownFields()
            return request

        prefix = UNMARSHAL_STREAM if handler.response_streaming else UNMARSHAL_REQUEST

        async def refuse(request: Any, context: Any) -> None:
            if isinstance(request, Undecodable):
                await context.abort(grpc.StatusCode.INTERNAL, prefix + request.reason)

        return checked_first(handler, refuse, deserializer)


class UndecodableRequest(Exception):
    """A request read from a client stream did not decode; ``status_details`` is etcd's message for it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.status_details = UNMARSHAL_STREAM + reason


async def read_request(context: grpc.aio.ServicerContext[Any, Any]) -> Message | None:
    """The next request of the call's request stream, or None once the client half-closed. Raises
    :class:`UndecodableRequest` when its bytes do not decode (end the call with INTERNAL and its ``status_details``,
    as etcd does)."""
    try:
        request = await context.read()
    except DecodeError as error:
        raise UndecodableRequest(str(error)) from None
    return request if isinstance(request, Message) else None
