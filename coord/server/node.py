"""The member's server loop: it turns proposals into durable log entries, applies them, and resolves waiters.

The write path (DESIGN.md): a request is encoded as a log entry; the loop takes every proposal queued since the last
commit, appends them as one batch, applies the committed ones and records the applied index, all in ONE LMDB write
transaction, committed with one fsync (group commit: proposals that arrive while an fsync runs share the next one).
Only then are the proposers answered. A single member commits its own entries as soon as they are durable; with Raft
only the rule for "committed" changes.

Threading: LMDB write transactions run on one dedicated thread (the commit thread), so the asyncio loop keeps
accepting requests while the disk syncs. Reads open their own read-only transactions and never wait for the writer.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

from google.protobuf.message import Message

from coord.errors import STOPPED
from coord.server.applier import Applied, Applier, Result
from coord.server.mvcc import Event, MvccReader
from coord.server.rejection import Rejected
from coord.server.requests import Kind, encode
from coord.server.storage import Backend, DurableLog, LogEntry

log = logging.getLogger(__name__)

# Applied entries older than this many are trimmed from the log, a bounded number per batch.
_LOG_RETAIN = 10_000
_TRIM_PER_BATCH = 1_000


# Called on the event loop with (revision, events) for every applied change, in revision order.
ChangeListener = Callable[[int, list[Event]], None]
# Called on the event loop with the leases granted (id, TTL) or revoked (id, 0) by an applied entry.
LeaseListener = Callable[[list[tuple[int, int]]], None]


@dataclass(slots=True)
class _Proposal:
    request_id: int
    data: bytes
    future: asyncio.Future[Result]


class Node:
    """Owns the log, the applier and the commit thread of one member."""

    def __init__(self, backend: Backend, member_id: int, log_retain: int = _LOG_RETAIN, min_lease_ttl: int = 2) -> None:
        self.backend = backend
        self.member_id = member_id
        self.term = 1
        self._log = DurableLog(backend)
        self._applier = Applier(backend, min_lease_ttl)
        self._log_retain = log_retain
        self._queue: list[_Proposal] = []
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="coord-commit")
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._listeners: list[ChangeListener] = []
        self._lease_listeners: list[LeaseListener] = []
        # Request ids: the member's low 16 bits, then a counter seeded from the clock, as etcd does.
        seed = (int(time.time() * 1000) & 0xFF_FFFF_FFFF) << 8
        self._ids = itertools.count(((member_id & 0xFFFF) << 48) | seed)
        with backend.read() as txn:
            self.last_index = self._log.last_index(txn)
            self.applied_index = self._applier.applied_index(txn)

    async def start(self) -> None:
        """Apply any logged entries not yet applied (after a crash), then start the loop."""
        if self.applied_index < self.last_index:
            replayed = await asyncio.get_running_loop().run_in_executor(self._executor, self._replay)
            log.info("replayed %d logged entries after restart", replayed)
        self._task = asyncio.create_task(self._run(), name="coord-node")

    async def stop(self) -> None:
        """Finish the batch being committed, refuse what is still queued, and stop the commit thread."""
        self._stopping = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        for proposal in self._queue:
            if not proposal.future.done():
                proposal.future.set_exception(Rejected(STOPPED))
        self._queue.clear()
        self._executor.shutdown(wait=True)

    def add_change_listener(self, listener: ChangeListener) -> None:
        """Call ``listener(revision, events)`` on the event loop after every write that changed the store.

        Listeners see every revision exactly once, in order, before the writers' callers are answered. A listener
        must not block; it must not raise (an exception is logged and the listener stays registered).
        """
        self._listeners.append(listener)

    def add_lease_listener(self, listener: LeaseListener) -> None:
        """Call ``listener(changes)`` on the event loop after every entry that granted or revoked leases."""
        self._lease_listeners.append(listener)

    def next_id(self) -> int:
        """A fresh id, unique on this member (request ids; positive 63-bit lease ids are derived from it)."""
        return next(self._ids)

    def encode(self, kind: Kind, request: Message) -> tuple[int, bytes]:
        """A fresh request id and the log entry data for ``request``."""
        request_id = next(self._ids)
        return request_id, encode(kind, request_id, request)

    async def propose(self, request_id: int, data: bytes) -> Message:
        """Append the request to the log and wait until it is durable and applied; returns its response.

        Raises :class:`Rejected` when the request is refused (by the store, or because the server is stopping).
        """
        if self._stopping:
            raise Rejected(STOPPED)
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._queue.append(_Proposal(request_id, data, future))
        self._wakeup.set()
        result = await future
        if isinstance(result, Rejected):
            raise result
        return result

    @contextmanager
    def read(self) -> Iterator[MvccReader]:
        """A consistent read-only view of the last committed state (every acknowledged write is in it)."""
        with self.backend.read() as txn:
            yield MvccReader(self.backend, txn)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._stopping:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch, self._queue = self._queue, []
            try:
                results = await loop.run_in_executor(self._executor, self._commit, batch)
            except Exception:
                # The LMDB transaction was aborted, so nothing of this batch is on disk and nobody was answered.
                log.exception("committing a batch of %d proposals failed", len(batch))
                for proposal in batch:
                    if not proposal.future.done():
                        proposal.future.set_exception(Rejected(STOPPED))
                continue
            for applied in results:
                if applied.events:
                    self._notify(applied.revision, applied.events)
                if applied.lease_changes:
                    for lease_listener in self._lease_listeners:
                        lease_listener(applied.lease_changes)
            for proposal, applied in zip(batch, results, strict=True):
                if not proposal.future.done():
                    proposal.future.set_result(applied.result)

    def _notify(self, revision: int, events: list[Event]) -> None:
        for listener in self._listeners:
            try:
                listener(revision, events)
            except Exception:
                log.exception("change listener %r failed at revision %d", listener, revision)

    def _commit(self, batch: list[_Proposal]) -> list[Applied]:
        """On the commit thread: append, apply and record the batch in one LMDB transaction (one fsync)."""
        first = self.last_index + 1
        entries = [LogEntry(first + i, self.term, 0, p.data) for i, p in enumerate(batch)]
        with self.backend.write() as txn:
            self._log.append(txn, entries)
            results = [self._applier.apply(txn, entry) for entry in entries]
            self._log.trim(txn, entries[-1].index - self._log_retain, _TRIM_PER_BATCH)
        self.last_index = self.applied_index = entries[-1].index
        return results

    def _replay(self) -> int:
        with self.backend.write() as txn:
            entries = self._log.entries(txn, self.applied_index + 1, self.last_index + 1)
            for entry in entries:
                self._applier.apply(txn, entry)
        if entries:
            self.applied_index = entries[-1].index
        return len(entries)
