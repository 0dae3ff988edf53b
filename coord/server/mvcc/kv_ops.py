"""etcd's KV request semantics (Range, Put, DeleteRange, Txn) on top of the MVCC store.

These functions give exactly the responses etcd's applier gives, including the revision in every (inner) header, the
order of checks, sorting and filters. They raise :class:`MvccError` with etcd's error for requests the store refuses.
Writes go through an :class:`MvccWriter`; read-only requests may run on any :class:`MvccReader`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from coord._proto.etcdserverpb import rpc_pb2
from coord._proto.mvccpb import kv_pb2
from coord.errors import COMPACTED, FUTURE_REV, KEY_NOT_FOUND, LEASE_NOT_FOUND
from coord.server.mvcc.store import KEY_TOO_LONG, MvccError, MvccReader, MvccWriter, key_fits, range_end_of

LeaseLookup = Callable[[int], bool]

_RR = rpc_pb2.RangeRequest
_SORT_KEYS: dict[int, Callable[[kv_pb2.KeyValue], Any]] = {
    _RR.KEY: lambda kv: kv.key,
    _RR.VERSION: lambda kv: kv.version,
    _RR.CREATE: lambda kv: kv.create_revision,
    _RR.MOD: lambda kv: kv.mod_revision,
    _RR.VALUE: lambda kv: kv.value,
}


def range_(view: MvccReader, req: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
    """Range as etcd answers it: filters and sorting need every match, so limit applies after them."""
    resp = rpc_pb2.RangeResponse()
    needs_all = (
        req.sort_order != _RR.NONE
        or req.min_mod_revision
        or req.max_mod_revision
        or req.min_create_revision
        or req.max_create_revision
    )
    limit = 0 if needs_all else req.limit
    if limit > 0:
        limit += 1  # one more than asked, to learn whether there is more
    result = view.range(req.key, range_end_of(req.range_end), req.revision, limit, req.count_only)
    kvs = result.kvs
    if req.max_mod_revision:
        kvs = [kv for kv in kvs if kv.mod_revision <= req.max_mod_revision]
    if req.min_mod_revision:
        kvs = [kv for kv in kvs if kv.mod_revision >= req.min_mod_revision]
    if req.max_create_revision:
        kvs = [kv for kv in kvs if kv.create_revision <= req.max_create_revision]
    if req.min_create_revision:
        kvs = [kv for kv in kvs if kv.create_revision >= req.min_create_revision]
    sort_order = req.sort_order
    if req.sort_target != _RR.KEY and sort_order == _RR.NONE:
        sort_order = _RR.ASCEND
    if sort_order in (_RR.ASCEND, _RR.DESCEND):  # an unknown order leaves key order, as etcd does
        sort_key = _SORT_KEYS.get(req.sort_target, _SORT_KEYS[_RR.KEY])
        # Stable, like Go's insertion sort for the small results etcd sorts that way; descending keeps tie order.
        kvs = sorted(kvs, key=sort_key, reverse=sort_order == _RR.DESCEND)
    if req.limit > 0 and len(kvs) > req.limit:
        kvs = kvs[: req.limit]
        resp.more = True
    resp.header.revision = result.revision
    resp.count = result.count
    if req.keys_only:
        for kv in kvs:
            kv.ClearField("value")
    resp.kvs.extend(kvs)
    return resp


def put(writer: MvccWriter, req: rpc_pb2.PutRequest) -> rpc_pb2.PutResponse:
    """Put as etcd applies it (the lease must already be checked); raises MvccError(KEY_NOT_FOUND) when ignore_value or
    ignore_lease find no previous version."""
    resp = rpc_pb2.PutResponse()
    value, lease = req.value, req.lease
    prev = writer.get(req.key) if (req.ignore_value or req.ignore_lease or req.prev_kv) else None
    if req.ignore_value or req.ignore_lease:
        if prev is None:
            raise MvccError(KEY_NOT_FOUND)
        if req.ignore_value:
            value = prev.value
        if req.ignore_lease:
            lease = prev.lease
    if req.prev_kv and prev is not None:
        resp.prev_kv.CopyFrom(prev)
    writer.put(req.key, value, lease)
    resp.header.revision = writer.write_revision
    return resp


def delete_range(writer: MvccWriter, req: rpc_pb2.DeleteRangeRequest) -> rpc_pb2.DeleteRangeResponse:
    resp = rpc_pb2.DeleteRangeResponse()
    prevs = writer.delete_range(req.key, range_end_of(req.range_end))
    if req.prev_kv:
        resp.prev_kvs.extend(prevs)
    resp.deleted = len(prevs)
    resp.header.revision = writer.write_revision if writer.changed else writer.begin_revision
    return resp


def _check_key_fits(req: rpc_pb2.PutRequest) -> None:
    """The API layer refuses keys LMDB cannot store; checked again here, so no entry can make the apply fail."""
    if not key_fits(req.key):
        raise MvccError(KEY_TOO_LONG)


def check_put_in_txn(view: MvccReader, req: rpc_pb2.PutRequest, lease_exists: LeaseLookup) -> None:
    """The checks etcd makes on a txn's puts before applying any: ignore_* find a previous version, then the lease
    exists (a plain Put checks the lease first; see :func:`put_request`). Raises MvccError; KEY_TOO_LONG first."""
    _check_key_fits(req)
    if (req.ignore_value or req.ignore_lease) and view.get(req.key) is None:
        raise MvccError(KEY_NOT_FOUND)
    if req.lease and not lease_exists(req.lease):
        raise MvccError(LEASE_NOT_FOUND)


def put_request(writer: MvccWriter, req: rpc_pb2.PutRequest, lease_exists: LeaseLookup) -> rpc_pb2.PutResponse:
    """A plain (non-txn) Put: the lease must exist, then :func:`put` applies. Raises MvccError; KEY_TOO_LONG first."""
    _check_key_fits(req)
    if req.lease and not lease_exists(req.lease):
        raise MvccError(LEASE_NOT_FOUND)
    return put(writer, req)


def _compare(c: rpc_pb2.Compare, kv: kv_pb2.KeyValue) -> bool:
    target = c.target
    union = c.WhichOneof("target_union")
    ours: Any
    theirs: Any
    if target == rpc_pb2.Compare.VALUE:
        ours, theirs = kv.value, (c.value if union == "value" else b"")
    elif target == rpc_pb2.Compare.CREATE:
        ours, theirs = kv.create_revision, (c.create_revision if union == "create_revision" else 0)
    elif target == rpc_pb2.Compare.MOD:
        ours, theirs = kv.mod_revision, (c.mod_revision if union == "mod_revision" else 0)
    elif target == rpc_pb2.Compare.VERSION:
        ours, theirs = kv.version, (c.version if union == "version" else 0)
    elif target == rpc_pb2.Compare.LEASE:
        ours, theirs = kv.lease, (c.lease if union == "lease" else 0)
    else:
        ours = theirs = 0
    result = c.result
    if result == rpc_pb2.Compare.EQUAL:
        return bool(ours == theirs)
    if result == rpc_pb2.Compare.NOT_EQUAL:
        return bool(ours != theirs)
    if result == rpc_pb2.Compare.GREATER:
        return bool(ours > theirs)
    if result == rpc_pb2.Compare.LESS:
        return bool(ours < theirs)
    return True


def _holds(view: MvccReader, c: rpc_pb2.Compare) -> bool:
    """A compare holds when every key in its range satisfies it; a missing key compares as zero values, except that
    a VALUE compare on a missing key is false."""
    try:
        kvs = view.range(c.key, range_end_of(c.range_end), 0).kvs
    except MvccError:
        return False
    if not kvs:
        return c.target != rpc_pb2.Compare.VALUE and _compare(c, kv_pb2.KeyValue())
    return all(_compare(c, kv) for kv in kvs)


def _path(view: MvccReader, req: rpc_pb2.TxnRequest) -> list[bool]:
    """Which branch each txn takes (this one, then nested ones depth first), all judged at the txn's start."""
    succeeded = all(_holds(view, c) for c in req.compare)
    path = [succeeded]
    for op in req.success if succeeded else req.failure:
        if op.WhichOneof("request") == "request_txn":
            path.extend(_path(view, op.request_txn))
    return path


