"""Typed results of client calls: small frozen dataclasses built from the wire responses.

Every result that comes from a server response keeps its :class:`Header`, so callers can always read the store
revision the answer reflects (``result.header.revision``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from coord._proto.etcdserverpb import rpc_pb2
from coord._proto.mvccpb import kv_pb2

__all__ = [
    "CompactResult",
    "DeleteResult",
    "GetResult",
    "Header",
    "KeyValue",
    "PutResult",
    "TxnResult",
    "WatchEvent",
    "WatchEventType",
]


@dataclass(frozen=True, slots=True)
class Header:
    """The response header: which cluster and member answered, at which store revision and Raft term."""

    cluster_id: int
    member_id: int
    revision: int
    raft_term: int

    @classmethod
    def from_pb(cls, header: rpc_pb2.ResponseHeader) -> Header:
        return cls(header.cluster_id, header.member_id, header.revision, header.raft_term)


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One key at one revision. ``lease`` is 0 when the key has no lease."""

    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0

    @classmethod
    def from_pb(cls, kv: kv_pb2.KeyValue) -> KeyValue:
        return cls(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease)


@dataclass(frozen=True, slots=True)
class GetResult:
    """The answer to a range read. ``count`` counts every match (ignoring ``limit``); ``more`` is True when
    ``limit`` cut the result."""

    header: Header
    kvs: tuple[KeyValue, ...]
    more: bool
    count: int

    @property
    def revision(self) -> int:
        """The store revision this read reflects."""
        return self.header.revision

    @property
    def kv(self) -> KeyValue | None:
        """The first key-value, or None when nothing matched."""
        return self.kvs[0] if self.kvs else None

    @property
    def value(self) -> bytes | None:
        """The first value, or None when nothing matched."""
        return self.kvs[0].value if self.kvs else None

    @classmethod
    def from_pb(cls, resp: rpc_pb2.RangeResponse) -> GetResult:
        return cls(Header.from_pb(resp.header), tuple(KeyValue.from_pb(kv) for kv in resp.kvs), resp.more, resp.count)


@dataclass(frozen=True, slots=True)
class PutResult:
    """The answer to a put; ``prev_kv`` is set only when requested and the key existed."""

    header: Header
    prev_kv: KeyValue | None = None

    @property
    def revision(self) -> int:
        return self.header.revision

    @classmethod
    def from_pb(cls, resp: rpc_pb2.PutResponse) -> PutResult:
        prev = KeyValue.from_pb(resp.prev_kv) if resp.HasField("prev_kv") else None
        return cls(Header.from_pb(resp.header), prev)


@dataclass(frozen=True, slots=True)
class DeleteResult:
    """The answer to a delete: how many keys were deleted and, when requested, their last versions."""

    header: Header
    deleted: int
    prev_kvs: tuple[KeyValue, ...] = ()

    @property
    def revision(self) -> int:
        return self.header.revision

    @classmethod
    def from_pb(cls, resp: rpc_pb2.DeleteRangeResponse) -> DeleteResult:
        return cls(Header.from_pb(resp.header), resp.deleted, tuple(KeyValue.from_pb(kv) for kv in resp.prev_kvs))


@dataclass(frozen=True, slots=True)
class TxnResult:
    """The answer to a transaction: which branch ran, and one result per op of that branch, in order."""

    header: Header
    succeeded: bool
    responses: tuple[GetResult | PutResult | DeleteResult | TxnResult, ...] = field(default=())

    @property
    def revision(self) -> int:
        return self.header.revision

    @classmethod
    def from_pb(cls, resp: rpc_pb2.TxnResponse) -> TxnResult:
        out: list[GetResult | PutResult | DeleteResult | TxnResult] = []
        for op in resp.responses:
            kind = op.WhichOneof("response")
            if kind == "response_range":
                out.append(GetResult.from_pb(op.response_range))
            elif kind == "response_put":
                out.append(PutResult.from_pb(op.response_put))
            elif kind == "response_delete_range":
                out.append(DeleteResult.from_pb(op.response_delete_range))
            elif kind == "response_txn":
                out.append(TxnResult.from_pb(op.response_txn))
        return cls(Header.from_pb(resp.header), resp.succeeded, tuple(out))


@dataclass(frozen=True, slots=True)
class CompactResult:
    """The answer to a compaction."""

    header: Header


class WatchEventType(enum.Enum):
    PUT = "PUT"
    DELETE = "DELETE"


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change seen by a watch.

    ``revision`` is the revision of the change (``kv.mod_revision``). ``prev_kv`` is set when the watch asked for it.
    ``resynced`` is True for events synthesised after the watch's start revision was compacted away: the client
    re-read the range and delivers the difference (a PUT for each key changed since the last delivered revision, a
    DELETE for each key that disappeared); such events carry the state at the re-read revision, intermediate
    versions are gone, and ``prev_kv`` is None.
    """

    type: WatchEventType
    kv: KeyValue
    prev_kv: KeyValue | None = None
    resynced: bool = False

    @property
    def key(self) -> bytes:
        return self.kv.key

    @property
    def value(self) -> bytes:
        return self.kv.value

    @property
    def revision(self) -> int:
        return self.kv.mod_revision

    @classmethod
    def from_pb(cls, ev: kv_pb2.Event) -> WatchEvent:
        kind = WatchEventType.DELETE if ev.type == kv_pb2.Event.DELETE else WatchEventType.PUT
        prev = KeyValue.from_pb(ev.prev_kv) if ev.HasField("prev_kv") else None
        return cls(kind, KeyValue.from_pb(ev.kv), prev)
