"""Leases: replicated grants and attached keys, member-local deadlines and expiry."""

from coord.server.lease.lessor import (
    MAX_LEASE_TTL,
    Lessor,
    apply_grant,
    apply_revoke,
    lease_exists,
    min_lease_ttl,
    stored_leases,
)

__all__ = [
    "MAX_LEASE_TTL",
    "Lessor",
    "apply_grant",
    "apply_revoke",
    "lease_exists",
    "min_lease_ttl",
    "stored_leases",
]
