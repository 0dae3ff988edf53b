"""Barriers: :class:`Barrier` holds every waiter until released; :class:`DoubleBarrier` lets a fixed number
of participants start together and finish together. :class:`SyncBarrier` and :class:`SyncDoubleBarrier` are the
blocking forms (over a :class:`coord.Client`); :func:`barrier` and :func:`double_barrier` pick the form matching the
client.

Keys: a barrier is the single key ``coord/barrier/<name>`` (present = closed). A double barrier keeps one key per
participant under ``coord/double-barrier/<name>/waiters/``, attached to the participant's session lease (so a
crashed participant's key disappears after the session TTL and cannot wedge the others), and a ``ready`` key whose
JSON value names the round that entered: every participant key created after ``floor`` and up to ``last``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from dataclasses import dataclass
from types import TracebackType
from typing import overload

from coord.client import (
    AsyncClient,
    Client,
    CreateRevision,
    Delete,
    Get,
    GetResult,
    KeyValue,
    ModRevision,
    Put,
    SortOrder,
    SortTarget,
    Value,
    WatchEventType,
)
from coord.errors import CoordError, SessionLostError
from coord.recipes._support import BarrierTimeout, async_client_of, recipe_prefix, run_sync

__all__ = [
    "Barrier",
    "BarrierTimeout",
    "DoubleBarrier",
    "SyncBarrier",
    "SyncDoubleBarrier",
    "barrier",
    "double_barrier",
]


async def _wait_deleted(client: AsyncClient, key: str | bytes, after_revision: int) -> None:
    """Return once ``key`` is deleted by a revision > ``after_revision`` (at once if that already happened)."""
    async with await client.watch(key, start_revision=after_revision + 1) as watcher:
        async for event in watcher:
            if event.type is WatchEventType.DELETE:
                return
    raise CoordError(f"the watch on {key!r} ended before the key was deleted (client closed?)")


class Barrier:
    """A barrier: while it is held, :meth:`wait` blocks; :meth:`release` lets every waiter through.

    Example::

        gate = Barrier(client, "deploy")
        await gate.hold()                 # the coordinator closes the gate
        ...                               # workers call: await Barrier(client, "deploy").wait(timeout=60)
        await gate.release()              # every waiter returns

    Parameters:
        client: an :class:`coord.AsyncClient`.
        name: the barrier's name (no ``/``).
        ephemeral: attach the barrier key to the client's session lease, so that the barrier opens by itself when
            the holder dies (after the session TTL). Default False: like etcd's recipe, a held barrier stays held
            until someone calls :meth:`release`.
        ttl: the session TTL to request when ``ephemeral`` creates the client's session.

    ``wait`` follows etcd semantics: it returns as soon as the barrier key is absent, so a barrier that was never
    held does not block.
    """

    def __init__(self, client: AsyncClient, name: str, *, ephemeral: bool = False, ttl: int | None = None) -> None:
        self._client = async_client_of(client)
        self.name = name
        self.key = recipe_prefix("barrier", name).rstrip("/")
        self.ephemeral = ephemeral
        self._ttl = ttl

    async def hold(self) -> bool:
        """Close the barrier. Returns True if this call closed it, False if it was already held (by anyone).

        Raises SessionLostError when ``ephemeral`` and the client's session is lost."""
        lease = 0
        if self.ephemeral:
            session = await (self._client.session() if self._ttl is None else self._client.session(self._ttl))
            lease = session.ensure_alive()
        holder = json.dumps({"holder": uuid.uuid4().hex})
        result = await self._client.txn([CreateRevision(self.key) == 0], [Put(self.key, holder, lease=lease)])
        return result.succeeded

    async def release(self) -> bool:
        """Open the barrier (whoever holds it), letting every waiter through. Returns False if it was not held."""
        return (await self._client.delete(self.key)).deleted > 0

    async def is_held(self) -> bool:
        """True while the barrier is closed."""
        return (await self._client.get(self.key, keys_only=True)).kv is not None

    async def wait(self, timeout: float | None = None) -> None:
        """Block until the barrier is open (its key absent). Raises BarrierTimeout after ``timeout`` seconds."""
        try:
            async with asyncio.timeout(timeout):
                got = await self._client.get(self.key, keys_only=True)
                if got.kv is None:
                    return
                await _wait_deleted(self._client, self.key, got.revision)
        except TimeoutError:
            raise BarrierTimeout(f"barrier {self.name!r} still held after {timeout}s") from None


