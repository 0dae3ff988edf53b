"""Checks etcd makes on a request before it is proposed, in etcd's order and with etcd's errors.

Each check raises :class:`Rejected`. They need no state: anything that depends on the store (leases, ignore_* on a
missing key, revisions) is checked when the request is applied.
"""

from __future__ import annotations

from coord._proto.etcdserverpb import rpc_pb2
from coord.errors import (
    DUPLICATE_KEY,
    EMPTY_KEY,
    KEY_NOT_FOUND,
    LEASE_PROVIDED,
    TOO_MANY_OPS,
    VALUE_PROVIDED,
    ErrorSpec,
)
from coord.server.mvcc import key_fits
from coord.server.rejection import Rejected

KEY_TOO_LONG = ErrorSpec(
    EMPTY_KEY.code,
    "coord: key is too long (at most 501 bytes, counting each NUL byte twice)",
    EMPTY_KEY.exception,
)


def check_range(req: rpc_pb2.RangeRequest) -> None:
    if not req.key:
        raise Rejected(EMPTY_KEY)


def check_put(req: rpc_pb2.PutRequest) -> None:
    if not req.key:
        raise Rejected(EMPTY_KEY)
    if req.ignore_value and req.value:
        raise Rejected(VALUE_PROVIDED)
    if req.ignore_lease and req.lease:
        raise Rejected(LEASE_PROVIDED)
    if not key_fits(req.key):
        raise Rejected(KEY_TOO_LONG)


def check_delete(req: rpc_pb2.DeleteRangeRequest) -> None:
    if not req.key:
        raise Rejected(EMPTY_KEY)


def check_txn(req: rpc_pb2.TxnRequest, max_txn_ops: int) -> None:
    """etcd's checkTxnRequest then checkIntervals: op counts, empty keys, and keys written twice."""
    _check_txn_ops(req, max_txn_ops)
    _intervals(req.success)
    _intervals(req.failure)


def _check_txn_ops(req: rpc_pb2.TxnRequest, max_txn_ops: int) -> None:
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
            check_put(op.request_put)
        elif kind == "request_delete_range":
            check_delete(op.request_delete_range)
        elif kind == "request_txn":
            # A nested txn gets the budget its parent left over.
            _check_txn_ops(op.request_txn, max_txn_ops - ops)
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
