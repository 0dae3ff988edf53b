"""Leases: replicated grants, attached keys and TTL checkpoints (store), member-local deadlines and expiry (lessor)."""

from coord.server.lease.lessor import Lessor, min_lease_ttl
from coord.server.lease.store import (
    MAX_LEASE_TTL,
    StoredLease,
    apply_checkpoint,
    apply_grant,
    apply_revoke,
    lease_exists,
    stored_leases,
)

__all__ = [
    "MAX_LEASE_TTL",
    "Lessor",
    "StoredLease",
    "apply_checkpoint",
    "apply_grant",
    "apply_revoke",
    "lease_exists",
    "min_lease_ttl",
    "stored_leases",
]
