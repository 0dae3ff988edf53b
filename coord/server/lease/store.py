"""The replicated part of leases: grants, revokes and TTL checkpoints, applied inside the applier's LMDB write
transaction, identically on every member.

DB ``leases`` maps ``i64(lease id)`` to the lease record: ``i64(granted TTL)``, optionally followed by
``i64(remaining TTL)``, the last checkpointed remaining TTL in seconds (etcd's ``remainingTTL``; 0 or absent means
"no checkpoint: the full TTL"). Records written before checkpoints existed are 8 bytes and load unchanged; a record
without a checkpoint is still written as 8 bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from coord._proto.etcdserverpb import rpc_pb2
from coord.errors import LEASE_EXISTS, LEASE_NOT_FOUND, LEASE_TTL_TOO_LARGE, MALFORMED_REQUEST
from coord.server.mvcc import MvccWriter
from coord.server.rejection import Rejected
from coord.server.storage.backend import Backend, from_i64, i64

MAX_LEASE_TTL = 9_000_000_000  # seconds, as etcd

_RECORD = struct.Struct(">qq")


@dataclass(frozen=True, slots=True)
class StoredLease:
    """A granted lease as the log left it: its granted TTL and its checkpointed remaining TTL (0 = none)."""

    ttl: int
    remaining: int = 0

    @property
    def starting_ttl(self) -> int:
        """The TTL a new leader starts this lease at (before its extension): the checkpoint when there is one."""
        return self.remaining if 0 < self.remaining < self.ttl else self.ttl


def encode_record(lease: StoredLease) -> bytes:
    """The ``leases`` DB value of ``lease`` (8 bytes without a checkpoint, as before checkpoints existed)."""
    if lease.remaining == 0:
        return i64(lease.ttl)
    return _RECORD.pack(lease.ttl, lease.remaining)


def decode_record(raw: bytes) -> StoredLease:
    """Inverse of :func:`encode_record`; also reads the 8-byte records of older versions."""
    if len(raw) >= _RECORD.size:
        ttl, remaining = _RECORD.unpack_from(raw)
        return StoredLease(int(ttl), int(remaining))
    return StoredLease(from_i64(bytes(raw[:8])))


def lease_exists(backend: Backend, txn: Any, lease_id: int) -> bool:
    return txn.get(i64(lease_id), db=backend.leases) is not None


def apply_grant(backend: Backend, txn: Any, req: rpc_pb2.LeaseGrantRequest, min_ttl: int) -> rpc_pb2.LeaseGrantResponse:
    """Grant ``req.ID`` (chosen by the proposer) with ``req.TTL`` raised to the minimum; refuses a TTL above the maximum
    and an id in use."""
    if req.TTL > MAX_LEASE_TTL:
        raise Rejected(LEASE_TTL_TOO_LARGE)
    if lease_exists(backend, txn, req.ID):
        raise Rejected(LEASE_EXISTS)
    ttl = max(req.TTL, min_ttl)
    txn.put(i64(req.ID), encode_record(StoredLease(ttl)), db=backend.leases)
    return rpc_pb2.LeaseGrantResponse(ID=req.ID, TTL=ttl)


def apply_revoke(backend: Backend, writer: MvccWriter, txn: Any, lease_id: int) -> rpc_pb2.LeaseRevokeResponse:
    """Delete the lease and every key attached to it, all in the writer's one revision."""
    if not lease_exists(backend, txn, lease_id):
        raise Rejected(LEASE_NOT_FOUND)
    for key in writer.lease_keys(lease_id):
        writer.delete_range(key, None)
    txn.delete(i64(lease_id), db=backend.leases)
    return rpc_pb2.LeaseRevokeResponse()


def apply_checkpoint(
    backend: Backend, txn: Any, req: rpc_pb2.LeaseCheckpointRequest
) -> rpc_pb2.LeaseCheckpointResponse:
    """Record each checkpoint's remaining TTL next to its lease's granted TTL (0 clears the checkpoint).

    Leases that no longer exist are skipped (revoked after the leader took the checkpoint), as etcd does. Changes no
    key, so the store revision does not move. An empty request changes nothing (a new leader proposes one as a
    barrier: once it is applied, every checkpoint of earlier terms is too).

    Raises Rejected, before writing anything, for a negative remaining TTL (MALFORMED_REQUEST) or one above the
    maximum lease TTL (LEASE_TTL_TOO_LARGE): no coord leader proposes either.
    """
    for checkpoint in req.checkpoints:
        if checkpoint.remaining_TTL < 0:
            raise Rejected(MALFORMED_REQUEST)
        if checkpoint.remaining_TTL > MAX_LEASE_TTL:
            raise Rejected(LEASE_TTL_TOO_LARGE)
    for checkpoint in req.checkpoints:
        key = i64(checkpoint.ID)
        raw = txn.get(key, db=backend.leases)
        if raw is None:
            continue
        stored = decode_record(raw)
        txn.put(key, encode_record(StoredLease(stored.ttl, checkpoint.remaining_TTL)), db=backend.leases)
    return rpc_pb2.LeaseCheckpointResponse()


def stored_leases(backend: Backend, txn: Any) -> dict[int, StoredLease]:
    """Every granted lease: id -> its stored record."""
    with txn.cursor(db=backend.leases) as cursor:
        return {from_i64(k): decode_record(v) for k, v in cursor}