@dataclass(frozen=True)
class _Round:
    """The participants that entered together: keys created after ``floor`` and up to ``last`` (revisions)."""

    floor: int
    last: int
    raw: bytes

    @classmethod
    def parse(cls, kv: KeyValue | None) -> _Round | None:
        if kv is None:
            return None
        try:
            data = json.loads(kv.value)
            return cls(int(data["floor"]), int(data["last"]), kv.value)
        except (ValueError, KeyError, TypeError):
            return None  # not written by this recipe: treat as no round


class DoubleBarrier:
    """A double barrier: :meth:`enter` blocks until ``count`` participants have entered; :meth:`leave` blocks until
    all of them have left. Use it as an async context manager around the joint work.

    Example::

        async with DoubleBarrier(client, "batch-42", count=3):
            await compute_my_share()      # starts only when 3 workers are in; exit waits for all 3 to finish

    Parameters:
        client: an :class:`coord.AsyncClient`.
        name: the barrier's name (no ``/``).
        count: how many participants make a round (>= 1).
        ttl: the session TTL to request if this barrier creates the client's session.

    Guarantees: a participant's key lives on its client's session lease, so a participant that crashes is dropped
    after the session TTL: it cannot block ``leave`` forever (it can delay ``enter`` only until a replacement joins).
    The first ``count`` participants (by key creation order) form a round; later ones wait for the next round.
    ``enter`` and ``leave`` raise BarrierTimeout after ``timeout`` seconds (withdrawing this participant's key, so the
    others are not blocked by it), and SessionLostError when this participant's key vanished because its session
    was lost while entering.
    """

    def __init__(self, client: AsyncClient, name: str, count: int, *, ttl: int | None = None) -> None:
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"count must be an int >= 1, not {count!r}")
        self._client = async_client_of(client)
        self.name = name
        self.count = count
        self._ttl = ttl
        prefix = recipe_prefix("double-barrier", name)
        self._prefix = prefix
        self._waiters = prefix + "waiters/"
        self._ready = prefix + "ready"  # the latest round (the anchor two would-be completers compare on)
        self._rounds = prefix + "rounds/"  # one key per round whose participants have not all left
        self._key: bytes | None = None
        self._created = 0
        self._round: _Round | None = None

    @property
    def entered(self) -> bool:
        """True between a successful :meth:`enter` and :meth:`leave`."""
        return self._round is not None

    def _round_key(self, last: int) -> str:
        return f"{self._rounds}{last:020d}"

    async def _snapshot(self) -> tuple[int, KeyValue | None, list[_Round], tuple[KeyValue, ...]]:
        result = await self._client.txn(
            [],
            [
                Get(self._ready),
                Get(self._rounds, prefix=True),
                Get(self._waiters, prefix=True, keys_only=True, sort_target=SortTarget.CREATE,
                    sort_order=SortOrder.ASCEND),
            ],
        )  # fmt: skip
        ready, rounds, waiters = result.responses
        assert isinstance(ready, GetResult) and isinstance(rounds, GetResult) and isinstance(waiters, GetResult)
        parsed = [r for r in (_Round.parse(kv) for kv in [ready.kv, *rounds.kvs]) if r is not None]
        return result.revision, ready.kv, parsed, waiters.kvs

    async def enter(self, timeout: float | None = None) -> None:
        """Join and block until ``count`` participants (this one included) have joined.

        Raises RuntimeError when already entered, BarrierTimeout, SessionLostError (see the class docstring)."""
        if self._key is not None:
            raise RuntimeError(f"double barrier {self.name!r}: already entered")
        session = await (self._client.session() if self._ttl is None else self._client.session(self._ttl))
        key = (self._waiters + uuid.uuid4().hex).encode()
        put = await self._client.put(key, b"", lease=session.ensure_alive())
        self._key, self._created = key, put.revision
        try:
            async with asyncio.timeout(timeout):
                await self._enter()
        except BaseException as exc:
            await self._withdraw()
            if isinstance(exc, TimeoutError):
                raise BarrierTimeout(
                    f"double barrier {self.name!r}: fewer than {self.count} entered in {timeout}s"
                ) from None
            raise

    async def _enter(self) -> None:
        watcher = None
        try:
            while True:
                revision, ready_kv, rounds, waiters = await self._snapshot()
                mine = next((r for r in rounds if r.floor < self._created <= r.last), None)
                if mine is not None:
                    # The round containing this participant is complete. It is looked up among every round still
                    # leaving, not only the latest: later rounds may have formed (and left) since it did.
                    self._round = mine
                    return
                if all(kv.key != self._key for kv in waiters):
                    raise SessionLostError(f"double barrier {self.name!r}: this participant's key vanished")
                # Waiters up to the newest known round belong to rounds; the rest form the next one.
                floor = max((r.last for r in rounds), default=0)
                rank = sum(1 for kv in waiters if floor < kv.create_revision <= self._created)
                if rank == self.count:
                    # This participant completes the round; the compare keeps two completers from both writing.
                    raw = json.dumps({"floor": floor, "last": self._created}).encode()
                    seen = ready_kv.mod_revision if ready_kv is not None else 0
                    written = await self._client.txn(
                        [ModRevision(self._ready) == seen],
                        [Put(self._ready, raw), Put(self._round_key(self._created), raw)],
                    )
                    if written.succeeded:
                        self._round = _Round(floor, self._created, raw)
                        return
                    continue
                # Wait for the round to complete, or for a participant below this one to disappear (ranks shift).
                if watcher is None:
                    watcher = await self._client.watch(self._prefix, prefix=True, start_revision=revision + 1)
                async for event in watcher:
                    if event.revision > revision and (
                        event.key == self._ready.encode() or event.type is WatchEventType.DELETE
                    ):
                        break
                else:
                    raise CoordError("the watch ended while entering the double barrier (client closed?)")
        finally:
            if watcher is not None:
                await watcher.cancel()

    async def leave(self, timeout: float | None = None) -> None:
        """Leave, and block until every participant of this round has left (or its session expired).

        Raises RuntimeError when not entered, BarrierTimeout (this participant's key is withdrawn first)."""
        if self._key is None or self._round is None:
            raise RuntimeError(f"double barrier {self.name!r}: leave() without a successful enter()")
        try:
            async with asyncio.timeout(timeout):
                await self._leave(self._key, self._round)
        except TimeoutError:
            raise BarrierTimeout(f"double barrier {self.name!r}: others still inside after {timeout}s") from None
        finally:
            await self._withdraw()

    async def _leave(self, key: bytes, round_: _Round) -> None:
        # etcd's algorithm: the oldest participant leaves last. It waits for the newest to go; everyone else deletes
        # their key and waits for the oldest to go. Only keys of this round count (later rounds may be entering).
        while True:
            got = await self._client.range(
                self._waiters, prefix=True, keys_only=True, sort_target=SortTarget.CREATE,
                sort_order=SortOrder.ASCEND, min_create_revision=round_.floor + 1, max_create_revision=round_.last,
            )  # fmt: skip
            keys = [kv.key for kv in got.kvs]
            if not keys:
                return
            if keys == [key]:
                # The last one out removes this round's key, and the latest-round key unless a later round rewrote it.
                round_key = self._round_key(round_.last)
                await self._client.txn(
                    [Value(self._ready) == round_.raw],
                    [Delete(key), Delete(round_key), Delete(self._ready)],
                    [Delete(key), Delete(round_key)],
                )
                return
            if keys[0] == key:
                await _wait_deleted(self._client, keys[-1], got.revision)
            else:
                if key in keys:
                    await self._client.delete(key)
                await _wait_deleted(self._client, keys[0], got.revision)

    async def _withdraw(self) -> None:
        key, self._key, self._round = self._key, None, None
        if key is not None:
            with contextlib.suppress(CoordError):
                await asyncio.shield(self._client.delete(key))

    async def __aenter__(self) -> DoubleBarrier:
        await self.enter()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._round is not None:
            await self.leave()


