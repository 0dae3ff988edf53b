"""A work queue with at-least-once delivery: priorities, delayed items, acknowledgements, a visibility timeout that
returns the items of a dead consumer, and a dead-letter queue.

:class:`Queue` is the implementation; :class:`SyncQueue` is its blocking form over a :class:`coord.Client`;
:func:`queue` picks the form matching the client. The key layout is described in :mod:`coord.recipes._queue_keys`.

How delivery works: ``get`` moves the first visible item (lowest priority number, then oldest) from ``items/`` to
``inflight/`` and writes a claim key attached to the consumer's lease, in one transaction that compares the item's
mod revision, so two consumers can never both claim it. ``ack`` deletes it; ``nack`` puts it back (or delays it, or
dead-letters it). The consumer's lease (TTL = ``visibility_timeout``) is kept alive while the consumer runs; when
the consumer dies the lease expires, its claim keys vanish, and any consumer that sees a claim vanish (through its
watch, or a periodic sweep) moves the orphaned in-flight item back to ``items/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, overload

from coord.client import (
    AsyncClient,
    Client,
    Delete,
    Get,
    GetResult,
    ModRevision,
    Put,
)
from coord.client.txn import Op
from coord.errors import CoordError, LeaseNotFoundError
from coord.recipes._queue_keys import Envelope, QueueKeys
from coord.recipes._queue_upkeep import ConsumerLease, QueueUpkeep
from coord.recipes._support import (
    ClaimLost,
    QueueEmpty,
    async_client_of,
    deadline_after,
    run_sync,
    validate_name,
)

__all__ = [
    "ClaimLost",
    "Queue",
    "QueueEmpty",
    "QueueItem",
    "QueueStats",
    "SyncQueue",
    "SyncQueueItem",
    "queue",
]

log = logging.getLogger(__name__)

_PAGE = 16  # items read per claim attempt


@dataclass(frozen=True)
class QueueStats:
    """Item counts at one revision: visible, delayed (not yet visible) and claimed by a consumer."""

    ready: int
    delayed: int
    in_flight: int
    revision: int


class QueueItem:
    """An item claimed by :meth:`Queue.get`. Process it, then :meth:`ack` it (or :meth:`nack` it).

    Example::

        async with await jobs.get() as item:   # acks on success; nacks when the body raises (the error propagates)
            await handle(item.value)

    Attributes: ``value`` (the payload as it was put: bytes, str or a JSON value), ``id`` (stable for the item's
    life), ``priority``, ``deliveries`` (1 on the first delivery), ``enqueued_at`` (Unix time), ``error`` (the
    reason given with the last nack, if any).
    """

    def __init__(self, queue: Queue, slot: str, envelope: Envelope, claim_revision: int) -> None:
        self._queue = queue
        self.id = slot
        self._envelope = envelope
        self.claim_revision = claim_revision
        self.done = False

    @property
    def value(self) -> Any:
        return self._envelope.value

    @property
    def priority(self) -> int:
        return self._envelope.priority

    @property
    def deliveries(self) -> int:
        return self._envelope.deliveries

    @property
    def enqueued_at(self) -> float:
        return self._envelope.enqueued_at

    @property
    def error(self) -> str | None:
        return self._envelope.error

    def __repr__(self) -> str:
        return f"<QueueItem {self._queue.name}/{self.id} deliveries={self.deliveries}>"

    def _finish(self) -> None:
        if self.done:
            raise RuntimeError(f"queue item {self.id} was already acked or nacked")
        self.done = True

    async def ack(self, *, ops: Sequence[Op] = ()) -> None:
        """Remove the item for good. ``ops`` (coord.Put / Delete / ...) are applied in the same transaction, so a
        result can be recorded exactly when the item is acknowledged.

        Raises ClaimLost when this consumer no longer holds the item (nothing is applied then), RuntimeError
        when already acked or nacked."""
        self._finish()
        keys = self._queue.keys
        result = await self._queue.client.txn(
            [ModRevision(keys.in_flight(self.id)) == self.claim_revision],
            [Delete(keys.in_flight(self.id)), Delete(keys.claim(self.id)), *ops],
        )
        if not result.succeeded:
            raise ClaimLost(f"queue {self._queue.name!r}: item {self.id} is no longer held by this consumer")

    async def nack(self, *, delay: float = 0.0, error: str | None = None) -> bool:
        """Give the item back: visible again at once, or after ``delay`` seconds. After ``max_deliveries`` failed
        deliveries it goes to the dead-letter queue instead. ``error`` is kept with the item (``item.error``).

        Returns True when the item was dead-lettered. Raises ClaimLost (see :meth:`ack`), RuntimeError when
        already acked or nacked, ValueError for a negative delay."""
        if delay < 0:
            raise ValueError(f"delay must be >= 0, not {delay}")
        self._finish()
        queue, keys = self._queue, self._queue.keys
        envelope = self._envelope.failed(error)
        dead = queue.max_deliveries is not None and envelope.deliveries >= queue.max_deliveries
        if dead:
            target = queue.dead_letter_keys.item(self.id)
        elif delay > 0:
            target = keys.delayed_key(time.time() + delay, self.id)
        else:
            target = keys.item(self.id)
        result = await queue.client.txn(
            [ModRevision(keys.in_flight(self.id)) == self.claim_revision],
            [Delete(keys.in_flight(self.id)), Delete(keys.claim(self.id)), Put(target, envelope.encode())],
        )
        if not result.succeeded:
            raise ClaimLost(f"queue {queue.name!r}: item {self.id} is no longer held by this consumer")
        if dead:
            log.warning("queue %r: item %s dead-lettered after %d deliveries", queue.name, self.id, envelope.deliveries)
        return dead

    async def __aenter__(self) -> QueueItem:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.done:
            return
        if exc is None:
            await self.ack()
        else:
            await self.nack(error=f"{type(exc).__name__}: {exc}")


class Queue:
    """A distributed work queue with at-least-once delivery.

    Example::

        jobs = Queue(client, "jobs", visibility_timeout=30, max_deliveries=5)
        await jobs.put({"video": 42}, priority=1)          # lower number = delivered first
        await jobs.put("cleanup", delay=60)                # not visible for a minute
        async with await jobs.get(timeout=10) as item:     # blocks until an item is visible (QueueEmpty after 10 s)
            await transcode(item.value)                    # ack on success, nack when it raises

    Parameters:
        client: an :class:`coord.AsyncClient`.
        name: the queue's name (no ``/``).
        visibility_timeout: seconds after a consumer dies (or loses contact) before its unacknowledged items become
            visible again: the TTL of the consumer's lease, which is kept alive while the consumer runs. etcd raises
            TTLs below its minimum (2 s).
        max_deliveries: after this many deliveries without an ack (nacks, or consumers that died holding the item),
            the item moves to the dead-letter queue. None: retry forever.
        dead_letter: the name of the dead-letter queue (default ``"<name>.dead"``); :attr:`dead_letters` opens it.
        recheck_interval: the longest a waiting ``get`` goes without re-reading (a safety net; wake-ups come from a
            watch, due delayed items and expired claims are handled as they happen).

    Guarantees: every item put is delivered until acknowledged (at least once); no two consumers hold an item at the
    same time; an item is acknowledged at most once (an ``ack`` after the item was returned to the queue raises
    ClaimLost and changes nothing); priorities are strict, FIFO within a priority by put order (a returned item, or
    a delayed one once due, takes its place by put order); a delayed item is not delivered before its time (by the
    consumer's clock: producers and consumers should run NTP). Closing the queue returns this consumer's
    unacknowledged items at once; otherwise (a crash, or closing only the client) they return after
    ``visibility_timeout``.
    """

    def __init__(
        self,
        client: AsyncClient,
        name: str,
        *,
        visibility_timeout: float = 30,
        max_deliveries: int | None = 5,
        dead_letter: str | None = None,
        recheck_interval: float = 5.0,
    ) -> None:
        if visibility_timeout <= 0:
            raise ValueError(f"visibility_timeout must be > 0, not {visibility_timeout}")
        if max_deliveries is not None and (isinstance(max_deliveries, bool) or max_deliveries < 1):
            raise ValueError(f"max_deliveries must be >= 1 or None, not {max_deliveries}")
        if recheck_interval <= 0:
            raise ValueError(f"recheck_interval must be > 0, not {recheck_interval}")
        self.client = async_client_of(client)
        self.name = validate_name(name, "queue name")
        self.keys = QueueKeys(name)
        self.visibility_timeout = visibility_timeout
        self.max_deliveries = max_deliveries
        self.dead_letter = validate_name(dead_letter if dead_letter is not None else f"{name}.dead", "dead_letter")
        if self.dead_letter == name:
            raise ValueError("a queue cannot be its own dead-letter queue")
        self.dead_letter_keys = QueueKeys(self.dead_letter)
        self.recheck_interval = recheck_interval
        self.consumer_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._lease = ConsumerLease(self.client, name, visibility_timeout)
        self._upkeep = QueueUpkeep(self.client, self.keys, name, recheck_interval)
        self._closed = False

    # --- producing -------------------------------------------------------------------------------------------

    async def put(self, item: object, *, priority: int = 0, delay: float = 0.0) -> str:
        """Add ``item`` (bytes, str or any JSON-serialisable value); returns its id.

        ``priority``: lower numbers are delivered first (any 32-bit int; default 0). ``delay``: seconds before the
        item becomes visible. Raises TypeError / ValueError for a bad item, priority or delay, and the client's
        errors (RequestTooLargeError for items over the server's request limit, about 1.5 MiB on etcd)."""
        if delay < 0 or math.isnan(delay):
            raise ValueError(f"delay must be >= 0, not {delay}")
        not_before = time.time() + delay if delay > 0 else 0.0
        envelope = Envelope.new(item, priority, not_before)
        sequence = (await self.client.put(self.keys.seq, b"")).revision
        slot = QueueKeys.slot(priority, sequence)
        key = self.keys.delayed_key(not_before, slot) if delay > 0 else self.keys.item(slot)
        await self.client.put(key, envelope.encode())
        return slot

    async def stats(self) -> QueueStats:
        """How many items are visible, delayed and in flight (one consistent read)."""
        result = await self.client.txn(
            [],
            [
                Get(self.keys.items, prefix=True, count_only=True),
                Get(self.keys.delayed, prefix=True, count_only=True),
                Get(self.keys.inflight, prefix=True, count_only=True),
            ],
        )
        ready, delayed, inflight = (r.count for r in result.responses if isinstance(r, GetResult))
        return QueueStats(ready, delayed, inflight, result.revision)

    @property
    def dead_letters(self) -> Queue:
        """The dead-letter queue, as a queue of its own (no further dead-lettering). Its items keep their delivery
        count and last error."""
        return Queue(self.client, self.dead_letter, max_deliveries=None, dead_letter=f"{self.dead_letter}.dead")

    # --- consuming -------------------------------------------------------------------------------------------

    async def get(self, timeout: float | None = None) -> QueueItem:
        """Claim the next visible item, waiting up to ``timeout`` seconds (None: forever; 0: do not wait).

        Raises QueueEmpty when nothing became visible in time, RuntimeError when the queue was closed."""
        if self._closed:
            raise RuntimeError(f"queue {self.name!r} is closed")
        loop = asyncio.get_running_loop()
        deadline = deadline_after(timeout)
        upkeep = self._upkeep
        await upkeep.start()
        while True:
            await upkeep.maintain()
            lease = await self._lease.ensure()
            try:
                item, revision, contended = await self._try_claim(lease)
            except LeaseNotFoundError:
                self._lease.lost(lease)
                continue
            if item is not None:
                return item
            if contended:
                continue  # others took what we saw; look again at once
            wake = upkeep.next_sweep
            if upkeep.next_due is not None:
                wake = min(wake, loop.time() + max(upkeep.next_due - time.time(), 0.0) + 0.001)
            if deadline is not None:
                if loop.time() >= deadline:
                    raise QueueEmpty(f"queue {self.name!r}: no item within {timeout}s")
                wake = min(wake, deadline)
            await upkeep.wait_change(revision, wake)

    def __aiter__(self) -> AsyncIterator[QueueItem]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[QueueItem]:
        while True:
            yield await self.get()

    async def _try_claim(self, lease: int) -> tuple[QueueItem | None, int, bool]:
        page = await self.client.range(self.keys.items, prefix=True, limit=_PAGE)
        contended = False
        for kv in page.kvs:
            slot = self.keys.slot_of(kv.key, self.keys.items)
            envelope = Envelope.decode(kv.value, slot)
            if self.max_deliveries is not None and envelope.deliveries >= self.max_deliveries:
                # Delivered max_deliveries times and never acked (its consumers died): dead-letter it instead.
                await self._move(kv.key, kv.mod_revision, self.dead_letter_keys.item(slot), envelope)
                contended = True
                continue
            claimed = envelope.delivered()
            claim = json.dumps({"consumer": self.consumer_id, "claimed_at": time.time()})
            result = await self.client.txn(
                [ModRevision(kv.key) == kv.mod_revision],
                [
                    Delete(kv.key),
                    Put(self.keys.in_flight(slot), claimed.encode()),
                    Put(self.keys.claim(slot), claim, lease=lease),
                ],
            )
            if result.succeeded:
                return QueueItem(self, slot, claimed, result.revision), page.revision, False
            contended = True
        return None, page.revision, contended or page.more

    async def _move(self, source: bytes | str, mod_revision: int, target: str, envelope: Envelope) -> bool:
        result = await self.client.txn(
            [ModRevision(source) == mod_revision], [Delete(source), Put(target, envelope.encode())]
        )
        return result.succeeded

    @property
    def lease_id(self) -> int:
        """The consumer lease that this queue's claims are attached to (0 before the first ``get``, and after the
        lease was lost until the next ``get`` grants a new one)."""
        return self._lease.lease_id

    async def close(self) -> None:
        """Stop consuming: revoke the consumer lease (this consumer's unacknowledged items become visible again at
        once) and stop the watch. Idempotent; ``put`` and ``stats`` still work afterwards."""
        self._closed = True
        await self._upkeep.close()
        if await self._lease.revoke():
            # Return the items at once rather than when another consumer notices the claims are gone.
            with contextlib.suppress(CoordError):
                await self._upkeep.sweep()

    async def __aenter__(self) -> Queue:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class SyncQueueItem:
    """Blocking form of :class:`QueueItem` (same attributes). As a context manager it acks on success and nacks
    when the body raises::

        with jobs.get(timeout=10) as item:
            handle(item.value)
    """

    def __init__(self, client: Client, item: QueueItem) -> None:
        self._client = client
        self.item = item

    @property
    def id(self) -> str:
        return self.item.id

    @property
    def value(self) -> Any:
        return self.item.value

    @property
    def priority(self) -> int:
        return self.item.priority

    @property
    def deliveries(self) -> int:
        return self.item.deliveries

    @property
    def enqueued_at(self) -> float:
        return self.item.enqueued_at

    @property
    def error(self) -> str | None:
        return self.item.error

    @property
    def done(self) -> bool:
        return self.item.done

    def __repr__(self) -> str:
        return repr(self.item).replace("QueueItem", "SyncQueueItem")

    def ack(self, *, ops: Sequence[Op] = ()) -> None:
        """See :meth:`QueueItem.ack`."""
        run_sync(self._client, self.item.ack(ops=ops))

    def nack(self, *, delay: float = 0.0, error: str | None = None) -> bool:
        """See :meth:`QueueItem.nack`."""
        return run_sync(self._client, self.item.nack(delay=delay, error=error))

    def __enter__(self) -> SyncQueueItem:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        run_sync(self._client, self.item.__aexit__(exc_type, exc, tb))


class SyncQueue:
    """Blocking form of :class:`Queue` over a :class:`coord.Client` (same parameters and guarantees).

    Example::

        jobs = SyncQueue(client, "jobs", visibility_timeout=30)
        jobs.put({"video": 42})
        for item in jobs:                 # blocks for each item
            with item:                    # ack on success, nack on exception
                transcode(item.value)
    """

    def __init__(
        self,
        client: Client,
        name: str,
        *,
        visibility_timeout: float = 30,
        max_deliveries: int | None = 5,
        dead_letter: str | None = None,
        recheck_interval: float = 5.0,
    ) -> None:
        if not isinstance(client, Client):
            raise TypeError("SyncQueue needs a coord.Client; use Queue (or coord.queue) with an AsyncClient")
        self._client = client
        self.queue = Queue(
            client.async_client, name, visibility_timeout=visibility_timeout, max_deliveries=max_deliveries,
            dead_letter=dead_letter, recheck_interval=recheck_interval,
        )  # fmt: skip
        self.name = name

    @property
    def lease_id(self) -> int:
        """See :attr:`Queue.lease_id`."""
        return self.queue.lease_id

    def put(self, item: object, *, priority: int = 0, delay: float = 0.0) -> str:
        """See :meth:`Queue.put`."""
        return run_sync(self._client, self.queue.put(item, priority=priority, delay=delay))

    def get(self, timeout: float | None = None) -> SyncQueueItem:
        """See :meth:`Queue.get`."""
        return SyncQueueItem(self._client, run_sync(self._client, self.queue.get(timeout)))

    def stats(self) -> QueueStats:
        """See :meth:`Queue.stats`."""
        return run_sync(self._client, self.queue.stats())

    @property
    def dead_letters(self) -> SyncQueue:
        """See :attr:`Queue.dead_letters`."""
        dead = self.queue.dead_letters
        return SyncQueue(self._client, dead.name, max_deliveries=None, dead_letter=dead.dead_letter)

    def __iter__(self) -> Iterator[SyncQueueItem]:
        while True:
            yield self.get()

    def close(self) -> None:
        """See :meth:`Queue.close`."""
        run_sync(self._client, self.queue.close())

    def __enter__(self) -> SyncQueue:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@overload
def queue(
    client: AsyncClient,
    name: str,
    *,
    visibility_timeout: float = ...,
    max_deliveries: int | None = ...,
    dead_letter: str | None = ...,
    recheck_interval: float = ...,
) -> Queue: ...
@overload
def queue(
    client: Client,
    name: str,
    *,
    visibility_timeout: float = ...,
    max_deliveries: int | None = ...,
    dead_letter: str | None = ...,
    recheck_interval: float = ...,
) -> SyncQueue: ...
def queue(
    client: AsyncClient | Client,
    name: str,
    *,
    visibility_timeout: float = 30,
    max_deliveries: int | None = 5,
    dead_letter: str | None = None,
    recheck_interval: float = 5.0,
) -> Queue | SyncQueue:
    """The queue ``name``: :class:`Queue` for an AsyncClient, :class:`SyncQueue` for a Client."""
    options: dict[str, Any] = {
        "visibility_timeout": visibility_timeout,
        "max_deliveries": max_deliveries,
        "dead_letter": dead_letter,
        "recheck_interval": recheck_interval,
    }
    if isinstance(client, AsyncClient):
        return Queue(client, name, **options)
    return SyncQueue(client, name, **options)
