"""Leases: replicated grants, attached keys and TTL checkpoints (store), member-local deadlines and expiry (lessor)."""

from coord.server.lease.lessor import DEFAULT_CHECKPOINT_INTERVAL_S, CheckpointProposer, Lessor, min_lease_ttl
from coord.server.lease.store import (
    MAX_LEASE_TTL,
    StoredLease,
    apply_checkpoint,
    apply_grant,
    apply_revoke,
    decode_record,
    encode_record,
    lease_exists,
    stored_leases,
)

__all__ = [
    "DEFAULT_CHECKPOINT_INTERVAL_S",
    "MAX_LEASE_TTL",
    "CheckpointProposer",
    "Lessor",
    "StoredLease",
    "apply_checkpoint",
    "apply_grant",
    "apply_revoke",
    "decode_record",
    "encode_record",
    "lease_exists",
    "min_lease_ttl",
    "stored_leases",
]