class SyncBarrier:
    """Blocking form of :class:`Barrier` over a :class:`coord.Client` (same parameters and guarantees).

    Example::

        gate = SyncBarrier(client, "deploy")
        gate.hold()
        ...
        gate.release()           # elsewhere: SyncBarrier(client, "deploy").wait(timeout=60)
    """

    def __init__(self, client: Client, name: str, *, ephemeral: bool = False, ttl: int | None = None) -> None:
        if not isinstance(client, Client):
            raise TypeError("SyncBarrier needs a coord.Client; use Barrier (or coord.barrier) with an AsyncClient")
        self._client = client
        self._core = Barrier(client.async_client, name, ephemeral=ephemeral, ttl=ttl)
        self.name = name
        self.key = self._core.key

    def hold(self) -> bool:
        """See :meth:`Barrier.hold`."""
        return run_sync(self._client, self._core.hold())

    def release(self) -> bool:
        """See :meth:`Barrier.release`."""
        return run_sync(self._client, self._core.release())

    def is_held(self) -> bool:
        """See :meth:`Barrier.is_held`."""
        return run_sync(self._client, self._core.is_held())

    def wait(self, timeout: float | None = None) -> None:
        """See :meth:`Barrier.wait`."""
        run_sync(self._client, self._core.wait(timeout))


