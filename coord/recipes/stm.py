"""Software transactional memory over etcd (etcd's ``concurrency.STM``, serializable snapshot isolation).

A transaction function reads keys through a :class:`STMTransaction` and buffers writes in it. Every read sees the
store at one revision (the revision of the first read) and reads of the same key repeat; the writes are committed in
one txn that compares the mod revision of every key read with the one seen (and, for keys written without being read,
that they did not change after the snapshot). If any compare fails, another writer got in between: the function
runs again from scratch on a fresh snapshot, up to ``max_attempts`` times.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from coord.client import AsyncClient, Compare, Delete, ModRevision, Put
from coord.errors import CompactedError
from coord.recipes._common import NameLike, Runner, name_bytes
from coord.recipes._errors import TransactionConflict
from coord.recipes.counter import backoff_delay

__all__ = ["STMTransaction", "SyncSTMTransaction", "run_stm", "run_stm_sync"]

T = TypeVar("T")


def _data(value: NameLike) -> bytes:
    if not isinstance(value, str | bytes):
        raise TypeError(f"values are str or bytes, not {type(value).__name__}")
    return value.encode() if isinstance(value, str) else bytes(value)


class _Conflict(Exception):
    """The snapshot cannot be read any more (compacted): the attempt counts as a conflict."""


class STMTransaction:
    """The view an ``stm`` function works through: :meth:`get` reads (at one snapshot revision), :meth:`put` and
    :meth:`delete` buffer writes that are committed atomically when the function returns.

    Example::

        async def transfer(tx: coord.STMTransaction) -> None:
            a = int(await tx.get("accounts/a") or 0)
            b = int(await tx.get("accounts/b") or 0)
            tx.put("accounts/a", str(a - 10))
            tx.put("accounts/b", str(b + 10))

        await client.stm(transfer)   # retried on conflict; the sum of the accounts is preserved

    A read after a write of the same key returns the written value (None after a delete). Only single keys can be
    read: a range read could not detect keys deleted from it after the snapshot.
    """

    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self.revision: int | None = None  # the snapshot revision, fixed by the first read
        self._reads: dict[bytes, tuple[bytes | None, int]] = {}  # key -> (value, mod revision; 0 when missing)
        self._writes: dict[bytes, bytes | None] = {}  # key -> value, None for a delete

    async def get(self, key: NameLike) -> bytes | None:
        """The value of ``key`` in this transaction (None when it does not exist)."""
        k = name_bytes(key, "key")
        if k in self._writes:
            return self._writes[k]
        if k not in self._reads:
            try:
                result = await self._client.get(k, revision=self.revision or 0)
            except CompactedError:
                raise _Conflict from None
            if self.revision is None:
                self.revision = result.revision
            kv = result.kv
            self._reads[k] = (kv.value, kv.mod_revision) if kv is not None else (None, 0)
        return self._reads[k][0]

    def put(self, key: NameLike, value: NameLike) -> None:
        """Write ``value`` to ``key`` at commit."""
        self._writes[name_bytes(key, "key")] = _data(value)

    def delete(self, key: NameLike) -> None:
        """Delete ``key`` at commit."""
        self._writes[name_bytes(key, "key")] = None

    async def _commit(self) -> bool:
        """Commit the buffered writes if nothing read changed; False on a conflict. Read-only: always True."""
        if not self._writes:
            return True
        compare: list[Compare] = [ModRevision(k) == mod for k, (_, mod) in self._reads.items()]
        if self.revision is not None:
            compare += [ModRevision(k) < self.revision + 1 for k in self._writes if k not in self._reads]
        ops = [Put(k, v) if v is not None else Delete(k) for k, v in self._writes.items()]
        return (await self._client.txn(compare, ops)).succeeded


def _check_attempts(max_attempts: int) -> int:
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise ValueError(f"max_attempts must be a positive int, not {max_attempts!r}")
    return max_attempts


async def run_stm(client: AsyncClient, fn: Callable[[STMTransaction], Awaitable[T]], *, max_attempts: int = 16) -> T:
    """Run ``fn`` in a transaction until it commits; returns what the committed run returned.

    Raises :class:`coord.TransactionConflict` after ``max_attempts`` conflicting runs, and whatever ``fn`` raises
    (nothing is written then). ``fn`` may run several times: keep side effects out of it.
    """
    for attempt in range(1, _check_attempts(max_attempts) + 1):
        tx = STMTransaction(client)
        try:
            result = await fn(tx)
            if await tx._commit():
                return result
        except _Conflict:
            pass
        await asyncio.sleep(backoff_delay(attempt))
    raise TransactionConflict(f"stm: still conflicting after {max_attempts} attempts")


class SyncSTMTransaction:
    """The blocking form of :class:`STMTransaction`, given to functions run by ``coord.stm(fn)`` /
    :meth:`coord.Client.stm`."""

    def __init__(self, runner: Runner, tx: STMTransaction) -> None:
        self._runner = runner
        self.tx = tx

    @property
    def revision(self) -> int | None:
        return self.tx.revision

    def get(self, key: NameLike) -> bytes | None:
        return self._runner.run(self.tx.get(key))

    def put(self, key: NameLike, value: NameLike) -> None:
        self.tx.put(key, value)

    def delete(self, key: NameLike) -> None:
        self.tx.delete(key)


def run_stm_sync(
    runner: Runner, client: AsyncClient, fn: Callable[[SyncSTMTransaction], T], *, max_attempts: int = 16
) -> T:
    """The blocking form of :func:`run_stm`: ``fn`` runs in the calling thread."""
    for attempt in range(1, _check_attempts(max_attempts) + 1):
        tx = STMTransaction(client)
        try:
            result = fn(SyncSTMTransaction(runner, tx))
            if runner.run(tx._commit()):
                return result
        except _Conflict:
            pass
        time.sleep(backoff_delay(attempt))
    raise TransactionConflict(f"stm: still conflicting after {max_attempts} attempts")
