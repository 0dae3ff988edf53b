"""Applying committed log entries to the MVCC store.

``apply`` is deterministic: the same entries applied to the same state give the same state and the same responses on
every member and on every replay. It never leaves a partial change behind: a request that is refused raises
:class:`Rejected` before it writes anything, and the refusal is the request's result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from coord._proto.etcdserverpb import rpc_pb2
from coord.server import lease
from coord.server.mvcc import Event, MvccWriter, kv_ops
from coord.server.rejection import Rejected
from coord.server.requests import Kind, decode
from coord.server.storage import Backend, LogEntry, u64

META_APPLIED = b"applied"

Result = Message | Rejected


@dataclass(slots=True)
class Applied:
    """The outcome of applying one entry: the proposer's request id, its response or refusal, the store revision
    after it, and the changes it made (all at that revision; empty when nothing changed)."""

    request_id: int
    result: Result
    revision: int
    events: list[Event]
    # Leases granted (id, TTL) or revoked (id, 0) by this entry.
    lease_changes: list[tuple[int, int]]


class Applier:
    """Turns entries into MVCC changes inside the caller's LMDB write transaction."""

    def __init__(self, backend: Backend, min_lease_ttl: int) -> None:
        self._backend = backend
        self._min_lease_ttl = min_lease_ttl
        self._txn: Any = None

    def applied_index(self, txn: Any) -> int:
        raw = txn.get(META_APPLIED, db=self._backend.meta)
        return int.from_bytes(raw, "big") if raw else 0

    def apply(self, txn: Any, entry: LogEntry) -> Applied:
        """Apply one entry and record it as applied, in ``txn``."""
        kind, request_id, request = decode(entry.data)
        writer = MvccWriter(self._backend, txn)
        self._txn = txn
        lease_changes: list[tuple[int, int]] = []
        result: Result
        try:
            result = self._dispatch(writer, kind, request, lease_changes)
        except Rejected as refusal:
            result = refusal
        finally:
            self._txn = None
        revision = writer.finish()
        txn.put(META_APPLIED, u64(entry.index), db=self._backend.meta)
        return Applied(request_id, result, revision, writer.events, lease_changes)

    def _dispatch(
        self, writer: MvccWriter, kind: Kind, request: Message, lease_changes: list[tuple[int, int]]
    ) -> Message:
        if kind is Kind.PUT:
            assert isinstance(request, rpc_pb2.PutRequest)
            return kv_ops.put_request(writer, request, self.lease_exists)
        if kind is Kind.DELETE_RANGE:
            assert isinstance(request, rpc_pb2.DeleteRangeRequest)
            return kv_ops.delete_range(writer, request)
        if kind is Kind.TXN:
            assert isinstance(request, rpc_pb2.TxnRequest)
            return kv_ops.txn(writer, request, self.lease_exists)
        if kind is Kind.LEASE_GRANT:
            assert isinstance(request, rpc_pb2.LeaseGrantRequest)
            grant = lease.apply_grant(self._backend, writer.txn, request, self._min_lease_ttl)
            lease_changes.append((grant.ID, grant.TTL))
            grant.header.revision = writer.current_revision
            return grant
        if kind is Kind.LEASE_REVOKE:
            assert isinstance(request, rpc_pb2.LeaseRevokeRequest)
            revoke = lease.apply_revoke(self._backend, writer, writer.txn, request.ID)
            lease_changes.append((request.ID, 0))
            revoke.header.revision = writer.read_revision
            return revoke
        assert isinstance(request, rpc_pb2.CompactionRequest)
        writer.compact(request.revision)
        resp = rpc_pb2.CompactionResponse()
        resp.header.revision = writer.current_revision
        return resp

    def lease_exists(self, lease_id: int) -> bool:
        """Whether ``lease_id`` is granted, as of the transaction being applied."""
        return lease.lease_exists(self._backend, self._txn, lease_id)
