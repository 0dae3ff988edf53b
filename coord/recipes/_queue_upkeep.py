"""A queue consumer's background machinery (private to :mod:`coord.recipes.queue`): the consumer lease its claims
hang on, and the upkeep that wakes waiting consumers, makes due delayed items visible and returns the items of dead
consumers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time

from coord.client import (
    AsyncClient,
    CreateRevision,
    Delete,
    Get,
    GetResult,
    KeepAlive,
    ModRevision,
    Put,
    WatchEvent,
    WatchEventType,
)
from coord.errors import CoordError, LeaseNotFoundError
from coord.recipes._queue_keys import QueueKeys
from coord.recipes._support import PrefixWatch

__all__ = ["ConsumerLease", "QueueUpkeep"]

log = logging.getLogger("coord.recipes.queue")

_PROMOTE_BATCH = 64  # due delayed items made visible per read


class ConsumerLease:
    """The lease a consumer's claims are attached to: granted on first use with TTL ``ttl``, kept alive in the
    background; when it is lost (expired, revoked) the next :meth:`ensure` grants a new one."""

    def __init__(self, client: AsyncClient, name: str, ttl: float) -> None:
        self._client = client
        self._name = name
        self._ttl = max(math.ceil(ttl), 1)
        self.lease_id = 0
        self._lock = asyncio.Lock()
        self._keep_alive: KeepAlive | None = None
        self._monitor: asyncio.Task[None] | None = None

    async def ensure(self) -> int:
        """The live lease ID, granting a lease if there is none."""
        async with self._lock:
            if self.lease_id:
                return self.lease_id
            grant = await self._client.grant(self._ttl)
            self.lease_id = grant.id
            self._keep_alive = self._client.keep_alive(grant.id)
            self._monitor = asyncio.get_running_loop().create_task(
                self._watch(self._keep_alive, grant.id), name=f"coord-queue-lease-{grant.id:x}"
            )
            return grant.id

    async def _watch(self, keep_alive: KeepAlive, lease_id: int) -> None:
        try:
            async for _ in keep_alive:
                pass
        except LeaseNotFoundError:
            log.warning("queue %r: consumer lease %x lost; its claimed items return to the queue", self._name, lease_id)
        self.lost(lease_id)

    def lost(self, lease_id: int) -> None:
        """``lease_id`` turned out to be gone: forget it (unless it was already replaced)."""
        if self.lease_id == lease_id:
            self.lease_id = 0

    async def revoke(self) -> bool:
        """Stop keeping the lease alive and revoke it (deleting every claim on it). True if there was one."""
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
        if self._keep_alive is not None:
            await self._keep_alive.close()
        lease, self.lease_id = self.lease_id, 0
        if not lease:
            return False
        with contextlib.suppress(CoordError):
            await self._client.revoke(lease, timeout=5)
        return True


class QueueUpkeep:
    """Follows one queue's keys with a single watch and keeps the queue moving for the consumers of one handle.

    * Wake-ups: :meth:`wait_change` returns once a change that may make an item visible arrives after the revision
      the caller read at (a visible item put or returned, a delayed item added, a claim gone), or at a deadline.
    * Delayed items: :meth:`maintain` moves due ones into ``items/`` (each move compares the delayed key's mod
      revision, so concurrent consumers cannot move one twice); :attr:`next_due` is the earliest one known.
    * Dead consumers: a claim deleted without its in-flight item (ack and nack delete both in one revision; a lease
      expiry deletes only the claim) marks the item as suspect; :meth:`maintain` sweeps, also every
      ``recheck_interval`` seconds, returning in-flight items without a claim to ``items/``.
    """

    def __init__(self, client: AsyncClient, keys: QueueKeys, name: str, recheck_interval: float) -> None:
        self._client = client
        self._keys = keys
        self._name = name
        self._recheck_interval = recheck_interval
        self._watch: PrefixWatch | None = None
        self._watch_lock = asyncio.Lock()
        self._woken_at = 0  # highest revision of a change that may make an item visible
        self._changed = asyncio.Event()
        self._claims_gone: set[str] = set()
        self._claims_gone_at = 0
        self._inflight_gone: set[str] = set()
        self._suspects: set[str] = set()  # slots whose claim vanished while the item stayed in flight
        self.next_due: float | None = None  # earliest known delayed item (Unix time)
        self._scan_delayed = True
        self.next_sweep = 0.0  # event-loop time of the next periodic sweep
        self._closed = False

    async def start(self) -> None:
        """Start the watch (idempotent); it sees every change after this returns."""
        async with self._watch_lock:
            if self._watch is None and not self._closed:
                watch = PrefixWatch(
                    self._client, self._keys.root, self._on_event, self._resync, self._on_batch, name="queue-watch"
                )
                await watch.start(0)
                self._watch = watch

    # --- wake-ups --------------------------------------------------------------------------------------------

    def _wake(self, revision: int) -> None:
        self._woken_at = max(self._woken_at, revision)
        self._changed.set()
        self._changed = asyncio.Event()

    def _on_event(self, event: WatchEvent) -> None:
        keys, key = self._keys, event.key.decode()
        if event.type is WatchEventType.PUT:
            if key.startswith(keys.items):
                self._wake(event.revision)
            elif key.startswith(keys.delayed):
                due, _ = keys.parse_delayed(event.key)
                self.next_due = due if self.next_due is None else min(self.next_due, due)
                self._wake(event.revision)
        elif key.startswith(keys.claims):
            self._claims_gone.add(key[len(keys.claims) :])
            self._claims_gone_at = event.revision
        elif key.startswith(keys.inflight):
            self._inflight_gone.add(key[len(keys.inflight) :])

    def _on_batch(self) -> None:
        # Called after whole watch responses, so both deletes of an ack/nack (one revision) have been seen.
        orphans = self._claims_gone - self._inflight_gone
        self._claims_gone.clear()
        self._inflight_gone.clear()
        if orphans:
            self._suspects |= orphans
            self._wake(self._claims_gone_at)

    async def _resync(self) -> int:
        # The watch failed and restarts: changes may have been missed, so re-check everything.
        revision = (await self._client.get(self._keys.seq, keys_only=True)).revision
        self._scan_delayed = True
        self.next_sweep = 0.0
        self._wake(revision)
        return revision

    async def wait_change(self, seen_revision: int, until: float) -> None:
        """Return once a relevant change after ``seen_revision`` arrived, upkeep is due, or at loop time ``until``."""
        loop = asyncio.get_running_loop()
        while self._woken_at <= seen_revision and not self._suspects and not self._closed:
            left = until - loop.time()
            if left <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    # --- upkeep ----------------------------------------------------------------------------------------------

    async def maintain(self) -> None:
        """Make due delayed items visible and return orphaned in-flight items, when either is (or may be) needed."""
        loop = asyncio.get_running_loop()
        if self._scan_delayed or (self.next_due is not None and self.next_due <= time.time()):
            await self._promote_due()
        if self._suspects or loop.time() >= self.next_sweep:
            await self.sweep()
            self.next_sweep = loop.time() + self._recheck_interval

    async def _move(self, source: bytes, mod_revision: int, target: str, value: bytes) -> bool:
        result = await self._client.txn([ModRevision(source) == mod_revision], [Delete(source), Put(target, value)])
        return result.succeeded

    async def _promote_due(self) -> None:
        self._scan_delayed = False
        keys = self._keys
        while True:
            # Every delayed key whose due time (in its name) is <= now: [delayed/, delayed/<now>0).
            end = keys.delayed + QueueKeys.due_code(time.time()) + "0"
            due = await self._client.range(keys.delayed, end, limit=_PROMOTE_BATCH)
            for kv in due.kvs:
                _, slot = keys.parse_delayed(kv.key)
                await self._move(kv.key, kv.mod_revision, keys.item(slot), kv.value)
            if not due.more:
                break
        first = await self._client.range(keys.delayed, prefix=True, limit=1, keys_only=True)
        self.next_due = keys.parse_delayed(first.kvs[0].key)[0] if first.kvs else None

    async def sweep(self) -> None:
        """Return in-flight items whose claim is gone (their consumer's lease ended) to the visible items."""
        self._suspects.clear()
        keys = self._keys
        result = await self._client.txn(
            [], [Get(keys.inflight, prefix=True), Get(keys.claims, prefix=True, keys_only=True)]
        )
        inflight, claims = (r for r in result.responses if isinstance(r, GetResult))
        held = {keys.slot_of(kv.key, keys.claims) for kv in claims.kvs}
        for kv in inflight.kvs:
            slot = keys.slot_of(kv.key, keys.inflight)
            if slot in held:
                continue
            requeue = await self._client.txn(
                [CreateRevision(keys.claim(slot)) == 0, ModRevision(kv.key) == kv.mod_revision],
                [Delete(kv.key), Put(keys.item(slot), kv.value)],
            )
            if requeue.succeeded:
                log.info("queue %r: item %s returned to the queue (its consumer's claim ended)", self._name, slot)

    async def close(self) -> None:
        """Stop the watch and release every waiter. Idempotent."""
        self._closed = True
        self._changed.set()
        if self._watch is not None:
            await self._watch.close()
            self._watch = None
