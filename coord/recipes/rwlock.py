"""Read/write locks: many readers or one writer, fair to writers (etcd's ``recipes`` rwmutex).

Readers' keys live under ``name/read/``, writers' under ``name/write/``. A reader waits only for the newest writer key
created before its own (a writer that waits blocks the readers that come after it, so writers do not starve); a
writer waits for the newest key of either kind created before its own. Each side is a :class:`~coord.recipes.lock.Lock`
with that admission policy, so tokens, guards, loss and timeouts behave exactly as for locks.
"""

from __future__ import annotations

from coord.client import AsyncClient
from coord.recipes._common import DEFAULT, Default, NameLike, Runner, check_timeout, check_ttl, prefix_of
from coord.recipes._hold import Exclusive
from coord.recipes.lock import Lock, SyncLock

__all__ = ["RWLock", "SyncRWLock"]


class RWLock:
    """A distributed read/write lock: any number of readers, or one writer.

    Example::

        rw = client.rwlock("config")
        async with rw.read():          # shared with other readers
            ...
        async with rw.write() as lock: # exclusive; lock.guard() fences writes
            ...

    Each call of :meth:`read` or :meth:`write` returns a new :class:`~coord.recipes.lock.Lock` handle (so concurrent
    tasks each get their own), with the same ``ttl``, ``timeout``, fencing, loss and :class:`coord.LockTimeout`
    semantics as :meth:`coord.AsyncClient.lock`. Fair: a waiting writer holds back readers that arrive after it.
    Do not use the same name for a plain lock.
    """

    def __init__(
        self, client: AsyncClient, name: NameLike, *, ttl: int | None = None, timeout: float | None = None
    ) -> None:
        self._client = client
        self._name = name
        self._prefix = prefix_of(name)
        self.name = name if isinstance(name, str) else name.decode(errors="replace")
        self.ttl = check_ttl(ttl)
        self.timeout = check_timeout(timeout)

    def __repr__(self) -> str:
        return f"<RWLock {self.name!r}>"

    def read(self, *, timeout: float | Default | None = DEFAULT) -> Lock:
        """A handle on a shared (read) hold; ``timeout`` defaults to the RWLock's."""
        return Lock(
            self._client, self._name, ttl=self.ttl, timeout=self.timeout if timeout is DEFAULT else timeout,
            _own_prefix=self._prefix + b"read/", _policy=Exclusive(self._prefix + b"write/"), _kind="read lock",
        )  # fmt: skip

    def write(self, *, timeout: float | Default | None = DEFAULT) -> Lock:
        """A handle on an exclusive (write) hold; ``timeout`` defaults to the RWLock's."""
        return Lock(
            self._client, self._name, ttl=self.ttl, timeout=self.timeout if timeout is DEFAULT else timeout,
            _own_prefix=self._prefix + b"write/", _policy=Exclusive(self._prefix), _kind="write lock",
        )  # fmt: skip


class SyncRWLock:
    """The blocking form of :class:`RWLock`: ``with coord.rwlock("config").read(): ...``; :meth:`read` and
    :meth:`write` return :class:`~coord.recipes.lock.SyncLock` handles."""

    def __init__(self, runner: Runner, rwlock: RWLock) -> None:
        self._runner = runner
        self.rwlock = rwlock

    @property
    def name(self) -> str:
        return self.rwlock.name

    def __repr__(self) -> str:
        return f"<SyncRWLock {self.name!r}>"

    def read(self, *, timeout: float | Default | None = DEFAULT) -> SyncLock:
        return SyncLock(self._runner, self.rwlock.read(timeout=timeout))

    def write(self, *, timeout: float | Default | None = DEFAULT) -> SyncLock:
        return SyncLock(self._runner, self.rwlock.write(timeout=timeout))
