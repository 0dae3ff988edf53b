"""The errors raised by the recipes (exported from :mod:`coord`). Each derives from :class:`coord.errors.CoordError`;
the timeouts also derive from the built-in :class:`TimeoutError`.
"""

from __future__ import annotations

from coord.errors import CoordError

__all__ = [
    "ElectionTimeout",
    "LeadershipLost",
    "LockLost",
    "LockNotHeld",
    "LockTimeout",
    "NotLeader",
    "TransactionConflict",
]


class LockTimeout(CoordError, TimeoutError):
    """A lock, read/write lock or semaphore was not acquired within its timeout. The waiter's key was removed, so
    the attempt left nothing behind; the protected code did not run."""


class LockLost(CoordError):
    """A held lock (or read/write lock, or semaphore slot) was lost before it was released: its lease expired or was
    revoked, or its key was deleted by someone else. Another holder may already have it; writes fenced with
    ``lock.guard()`` are rejected from then on."""


class LockNotHeld(CoordError):
    """``token``, ``key`` or ``guard()`` was used on a lock handle that has never been acquired."""


class ElectionTimeout(CoordError, TimeoutError):
    """A campaign did not win leadership within its timeout; its candidate key was removed."""


class NotLeader(CoordError):
    """An operation that needs leadership (``proclaim``, ``check()``, ``coord.leadership()``) was called without it."""


class LeadershipLost(NotLeader):
    """Leadership was lost before it was resigned: the leader's lease expired or was revoked, or its key was deleted.
    Another candidate may already lead; writes fenced with ``leadership.guard()`` are rejected from then on."""


class TransactionConflict(CoordError):
    """An optimistic transaction (``stm``, ``counter``) kept conflicting with concurrent writers and gave up after its
    maximum number of attempts; nothing was written by the last attempt."""
