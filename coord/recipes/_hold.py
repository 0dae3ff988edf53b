"""Acquiring and holding a key: the algorithm behind locks, read/write locks, semaphores and leader election.

Acquiring (etcd's ``concurrency`` mutex, generalised):

1. Create a fresh key under the recipe's prefix, attached to the holding's lease, with a txn on
   ``CreateRevision(key) == 0`` (else read it back): a create retried after an ambiguous failure finds its own key.
   The key's create revision orders the contenders and is the holding's fencing token; it grows with every
   acquisition.
2. In one txn, check that the key still exists and read the contenders created before it; the recipe's
   :class:`Policy` either admits the key or names one thing to wait for (a single predecessor key, so a release
   wakes one waiter, not the herd).
3. Wait for that thing with a watch starting right after the checked revision (nothing is missed), then go to 2.
   If the lease is lost meanwhile, the key is gone: start again at 1 with a new key.

On a timeout, a cancellation or an error the waiter's key is deleted before the error propagates.

Holding: a watch on the held key and the lease's loss signal. Either one ends the holding as *lost* exactly once:
the key was deleted (by someone else, or by the lease's expiry) or the lease is gone or may be.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from coord.client import (
    AsyncClient,
    CreateRevision,
    Get,
    GetResult,
    Put,
    SortOrder,
    SortTarget,
    Watcher,
    WatchEventType,
)
from coord.errors import CompactedError, DeadlineExceededError, LeaseNotFoundError, UnavailableError
from coord.recipes._common import new_key, span, spawn
from coord.recipes._lease import LeaseScope, open_scope

__all__ = ["Blocked", "Exclusive", "Hold", "Policy", "acquire_key", "contenders_before"]

log = logging.getLogger("coord.recipes")


@dataclass(frozen=True, slots=True)
class Blocked:
    """What a waiting key waits for: a change of ``key`` (or of any key under it, with ``prefix``) after revision
    ``after``. A DELETE always counts (under a prefix, only of keys created before ``before``); a PUT counts when
    ``wake_on_put``."""

    key: bytes
    after: int
    prefix: bool = False
    before: int = 0
    wake_on_put: bool = False


class Policy(Protocol):
    """Decides when a key is admitted. ``announce``: an admitted key that had to wait writes itself once (bumping
    its mod revision) so that a successor waiting on it with ``wake_on_put`` re-checks."""

    announce: bool

    def read(self, revision: int) -> Get:
        """The read, inside the check txn, of what decides the admission of the key created at ``revision``."""
        ...

    def blocked(self, contenders: GetResult, revision: int, checked_at: int) -> Blocked | None:
        """None when admitted, else what to wait for (``checked_at`` is the check txn's revision)."""
        ...


def contenders_before(prefix: bytes, revision: int, limit: int) -> Get:
    """The ``limit`` newest keys under ``prefix`` created before ``revision``, newest first (keys only)."""
    return Get(
        prefix, prefix=True, max_create_revision=revision - 1, sort_target=SortTarget.CREATE,
        sort_order=SortOrder.DESCEND, limit=limit, keys_only=True,
    )  # fmt: skip


class Exclusive:
    """Admitted when no key under ``blocking_prefix`` was created before ours; otherwise wait for the newest such key
    (our predecessor) to be deleted. A lock: ``blocking_prefix`` is the lock's prefix."""

    announce = False

    def __init__(self, blocking_prefix: bytes) -> None:
        self.blocking_prefix = blocking_prefix

    def read(self, revision: int) -> Get:
        return contenders_before(self.blocking_prefix, revision, 1)

    def blocked(self, contenders: GetResult, revision: int, checked_at: int) -> Blocked | None:
        predecessor = contenders.kv
        return None if predecessor is None else Blocked(predecessor.key, checked_at)


class _Retry(Exception):
    """Our key or our lease is gone while contending: start again with a new key."""


class Hold:
    """A key this process holds (``token`` is its create revision), and the monitor that notices losing it."""

    def __init__(self, scope: LeaseScope, key: bytes, token: int, on_lost: Callable[[str], None]) -> None:
        self.scope = scope
        self.key = key
        self.token = token
        self.lease_id = scope.lease_id
        self.ended = asyncio.Event()
        self.lost_reason: str | None = None
        self._on_lost = on_lost
        self._watcher: Watcher | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def held(self) -> bool:
        return not self.ended.is_set()

    async def start(self, after: int) -> None:
        """Start watching the key for changes after revision ``after`` (when it was known to be ours)."""
        self._watcher = await self.scope.client.watch(self.key, start_revision=after + 1)
        self._task = spawn(self._monitor(self._watcher), name="coord-recipe-hold")
        self.scope.subscribe(self.lose)

    async def _monitor(self, watcher: Watcher) -> None:
        try:
            async for event in watcher:
                if event.type is WatchEventType.DELETE or event.kv.create_revision != self.token:
                    self.lose("its key was deleted")
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.lose(f"its key can no longer be watched ({exc})")

    def lose(self, reason: str) -> None:
        """End the holding as lost (once) and notify the owner."""
        if self.ended.is_set():
            return
        self.lost_reason = reason
        self.ended.set()
        self._stop_monitor()
        with span("lost", key=self.key.decode(errors="replace"), token=self.token, reason=reason):
            self._on_lost(reason)

    def _stop_monitor(self) -> None:
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
        if self._watcher is not None:
            spawn(self._watcher.cancel(), name="coord-recipe-unwatch")

    async def release(self) -> None:
        """End the holding and delete the key (revoke its own lease). Idempotent; never raises CoordError."""
        if self._closed:
            return
        self._closed = True
        if not self.ended.is_set():
            self.ended.set()
            self._stop_monitor()
        await _close_shielded(self.scope, self.key)  # a cancelled release still deletes the key


async def _create(scope: LeaseScope, key: bytes, value: bytes) -> int:
    """Create ``key`` (or find it, when an earlier attempt whose outcome was unknown created it); its create
    revision."""
    delay = 0.05
    while True:
        try:
            result = await scope.client.txn(
                [CreateRevision(key) == 0], [Put(key, value, lease=scope.lease_id)], [Get(key)]
            )
        except LeaseNotFoundError:
            # The lease was revoked, but its keep-alive loop has not noticed yet (it will at its next refresh):
            # wait for that rather than retrying on the same dead lease.
            await scope.lost.wait()
            raise _Retry from None
        except (DeadlineExceededError, UnavailableError) as exc:
            log.info("creating %r: %s; trying again", key, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
            continue
        if result.succeeded:
            return result.revision
        found = result.responses[0]
        assert isinstance(found, GetResult) and found.kv is not None
        return found.kv.create_revision


async def _next_change(watcher: Watcher, blocked: Blocked) -> None:
    async for event in watcher:
        if event.type is WatchEventType.DELETE:
            if not blocked.prefix or event.prev_kv is None or event.prev_kv.create_revision < blocked.before:
                return
        elif blocked.wake_on_put and event.key == blocked.key:
            return


async def _wait(client: AsyncClient, blocked: Blocked, lost: asyncio.Event) -> None:
    """Return when what ``blocked`` names may have changed; raise _Retry when ``lost`` is set first."""
    if lost.is_set():
        raise _Retry
    try:
        watcher = await client.watch(
            blocked.key, prefix=blocked.prefix, start_revision=blocked.after + 1, prev_kv=blocked.prefix
        )
    except CompactedError:
        return  # the history is gone: check again
    async with watcher:
        changed = asyncio.ensure_future(_next_change(watcher, blocked))
        gone = asyncio.ensure_future(lost.wait())
        try:
            await asyncio.wait((changed, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            changed.cancel()
            gone.cancel()
            await asyncio.gather(changed, gone, return_exceptions=True)
    if lost.is_set():
        raise _Retry
    if not changed.cancelled():
        changed.result()  # a failed watch raises here


async def _contend(
    scope: LeaseScope, key: bytes, value: bytes, policy: Policy, blocking: bool
) -> tuple[int, int] | None:
    """Create ``key`` and wait until admitted: (token, revision at which it was known to be admitted and ours), or
    None when not ``blocking`` and not admitted at once."""
    client = scope.client
    revision = await _create(scope, key, value)
    waited = False
    while True:
        check = await client.txn([CreateRevision(key) == revision], [policy.read(revision)])
        if not check.succeeded:
            raise _Retry  # our key is gone: the lease was lost while we waited
        contenders = check.responses[0]
        assert isinstance(contenders, GetResult)
        blocked = policy.blocked(contenders, revision, check.revision)
        if blocked is None:
            if waited and policy.announce:
                mark = await client.txn(
                    [CreateRevision(key) == revision], [Put(key, ignore_value=True, ignore_lease=True)]
                )
                if not mark.succeeded:
                    raise _Retry
                return revision, mark.revision
            return revision, check.revision
        if not blocking:
            return None
        waited = True
        await _wait(client, blocked, scope.lost)


async def acquire_key(
    client: AsyncClient,
    *,
    prefix: bytes,
    policy: Policy,
    ttl: int | None,
    value: bytes,
    deadline: float | None,
    blocking: bool,
    on_lost: Callable[[str], None],
) -> Hold | None:
    """Acquire a key under ``prefix`` (see the module docstring). Returns the started :class:`Hold`, or None when not
    ``blocking`` and not admitted at once. Raises TimeoutError once the loop time passes ``deadline``; the errors of
    the client calls otherwise. Whatever happens, no key of a failed attempt is left behind."""
    with span("acquire", prefix=prefix.decode(errors="replace"), blocking=blocking) as current:
        hold = await _acquire(client, prefix, policy, ttl, value, deadline, blocking, on_lost)
        current.set_attribute("acquired", hold is not None)
        if hold is not None:
            current.set_attribute("token", hold.token)
        return hold


async def _acquire(
    client: AsyncClient,
    prefix: bytes,
    policy: Policy,
    ttl: int | None,
    value: bytes,
    deadline: float | None,
    blocking: bool,
    on_lost: Callable[[str], None],
) -> Hold | None:
    while True:
        scope: LeaseScope | None = None
        key: bytes | None = None
        try:
            async with asyncio.timeout_at(deadline):
                scope = await open_scope(client, ttl)
                key = new_key(prefix, scope.lease_id)
                admitted = await _contend(scope, key, value, policy, blocking)
        except _Retry:
            assert scope is not None
            await scope.close(key)
            await asyncio.sleep(0.05)  # never spin, whatever made the attempt fail
            continue
        except BaseException:
            if scope is not None:
                await _close_shielded(scope, key)
            raise
        assert key is not None
        if admitted is None:
            await scope.close(key)
            return None
        token, known_at = admitted
        hold = Hold(scope, key, token, on_lost)
        try:
            await hold.start(known_at)
        except BaseException:
            await _close_shielded(scope, key)
            raise
        return hold


async def _close_shielded(scope: LeaseScope, key: bytes | None) -> None:
    # Runs the cleanup to the end even when the caller is being cancelled (a second cancellation leaves it running
    # in the background).
    await asyncio.shield(spawn(scope.close(key), name="coord-recipe-cleanup"))