class SyncDoubleBarrier:
    """Blocking form of :class:`DoubleBarrier` over a :class:`coord.Client` (same parameters and guarantees).

    Example::

        with SyncDoubleBarrier(client, "batch-42", count=3):
            compute_my_share()
    """

    def __init__(self, client: Client, name: str, count: int, *, ttl: int | None = None) -> None:
        if not isinstance(client, Client):
            raise TypeError("SyncDoubleBarrier needs a coord.Client; use DoubleBarrier (or coord.double_barrier)")
        self._client = client
        self._core = DoubleBarrier(client.async_client, name, count, ttl=ttl)
        self.name = name
        self.count = count

    @property
    def entered(self) -> bool:
        return self._core.entered

    def enter(self, timeout: float | None = None) -> None:
        """See :meth:`DoubleBarrier.enter`."""
        run_sync(self._client, self._core.enter(timeout))

    def leave(self, timeout: float | None = None) -> None:
        """See :meth:`DoubleBarrier.leave`."""
        run_sync(self._client, self._core.leave(timeout))

    def __enter__(self) -> SyncDoubleBarrier:
        self.enter()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._core.entered:
            self.leave()


@overload
def barrier(client: AsyncClient, name: str, *, ephemeral: bool = ..., ttl: int | None = ...) -> Barrier: ...
@overload
def barrier(client: Client, name: str, *, ephemeral: bool = ..., ttl: int | None = ...) -> SyncBarrier: ...
def barrier(
    client: AsyncClient | Client, name: str, *, ephemeral: bool = False, ttl: int | None = None
) -> Barrier | SyncBarrier:
    """A barrier named ``name``: :class:`Barrier` for an AsyncClient, :class:`SyncBarrier` for a Client."""
    if isinstance(client, AsyncClient):
        return Barrier(client, name, ephemeral=ephemeral, ttl=ttl)
    return SyncBarrier(client, name, ephemeral=ephemeral, ttl=ttl)


@overload
def double_barrier(client: AsyncClient, name: str, count: int, *, ttl: int | None = ...) -> DoubleBarrier: ...
@overload
def double_barrier(client: Client, name: str, count: int, *, ttl: int | None = ...) -> SyncDoubleBarrier: ...
def double_barrier(
    client: AsyncClient | Client, name: str, count: int, *, ttl: int | None = None
) -> DoubleBarrier | SyncDoubleBarrier:
    """A double barrier for ``count`` participants: :class:`DoubleBarrier` for an AsyncClient,
    :class:`SyncDoubleBarrier` for a Client."""
    if isinstance(client, AsyncClient):
        return DoubleBarrier(client, name, count, ttl=ttl)
    return SyncDoubleBarrier(client, name, count, ttl=ttl)
