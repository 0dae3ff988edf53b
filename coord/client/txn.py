"""Request builders shared by the KV calls and transactions: ops (``Get``, ``Put``, ``Delete``, ``Txn``) and the
compare builder (``Value(key) == "v"``, ``Version(key) > 0``, ...).

Example::

    await client.txn(
        compare=[coord.CreateRevision("lock") == 0],
        success=[coord.Put("lock", "me", lease=lease_id)],
        failure=[coord.Get("lock")],
    )

Keys and values accept ``str`` (encoded as UTF-8) or ``bytes``. A key range is given either as an explicit
``range_end``, or ``prefix=True`` (every key starting with ``key``), or ``from_key=True`` (every key >= ``key``).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

from coord._proto.etcdserverpb import rpc_pb2

__all__ = [
    "Compare",
    "CreateRevision",
    "Delete",
    "Get",
    "LeaseId",
    "ModRevision",
    "Op",
    "Put",
    "SortOrder",
    "SortTarget",
    "Txn",
    "Value",
    "Version",
    "prefix_end",
    "to_bytes",
]

KeyLike: TypeAlias = str | bytes


def to_bytes(data: KeyLike) -> bytes:
    """``str`` as UTF-8, ``bytes`` unchanged."""
    return data.encode() if isinstance(data, str) else bytes(data)


def prefix_end(prefix: bytes) -> bytes:
    """The range end covering every key that starts with ``prefix`` (etcd's ``GetPrefixRangeEnd``).

    A prefix of only 0xff bytes (or empty) has no upper bound: the result is ``b"\\0"`` (all keys >= prefix).
    """
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"


def key_range(
    key: KeyLike, range_end: KeyLike | None = None, *, prefix: bool = False, from_key: bool = False
) -> tuple[bytes, bytes]:
    """Resolve the (key, range_end) pair sent on the wire; raises ValueError on conflicting options."""
    k = to_bytes(key)
    if sum((range_end is not None, prefix, from_key)) > 1:
        raise ValueError("give at most one of range_end, prefix=True, from_key=True")
    if prefix:
        if not k:
            return b"\0", b"\0"
        return k, prefix_end(k)
    if from_key:
        return (k or b"\0"), b"\0"
    return k, (to_bytes(range_end) if range_end is not None else b"")


class SortOrder(enum.Enum):
    NONE = rpc_pb2.RangeRequest.NONE
    ASCEND = rpc_pb2.RangeRequest.ASCEND
    DESCEND = rpc_pb2.RangeRequest.DESCEND


class SortTarget(enum.Enum):
    KEY = rpc_pb2.RangeRequest.KEY
    VERSION = rpc_pb2.RangeRequest.VERSION
    CREATE = rpc_pb2.RangeRequest.CREATE
    MOD = rpc_pb2.RangeRequest.MOD
    VALUE = rpc_pb2.RangeRequest.VALUE


@dataclass(frozen=True)
class Get:
    """A range read; also usable as a txn op. See :meth:`AsyncClient.range` for the options."""

    key: KeyLike
    range_end: KeyLike | None = None
    prefix: bool = False
    from_key: bool = False
    limit: int = 0
    revision: int = 0
    sort_order: SortOrder = SortOrder.NONE
    sort_target: SortTarget = SortTarget.KEY
    serializable: bool = False
    keys_only: bool = False
    count_only: bool = False
    min_mod_revision: int = 0
    max_mod_revision: int = 0
    min_create_revision: int = 0
    max_create_revision: int = 0

    def to_pb(self) -> rpc_pb2.RangeRequest:
        key, end = key_range(self.key, self.range_end, prefix=self.prefix, from_key=self.from_key)
        return rpc_pb2.RangeRequest(
            key=key,
            range_end=end,
            limit=self.limit,
            revision=self.revision,
            sort_order=self.sort_order.value,
            sort_target=self.sort_target.value,
            serializable=self.serializable,
            keys_only=self.keys_only,
            count_only=self.count_only,
            min_mod_revision=self.min_mod_revision,
            max_mod_revision=self.max_mod_revision,
            min_create_revision=self.min_create_revision,
            max_create_revision=self.max_create_revision,
        )

    def to_op(self) -> rpc_pb2.RequestOp:
        return rpc_pb2.RequestOp(request_range=self.to_pb())


@dataclass(frozen=True)
class Put:
    """A write of one key; also usable as a txn op."""

    key: KeyLike
    value: KeyLike = b""
    lease: int = 0
    prev_kv: bool = False
    ignore_value: bool = False
    ignore_lease: bool = False

    def to_pb(self) -> rpc_pb2.PutRequest:
        return rpc_pb2.PutRequest(
            key=to_bytes(self.key),
            value=to_bytes(self.value),
            lease=self.lease,
            prev_kv=self.prev_kv,
            ignore_value=self.ignore_value,
            ignore_lease=self.ignore_lease,
        )

    def to_op(self) -> rpc_pb2.RequestOp:
        return rpc_pb2.RequestOp(request_put=self.to_pb())


@dataclass(frozen=True)
class Delete:
    """A delete of one key or a range; also usable as a txn op."""

    key: KeyLike
    range_end: KeyLike | None = None
    prefix: bool = False
    from_key: bool = False
    prev_kv: bool = False

    def to_pb(self) -> rpc_pb2.DeleteRangeRequest:
        key, end = key_range(self.key, self.range_end, prefix=self.prefix, from_key=self.from_key)
        return rpc_pb2.DeleteRangeRequest(key=key, range_end=end, prev_kv=self.prev_kv)

    def to_op(self) -> rpc_pb2.RequestOp:
        return rpc_pb2.RequestOp(request_delete_range=self.to_pb())


_RESULT = {
    "==": rpc_pb2.Compare.EQUAL,
    "!=": rpc_pb2.Compare.NOT_EQUAL,
    "<": rpc_pb2.Compare.LESS,
    ">": rpc_pb2.Compare.GREATER,
}


@dataclass(frozen=True)
class Compare:
    """One txn condition, produced by the comparison operators of :class:`Value`, :class:`Version`, ... ."""

    target: _Target
    op: str
    operand: int | bytes

    def to_pb(self) -> rpc_pb2.Compare:
        key, end = key_range(self.target.key, self.target.range_end, prefix=self.target.prefix)
        cmp = rpc_pb2.Compare(result=_RESULT[self.op], target=self.target.pb_target, key=key, range_end=end)
        if isinstance(self.operand, bytes):
            cmp.value = self.operand
        else:
            setattr(cmp, self.target.pb_field, self.operand)
        return cmp


@dataclass(frozen=True, eq=False)
class _Target:
    """The left side of a compare: one key (or a range with ``range_end`` / ``prefix=True``: every key in it must
    satisfy the compare). A missing key compares as zero for the integer targets; a Value compare on a missing key
    is false."""

    key: KeyLike
    range_end: KeyLike | None = field(default=None, kw_only=True)
    prefix: bool = field(default=False, kw_only=True)

    pb_target = rpc_pb2.Compare.VERSION
    pb_field = "version"
    __hash__ = None  # type: ignore[assignment]  # == builds a Compare, so targets must not be hashable

    def _operand(self, other: object) -> int | bytes:
        if isinstance(other, bool) or not isinstance(other, int):
            raise TypeError(f"{type(self).__name__} compares with an int, not {type(other).__name__}")
        return other

    def __eq__(self, other: object) -> Compare:  # type: ignore[override]
        return Compare(self, "==", self._operand(other))

    def __ne__(self, other: object) -> Compare:  # type: ignore[override]
        return Compare(self, "!=", self._operand(other))

    def __lt__(self, other: object) -> Compare:
        return Compare(self, "<", self._operand(other))

    def __gt__(self, other: object) -> Compare:
        return Compare(self, ">", self._operand(other))


class Version(_Target):
    """Compare a key's version (number of puts since creation; 0 when missing)."""


class CreateRevision(_Target):
    """Compare a key's create revision (0 when missing: ``CreateRevision(k) == 0`` means "k does not exist")."""

    pb_target = rpc_pb2.Compare.CREATE
    pb_field = "create_revision"


class ModRevision(_Target):
    """Compare a key's last modification revision."""

    pb_target = rpc_pb2.Compare.MOD
    pb_field = "mod_revision"


class LeaseId(_Target):
    """Compare the ID of the lease a key is attached to (0 for none)."""

    pb_target = rpc_pb2.Compare.LEASE
    pb_field = "lease"


class Value(_Target):
    """Compare a key's value (``str`` or ``bytes``); bytewise ordering for ``<`` and ``>``."""

    pb_target = rpc_pb2.Compare.VALUE
    pb_field = "value"

    def _operand(self, other: object) -> int | bytes:
        if not isinstance(other, str | bytes):
            raise TypeError(f"Value compares with str or bytes, not {type(other).__name__}")
        return to_bytes(other)


@dataclass(frozen=True)
class Txn:
    """A nested transaction, usable as an op inside another txn's branch."""

    compare: Sequence[Compare] = ()
    success: Sequence[Op] = ()
    failure: Sequence[Op] = ()

    def to_pb(self) -> rpc_pb2.TxnRequest:
        return rpc_pb2.TxnRequest(
            compare=[c.to_pb() for c in self.compare],
            success=[op.to_op() for op in self.success],
            failure=[op.to_op() for op in self.failure],
        )

    def to_op(self) -> rpc_pb2.RequestOp:
        return rpc_pb2.RequestOp(request_txn=self.to_pb())

    def is_read_only(self) -> bool:
        """True when no branch (recursively) writes: such a txn is safe to retry."""
        ops = (*self.success, *self.failure)
        return all(isinstance(op, Get) or (isinstance(op, Txn) and op.is_read_only()) for op in ops)


Op: TypeAlias = Get | Put | Delete | Txn
