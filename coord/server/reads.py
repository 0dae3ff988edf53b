"""Linearizable reads by ReadIndex, batched: the bookkeeping between "a read wants a barrier" and "this member has
applied far enough".

Reads that arrive while the Raft loop is busy share one ReadIndex request (one heartbeat round on the leader). Each
batch goes through three stages, all on the event loop:

    pending --(the loop asks Raft: take_pending)--> in flight --(ReadState: confirmed)--> waiting for apply
    --(applied index reaches the read index: release)--> done

A leader change fails the batches in flight with "leader changed" (the old leader may never answer); stopping fails
everything. Every failure is a retryable :class:`Rejected`.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
from dataclasses import dataclass

from coord.errors import LEADER_CHANGED, ErrorSpec
from coord.server.rejection import Rejected

__all__ = ["ReadQueue"]


@dataclass(slots=True)
class _Batch:
    futures: list[asyncio.Future[None]]
    index: int = 0


class ReadQueue:
    """The read barriers of one member, from request to release."""

    def __init__(self) -> None:
        self._pending: list[asyncio.Future[None]] = []
        self._in_flight: dict[bytes, _Batch] = {}
        self._waiting: list[_Batch] = []
        # Request contexts start at a random point, not at 1: a ReadIndex answer addressed to this member before a
        # restart can then never confirm a batch of the new process (it would carry an older index).
        self._ctx = itertools.count(secrets.randbits(62) + 1)

    def add(self) -> asyncio.Future[None]:
        """A future resolved once this member applied everything committed before now (or failed with Rejected)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(future)
        return future

    def take_pending(self) -> bytes | None:
        """Move the pending reads into a new batch in flight; returns the batch's request context for Raft's
        ReadIndex, or None when nothing is pending."""
        if not self._pending:
            return None
        reads, self._pending = self._pending, []
        ctx = next(self._ctx).to_bytes(8, "big")
        self._in_flight[ctx] = _Batch(reads)
        return ctx

    def refuse(self, ctx: bytes, refusal: Rejected) -> None:
        """Raft would not take the batch's ReadIndex (no leader, ...): fail its reads."""
        batch = self._in_flight.pop(ctx, None)
        if batch is not None:
            _fail(batch.futures, refusal)

    def confirmed(self, ctx: bytes, index: int) -> None:
        """The leader confirmed the batch: its reads may proceed once ``index`` is applied."""
        batch = self._in_flight.pop(ctx, None)
        if batch is not None:
            batch.index = index
            self._waiting.append(batch)

    def release(self, applied_index: int) -> None:
        """Resolve every confirmed batch whose index is applied."""
        if not self._waiting:
            return
        waiting = []
        for batch in self._waiting:
            if batch.index <= applied_index:
                for future in batch.futures:
                    if not future.done():
                        future.set_result(None)
            else:
                waiting.append(batch)
        self._waiting = waiting

    def leader_changed(self) -> None:
        """A ReadIndex in flight may be lost with the old leader: fail those reads now (retryable)."""
        for batch in self._in_flight.values():
            _fail(batch.futures, Rejected(LEADER_CHANGED))
        self._in_flight.clear()

    def fail_all(self, spec: ErrorSpec) -> None:
        futures = [*self._pending]
        for batch in [*self._in_flight.values(), *self._waiting]:
            futures.extend(batch.futures)
        _fail(futures, Rejected(spec))
        self._pending.clear()
        self._in_flight.clear()
        self._waiting.clear()


def _fail(futures: list[asyncio.Future[None]], refusal: Rejected) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(refusal)