def served_locally(req: rpc_pb2.TxnRequest) -> bool:
    """etcd's isTxnReadonly: a txn whose branches hold only range ops is answered from local state; any other one,
    a nested txn included even when it only reads, goes through the log (and so is held to --max-request-bytes)."""
    return all(op.WhichOneof("request") == "request_range" for op in (*req.success, *req.failure))


def is_read_only(req: rpc_pb2.TxnRequest) -> bool:
    for op in (*req.success, *req.failure):
        kind = op.WhichOneof("request")
        if kind in ("request_put", "request_delete_range"):
            return False
        if kind == "request_txn" and not is_read_only(op.request_txn):
            return False
    return True


def _check_ops(
    view: MvccReader, req: rpc_pb2.TxnRequest, path: list[bool], at: int, check: Callable[[rpc_pb2.RequestOp], None]
) -> int:
    """Run ``check`` on every op of the branches ``path`` selects; returns how many path entries were used."""
    used = 1
    for op in req.success if path[at] else req.failure:
        if op.WhichOneof("request") == "request_txn":
            used += _check_ops(view, op.request_txn, path, at + used, check)
        else:
            check(op)
    return used


def _check_range_revision(view: MvccReader, op: rpc_pb2.RequestOp) -> None:
    if op.WhichOneof("request") != "request_range":
        return
    revision = op.request_range.revision
    if revision == 0:
        return
    if revision > view.current_revision:
        raise MvccError(FUTURE_REV)
    if revision < view.compact_revision:
        raise MvccError(COMPACTED)


