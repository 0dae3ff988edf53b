"""The errors raised by the recipes (exported from :mod:`coord`). Each derives from :class:`coord.errors.CoordError`;
the timeouts also derive from the built-in :class:`TimeoutError`.
"""

from __future__ import annotations

from coord.errors import CoordError

__all__ = [
    "BarrierTimeout",
    "ClaimLost",
    "ConfigInvalid",
    "DiscoveryTimeout",
    "ElectionTimeout",
    "LeadershipLost",
    "LockLost",
    "LockNotHeld",
    "LockTimeout",
    "NoInstanceAvailable",
    "NotLeader",
    "QueueEmpty",
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


class BarrierTimeout(CoordError, TimeoutError):
    """A barrier's ``wait``, or a double barrier's ``enter`` or ``leave``, did not finish within its timeout. A double
    barrier participant that timed out has withdrawn its key, so it blocks nobody."""


class QueueEmpty(CoordError, TimeoutError):
    """A queue's ``get`` found no visible item within its timeout."""


class ClaimLost(CoordError):
    """``ack``/``nack`` of a queue item this consumer no longer holds: its lease expired (or was revoked) and the item
    was returned to the queue, so it has been or will be delivered again. Nothing was applied."""


class DiscoveryTimeout(CoordError, TimeoutError):
    """``wait_ready`` did not see enough instances that are up within its timeout."""


class NoInstanceAvailable(CoordError, LookupError):
    """``pick`` found no registered instance of the service that is up (none registered, or all draining)."""


class ConfigInvalid(CoordError, ValueError):
    """A configuration read from the store does not fit its model (bad JSON/YAML, a missing required field, a value
    of the wrong type, or the model's own validation failed). The message names the key or field."""
