"""Distributed locks: :class:`Lock` (asyncio) and its blocking facade :class:`SyncLock`.

The algorithm is etcd's ``concurrency`` mutex (see :mod:`coord.recipes._hold`): waiters queue by the create revision
of their keys and each waits only for its predecessor's key to go, so a release wakes one waiter. Read/write locks and
semaphores are the same handle with another admission policy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import TracebackType

from coord.client import AsyncClient, Compare
from coord.errors import CoordError
from coord.recipes._common import (
    DEFAULT,
    BodyGuard,
    Default,
    NameLike,
    Runner,
    bridged,
    check_timeout,
    check_ttl,
    exit_body,
    holder_identity,
    in_thread,
    prefix_of,
)
from coord.recipes._errors import LockLost, LockNotHeld, LockTimeout
from coord.recipes._hold import Exclusive, Policy, acquire_key
from coord.recipes._holder import Holder

__all__ = ["Lock", "SyncLock"]


class Lock(Holder[LockLost]):
    """A distributed mutual-exclusion lock, fair (first come, first served) and fenced.

    Example::

        async with client.lock("jobs", timeout=10) as lock:
            # only one holder in the whole cluster runs this at a time
            await client.txn([lock.guard()], [coord.Put("jobs/state", "done")])  # fenced write

    Obtain it with :meth:`coord.AsyncClient.lock` (``coord.lock`` / :meth:`coord.Client.lock` give a
    :class:`SyncLock`). Parameters:

    - ``name``: the lock's name; its keys live under ``name + "/"`` (compatible with ``etcdctl lock name``).
    - ``ttl``: None (default) holds the lock on the client's session lease; ``N`` holds each acquisition on a lease of
      its own of N seconds. Either way, a holder that dies (or is cut off) loses the lock after the TTL.
    - ``timeout``: how long entering / :meth:`acquire` waits (None: forever).

    Guarantees and errors:

    - Entering raises :class:`coord.LockTimeout` when the lock was not acquired within ``timeout``; the body does not
      run and the waiter's key is removed. Cancelling a waiting task also removes its key.
    - :attr:`token` is a fencing token (the key's create revision): it increases with every acquisition by anyone.
      :meth:`guard` gives the txn compare that lets a write succeed only while this acquisition still holds.
    - A lock can be lost while held: its lease expires (keep-alives did not get through within the TTL) or is
      revoked, or its key is deleted. Loss is never silent: :meth:`on_lost` callbacks run, :attr:`is_held` turns
      False, the task running an ``async with`` body is cancelled and the ``async with`` raises
      :class:`coord.LockLost`.
    - Not reentrant: acquiring a handle that is already held waits (like :class:`threading.Lock`) until it is
      released or the timeout passes. One handle may be shared by tasks; they queue locally first.
    - :meth:`release` is idempotent and never raises; a key that cannot be deleted at once is deleted in the
      background (or goes with the lease).
    """

    def __init__(
        self,
        client: AsyncClient,
        name: NameLike,
        *,
        ttl: int | None = None,
        timeout: float | None = None,
        _own_prefix: bytes | None = None,
        _policy: Policy | None = None,
        _kind: str = "lock",
    ) -> None:
        super().__init__()
        prefix = prefix_of(name)
        self.name = name if isinstance(name, str) else name.decode(errors="replace")
        self.ttl = check_ttl(ttl)
        self.timeout = check_timeout(timeout)
        self._client = client
        self._own_prefix = _own_prefix or prefix
        self._policy = _policy or Exclusive(prefix)
        self._kind = _kind
        self._local = asyncio.Lock()
        self._holding = False  # this handle holds ``_local`` for a current acquisition

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._kind} {self.name!r} held={self.is_held}>"

    def _lost_error(self, reason: str) -> LockLost:
        return LockLost(f"{self._kind} {self.name!r} was lost: {reason}")

    def _not_held_error(self) -> CoordError:
        return LockNotHeld(f"{self._kind} {self.name!r} has not been acquired")

    @property
    def is_held(self) -> bool:
        """True from acquisition until release or loss. While the session is SUSPENDED (keep-alives failing, lease
        possibly still alive) the lock counts as held; fence writes with :meth:`guard` to be safe."""
        return self._is_held

    @property
    def token(self) -> int:
        """The fencing token of the current (or last) acquisition; raises LockNotHeld before the first one."""
        return self._current().token

    async def acquire(self, *, blocking: bool = True, timeout: float | Default | None = DEFAULT) -> bool:
        """Acquire the lock. Returns True when acquired.

        ``blocking=False`` tries once (a try-lock): returns False at once if anyone else holds the lock or waits
        before us. Otherwise waits up to ``timeout`` (default: the handle's) and raises :class:`coord.LockTimeout`
        when it passes. Raises client errors (e.g. UnavailableError) when the cluster cannot be reached in time.
        """
        wait = self.timeout if timeout is DEFAULT else check_timeout(timeout)
        deadline = None if wait is None else asyncio.get_running_loop().time() + wait
        if not blocking and self._local.locked():
            return False
        try:
            async with asyncio.timeout_at(deadline):
                await self._local.acquire()
        except TimeoutError:
            raise self._timeout(wait) from None
        try:
            self._lost = None
            hold = await acquire_key(
                self._client, prefix=self._own_prefix, policy=self._policy, ttl=self.ttl, value=holder_identity(),
                deadline=deadline, blocking=blocking, on_lost=self._on_lost,
            )  # fmt: skip
        except TimeoutError:
            self._local.release()
            raise self._timeout(wait) from None
        except BaseException:
            self._local.release()
            raise
        if hold is None:
            self._local.release()
            return False
        self._hold = hold
        self._holding = True
        return True

    def _timeout(self, wait: float | None) -> LockTimeout:
        return LockTimeout(f"{self._kind} {self.name!r} was not acquired within {wait}s")

    async def try_acquire(self) -> bool:
        """Acquire the lock only if that is possible at once (``acquire(blocking=False)``)."""
        return await self.acquire(blocking=False)

    async def release(self) -> None:
        """Release the lock (delete its key). Idempotent; does nothing when not held."""
        if not self._holding:
            return
        self._holding = False
        try:
            if self._hold is not None:
                await self._hold.release()
        finally:
            self._local.release()

    async def __aenter__(self) -> Lock:
        await self.acquire()
        self._arm(BodyGuard())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        guard = self._disarm()
        error = self._lost
        await self.release()
        exit_body(guard, error, exc)


class SyncLock:
    """The blocking form of :class:`Lock` (same guarantees), from ``coord.lock(...)`` or :meth:`coord.Client.lock`.

    Example::

        with coord.lock("jobs", ttl=10, timeout=30) as lock:
            do_the_work()
            if not lock.is_held:   # or: lock.wait_lost(timeout=0)
                ...                # the lock was lost meanwhile; the with-block raises coord.LockLost on exit

    A blocking body cannot be interrupted: on loss, :attr:`is_held` turns False, :meth:`wait_lost` returns,
    ``on_lost`` callbacks run (in a worker thread), and leaving the ``with`` block raises :class:`coord.LockLost`.
    ``async with`` also works (from any event loop): there the body's task is cancelled on loss, as with
    :class:`Lock`.
    """

    def __init__(self, runner: Runner, lock: Lock) -> None:
        self._runner = runner
        self.lock = lock

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.lock._kind} {self.lock.name!r} held={self.is_held}>"

    @property
    def name(self) -> str:
        return self.lock.name

    @property
    def is_held(self) -> bool:
        return self.lock.is_held

    @property
    def token(self) -> int:
        return self.lock.token

    @property
    def key(self) -> bytes:
        return self.lock.key

    @property
    def lost_error(self) -> LockLost | None:
        return self.lock.lost_error

    def guard(self) -> Compare:
        return self.lock.guard()

    def acquire(self, *, blocking: bool = True, timeout: float | Default | None = DEFAULT) -> bool:
        return self._runner.run(self.lock.acquire(blocking=blocking, timeout=timeout))

    def try_acquire(self) -> bool:
        return self._runner.run(self.lock.try_acquire())

    def release(self) -> None:
        self._runner.run(self.lock.release())

    def on_lost(self, callback: Callable[[LockLost], object]) -> Callable[[], None]:
        """Call ``callback(error)`` in a worker thread when a holding of this handle is lost. Returns a remover."""

        async def add() -> Callable[[], None]:
            return self.lock.on_lost(in_thread(callback))

        remove = self._runner.run(add())

        def remove_callback() -> None:
            self._runner.loop.call_soon_threadsafe(remove)

        return remove_callback

    def wait_lost(self, timeout: float | None = None) -> bool:
        """Block until the current holding ends (lost or released): True once it has, False after ``timeout``."""
        return self._runner.run(self.lock.wait_lost(timeout))

    def __enter__(self) -> SyncLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        error = self.lock.lost_error
        self.release()
        if error is not None and (exc is None or isinstance(exc, Exception)):
            raise error from exc

    async def __aenter__(self) -> SyncLock:
        await bridged(self._runner, self.lock.acquire())
        self.lock._arm(BodyGuard())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        guard = self.lock._disarm()
        error = self.lock.lost_error
        await bridged(self._runner, self.lock.release())
        exit_body(guard, error, exc)
