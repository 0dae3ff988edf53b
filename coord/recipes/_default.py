"""The module-level recipe forms (``coord.lock(...)``, ``coord.election(...)``, ...): the same factories as
:class:`coord.Client`'s, on :func:`coord.default_client` (created on first use from ``COORD_ENDPOINTS``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from coord.client import default_client
from coord.recipes._common import NameLike
from coord.recipes.counter import SyncCounter
from coord.recipes.election_sync import SyncElection
from coord.recipes.lock import SyncLock
from coord.recipes.rwlock import SyncRWLock
from coord.recipes.semaphore import SyncSemaphore
from coord.recipes.stm import SyncSTMTransaction

__all__ = ["counter", "election", "lock", "rwlock", "semaphore", "stm"]

T = TypeVar("T")


def lock(name: NameLike, *, ttl: int | None = None, timeout: float | None = None) -> SyncLock:
    """A distributed lock on the default client: ``with coord.lock("jobs", ttl=10, timeout=30) as lock:``.
    See :class:`coord.Lock` for the guarantees."""
    return default_client().lock(name, ttl=ttl, timeout=timeout)


def rwlock(name: NameLike, *, ttl: int | None = None, timeout: float | None = None) -> SyncRWLock:
    """A read/write lock on the default client: ``with coord.rwlock("cfg").write():``."""
    return default_client().rwlock(name, ttl=ttl, timeout=timeout)


def semaphore(name: NameLike, limit: int, *, ttl: int | None = None, timeout: float | None = None) -> SyncSemaphore:
    """A counting semaphore on the default client: ``with coord.semaphore("gpu", 4):``."""
    return default_client().semaphore(name, limit, ttl=ttl, timeout=timeout)


def election(name: NameLike, *, ttl: int | None = None) -> SyncElection:
    """A leader election on the default client: ``with coord.election("scheduler").campaign("me"):``."""
    return default_client().election(name, ttl=ttl)


def counter(name: NameLike, *, max_attempts: int = 64) -> SyncCounter:
    """A shared integer counter on the default client: ``coord.counter("visits").increment()``."""
    return default_client().counter(name, max_attempts=max_attempts)


def stm(fn: Callable[[SyncSTMTransaction], T], *, max_attempts: int = 16) -> T:
    """Run ``fn(tx)`` as a serializable transaction on the default client, retried on conflict."""
    return default_client().stm(fn, max_attempts=max_attempts)