def _apply_ops(view: MvccReader, req: rpc_pb2.TxnRequest, path: list[bool], at: int, resp: rpc_pb2.TxnResponse) -> int:
    succeeded = path[at]
    resp.succeeded = succeeded
    used = 1
    for op in req.success if succeeded else req.failure:
        kind = op.WhichOneof("request")
        out = resp.responses.add()
        if kind == "request_range":
            out.response_range.CopyFrom(range_(view, op.request_range))
        elif kind == "request_put":
            assert isinstance(view, MvccWriter)
            out.response_put.CopyFrom(put(view, op.request_put))
        elif kind == "request_delete_range":
            assert isinstance(view, MvccWriter)
            out.response_delete_range.CopyFrom(delete_range(view, op.request_delete_range))
        elif kind == "request_txn":
            inner = out.response_txn
            inner.header.SetInParent()
            used += _apply_ops(view, op.request_txn, path, at + used, inner)
    return used


def txn(view: MvccReader, req: rpc_pb2.TxnRequest, lease_exists: LeaseLookup) -> rpc_pb2.TxnResponse:
    """Txn as etcd applies it: compares (nested ones too) are judged against the state before any op runs; then every
    op of the chosen branches is checked (leases, ignore_*, range revisions) before any is applied, so a txn either
    applies whole or fails with nothing changed. Writes require ``view`` to be an MvccWriter.
    """
    path = _path(view, req)
    if not is_read_only(req):

        def check_write(op: rpc_pb2.RequestOp) -> None:
            if op.WhichOneof("request") == "request_put":
                check_put_in_txn(view, op.request_put, lease_exists)

        _check_ops(view, req, path, 0, check_write)
    _check_ops(view, req, path, 0, lambda op: _check_range_revision(view, op))
    resp = rpc_pb2.TxnResponse()
    _apply_ops(view, req, path, 0, resp)
    resp.header.revision = view.read_revision
    return resp
