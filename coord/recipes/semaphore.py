"""Counting semaphores: at most ``limit`` holders at a time, first come first served, without a thundering herd.

Every contender creates a key under ``name/``; the key created at revision R is admitted while fewer than ``limit``
keys were created before R (keys only leave, never join, the past, so admission is stable). A waiter with more than
``limit`` keys before it waits only on its nearest predecessor, for that key to go or to announce its own admission
(a write bumping its mod revision); the first waiter in line (exactly ``limit`` keys before it) watches the prefix
for the deletion of any key created before its own. So each release wakes one waiter, and each admission one more.
"""

from __future__ import annotations

from coord.client import AsyncClient, Get, GetResult
from coord.recipes._common import NameLike, Runner, prefix_of
from coord.recipes._hold import Blocked, contenders_before
from coord.recipes.lock import Lock, SyncLock

__all__ = ["Semaphore", "SyncSemaphore"]


class _Slots:
    announce = True

    def __init__(self, prefix: bytes, limit: int) -> None:
        self.prefix = prefix
        self.limit = limit

    def read(self, revision: int) -> Get:
        # The nearest limit + 1 keys before ours: enough to tell "< limit", "== limit" and "> limit" apart.
        return contenders_before(self.prefix, revision, self.limit + 1)

    def blocked(self, contenders: GetResult, revision: int, checked_at: int) -> Blocked | None:
        before = len(contenders.kvs)
        if before < self.limit:
            return None
        if before == self.limit:
            return Blocked(self.prefix, checked_at, prefix=True, before=revision)
        return Blocked(contenders.kvs[0].key, checked_at, wake_on_put=True)


def _check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive int, not {limit!r}")
    return limit


class Semaphore(Lock):
    """A distributed counting semaphore: at most ``limit`` holders at once, admitted in arrival order.

    Example::

        async with client.semaphore("gpu", limit=4, timeout=60) as slot:
            await train(fencing_token=slot.token)

    A :class:`~coord.recipes.lock.Lock` whose admission allows ``limit`` holders; everything else is the same:
    ``ttl``, ``timeout`` and :class:`coord.LockTimeout`, :attr:`token` and :meth:`guard` (per holder), loss detection
    with :meth:`on_lost` and :class:`coord.LockLost`, try-acquire, idempotent release. Every user of one name must
    pass the same ``limit`` (a waiter applies its own ``limit``). A holder that dies frees its slot after its TTL.
    """

    def __init__(
        self,
        client: AsyncClient,
        name: NameLike,
        limit: int,
        *,
        ttl: int | None = None,
        timeout: float | None = None,
    ) -> None:
        self.limit = _check_limit(limit)
        super().__init__(
            client, name, ttl=ttl, timeout=timeout, _policy=_Slots(prefix_of(name), limit), _kind="semaphore"
        )

    def __repr__(self) -> str:
        return f"<Semaphore {self.name!r} limit={self.limit} held={self.is_held}>"


class SyncSemaphore(SyncLock):
    """The blocking form of :class:`Semaphore`: ``with coord.semaphore("gpu", 4) as slot: ...`` (see
    :class:`~coord.recipes.lock.SyncLock` for the blocking loss semantics)."""

    def __init__(self, runner: Runner, semaphore: Semaphore) -> None:
        super().__init__(runner, semaphore)
        self.semaphore = semaphore

    @property
    def limit(self) -> int:
        return self.semaphore.limit
