"""Applying committed log entries to the MVCC store.

``apply`` is deterministic: the same entries applied to the same state give the same state and the same responses on
every member and on every replay. It never leaves a partial change behind: a request that is refused raises
:class:`Rejected` before it writes anything, and the refusal is the request's result.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError, Message

from coord._proto.etcdserverpb import rpc_pb2
from coord.errors import MALFORMED_REQUEST, MEMBER_NOT_FOUND, NO_SPACE
from coord.server import alarms, lease, membership
from coord.server.auth.apply import AUTH_KINDS, AuthApplier
from coord.server.auth.store import AuthStore
from coord.server.mvcc import Event, MvccWriter, kv_ops
from coord.server.raft import ConfChange, ConfChangeType
from coord.server.rejection import Rejected
from coord.server.requests import AuthInfo, Kind, decode_entry, request_id_of
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
    # Whether the member table changed.
    members_changed: bool = False


class Applier:
    """Turns entries into MVCC changes inside the caller's LMDB write transaction."""

    def __init__(self, backend: Backend, min_lease_ttl: int) -> None:
        self._backend = backend
        self._min_lease_ttl = min_lease_ttl
        self._txn: Any = None
        # Auth entries, and the permission checks of KV and lease entries against the header they carry.
        self.auth = AuthApplier(AuthStore(backend))

    def applied_index(self, txn: Any) -> int:
        raw = txn.get(META_APPLIED, db=self._backend.meta)
        return int.from_bytes(raw, "big") if raw else 0

    def mark_applied(self, txn: Any, index: int) -> None:
        """Record an entry with nothing to apply (a new leader's empty entry) as applied."""
        txn.put(META_APPLIED, u64(index), db=self._backend.meta)

    def apply_conf_change(self, txn: Any, index: int, cc: ConfChange) -> None:
        """Apply a Raft membership change to the member table (the Raft side is the node's business)."""
        if cc.type == ConfChangeType.REMOVE_NODE:
            membership.remove_member(self._backend, txn, cc.node_id)
        else:
            members = membership.load_members(self._backend, txn)
            existing = members.get(cc.node_id)
            learner = cc.type == ConfChangeType.ADD_LEARNER
            if existing is not None:
                existing.is_learner = learner
                membership.put_member(self._backend, txn, existing)
            elif cc.context:
                info = rpc_pb2.Member.FromString(cc.context)
                member = membership.Member(
                    cc.node_id, info.name, list(info.peerURLs), list(info.clientURLs), is_learner=learner
                )
                membership.put_member(self._backend, txn, member)
        txn.put(META_APPLIED, u64(index), db=self._backend.meta)

    def apply(self, txn: Any, entry: LogEntry) -> Applied:
        """Apply one entry and record it as applied, in ``txn``."""
        try:
            decoded = decode_entry(entry.data)
        except (ValueError, struct.error, DecodeError):
            # Every member fails the same way on the same bytes, so refusing the entry keeps them identical; a bad
            # entry must never stop a member.
            request_id = request_id_of(entry.data)
            txn.put(META_APPLIED, u64(entry.index), db=self._backend.meta)
            return Applied(request_id, Rejected(MALFORMED_REQUEST), self._current_revision(txn), [], [])
        kind, request_id, request = decoded.kind, decoded.request_id, decoded.request
        if kind in (Kind.MEMBER_ATTR, Kind.MEMBER_UPDATE):
            assert isinstance(request, rpc_pb2.Member)
            outcome = self._apply_member(txn, kind, request)
            txn.put(META_APPLIED, u64(entry.index), db=self._backend.meta)
            return Applied(request_id, outcome, self._current_revision(txn), [], [], members_changed=True)
        if kind is Kind.ALARM:
            assert isinstance(request, rpc_pb2.AlarmRequest)
            response = alarms.apply_alarm(self._backend, txn, request)
            txn.put(META_APPLIED, u64(entry.index), db=self._backend.meta)
            return Applied(request_id, response, self._current_revision(txn), [], [])
        writer = MvccWriter(self._backend, txn)
        self._txn = txn
        lease_changes: list[tuple[int, int]] = []
        result: Result
        try:
            if alarms.adds_data(kind.name, request) and alarms.nospace(self._backend, txn):
                raise Rejected(NO_SPACE)
            result = self._dispatch(writer, kind, request, lease_changes, decoded.auth)
        except Rejected as refusal:
            result = refusal
        finally:
            self._txn = None
        revision = writer.finish()
        txn.put(META_APPLIED, u64(entry.index), db=self._backend.meta)
        return Applied(request_id, result, revision, writer.events, lease_changes)

    def _dispatch(
        self,
        writer: MvccWriter,
        kind: Kind,
        request: Message,
        lease_changes: list[tuple[int, int]],
        auth: AuthInfo | None = None,
    ) -> Message:
        if kind in AUTH_KINDS:
            return self.auth.apply(writer.txn, kind, request, auth)
        self.auth.check(writer, writer.txn, kind, request, auth)
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
        if kind is Kind.LEASE_CHECKPOINT:
            assert isinstance(request, rpc_pb2.LeaseCheckpointRequest)
            return lease.apply_checkpoint(self._backend, writer.txn, request)
        assert isinstance(request, rpc_pb2.CompactionRequest)
        writer.compact(request.revision)
        resp = rpc_pb2.CompactionResponse()
        resp.header.revision = writer.current_revision
        return resp

    def _apply_member(self, txn: Any, kind: Kind, info: rpc_pb2.Member) -> Result:
        member = membership.load_members(self._backend, txn).get(info.ID)
        if member is None:
            return Rejected(MEMBER_NOT_FOUND)
        if kind is Kind.MEMBER_ATTR:
            member.name = info.name
            member.client_urls = list(info.clientURLs)
        else:
            member.peer_urls = list(info.peerURLs)
        membership.put_member(self._backend, txn, member)
        return rpc_pb2.Member(ID=member.id)

    def _current_revision(self, txn: Any) -> int:
        return MvccWriter(self._backend, txn).read_revision

    def lease_exists(self, lease_id: int) -> bool:
        """Whether ``lease_id`` is granted, as of the transaction being applied."""
        return lease.lease_exists(self._backend, self._txn, lease_id)
