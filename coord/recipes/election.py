"""Leader election: :class:`Election` (campaign, leader, observe) and the :class:`Leadership` a campaign wins.

The algorithm is etcd's ``concurrency`` election: each candidate creates a key under ``name/`` holding its value;
the leader is the candidate whose key has the lowest create revision, and that revision is the leadership's
**epoch**, a fencing token that grows with every new leadership. A candidate waits only for its predecessor's key to
go (no herd). Keys are compatible with ``etcdctl elect name``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from coord.client import AsyncClient, CreateRevision, KeyValue, Put, SortOrder, SortTarget, WatchEventType
from coord.errors import CompactedError, CoordError
from coord.recipes._common import (
    BodyGuard,
    NameLike,
    check_timeout,
    check_ttl,
    exit_body,
    prefix_of,
)
from coord.recipes._errors import ElectionTimeout, LeadershipLost, NotLeader
from coord.recipes._hold import Exclusive, acquire_key
from coord.recipes._holder import Holder

__all__ = ["Campaign", "Election", "Leader", "Leadership"]


def _value(value: NameLike) -> bytes:
    if not isinstance(value, str | bytes):
        raise TypeError(f"a leader value must be str or bytes, not {type(value).__name__}")
    return value.encode() if isinstance(value, str) else bytes(value)


@dataclass(frozen=True, slots=True)
class Leader:
    """An election's leader as seen by :meth:`Election.leader` or :meth:`Election.observe`: its ``value`` (as last
    proclaimed), its ``epoch`` (the create revision of its key, the fencing token of that leadership), its ``key`` and
    the ``lease`` it lives on."""

    key: bytes
    value: bytes
    epoch: int
    lease: int

    @classmethod
    def from_kv(cls, kv: KeyValue) -> Leader:
        return cls(kv.key, kv.value, kv.create_revision, kv.lease)


class Leadership(Holder[LeadershipLost]):
    """Leadership won by :meth:`Election.campaign`: in force until resigned or lost.

    Example::

        async with client.election("scheduler").campaign("host-a") as leadership:
            while True:
                await client.txn([leadership.guard()], [coord.Put("schedule", plan())])  # fenced
                await asyncio.sleep(1)

    - :attr:`epoch`: the fencing token of this leadership (grows with every new leader); :meth:`guard` is the txn
      compare ``CreateRevision(key) == epoch`` that makes a write succeed only while this leadership is in force.
    - Loss (the lease expired or was revoked, or the key was deleted) is never silent: :attr:`is_leader` turns False,
      :meth:`on_lost` callbacks run, the task running an ``async with`` body is cancelled and the ``async with``
      raises :class:`coord.LeadershipLost`.
    - :meth:`proclaim` changes the leader value (raises :class:`coord.NotLeader` / :class:`coord.LeadershipLost`
      without leadership); :meth:`resign` gives leadership up (idempotent; the next candidate takes over at once).
      Leaving an ``async with`` resigns.
    """

    def __init__(self, election: Election, value: bytes) -> None:
        super().__init__()
        self.election = election
        self.value = value

    def __repr__(self) -> str:
        epoch = self._hold.token if self._hold is not None else None
        return f"<Leadership {self.election.name!r} epoch={epoch} leader={self.is_leader}>"

    def _lost_error(self, reason: str) -> LeadershipLost:
        return LeadershipLost(f"leadership of {self.election.name!r} (epoch {self.epoch}) was lost: {reason}")

    def _not_held_error(self) -> CoordError:
        return NotLeader(f"no leadership of {self.election.name!r} was won")

    @property
    def epoch(self) -> int:
        """The fencing token of this leadership: the create revision of its key."""
        return self._current().token

    @property
    def is_leader(self) -> bool:
        """True until resigned or lost."""
        return self._is_held

    def check(self) -> None:
        """Raise :class:`coord.LeadershipLost` if leadership was lost, :class:`coord.NotLeader` if resigned."""
        if not self.is_leader:
            raise self._lost or NotLeader(f"leadership of {self.election.name!r} was resigned")

    async def proclaim(self, value: NameLike) -> None:
        """Set the leader value seen by observers, only while this leadership is in force (a fenced write).

        Raises NotLeader after :meth:`resign`, LeadershipLost when leadership was lost.
        """
        self.check()
        hold = self._current()
        data = _value(value)
        result = await self.election.client.txn(
            [CreateRevision(hold.key) == hold.token], [Put(hold.key, data, lease=hold.lease_id)]
        )
        if not result.succeeded:
            hold.lose("its key was deleted")
            self.check()
        self.value = data

    async def resign(self) -> None:
        """Give leadership up (delete the key). Idempotent; never raises CoordError."""
        if self._hold is not None:
            await self._hold.release()

    async def __aenter__(self) -> Leadership:
        self._arm(BodyGuard())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        guard = self._disarm()
        error = self._lost
        await self.resign()
        exit_body(guard, error, exc)


class Campaign:
    """What :meth:`Election.campaign` returns: await it for a :class:`Leadership`, or use it with ``async with``
    (the body runs as leader; leaving resigns; loss cancels the body and raises :class:`coord.LeadershipLost`)."""

    def __init__(self, election: Election, value: bytes, timeout: float | None) -> None:
        self._election = election
        self._value = value
        self._timeout = timeout
        self._leadership: Leadership | None = None

    def __await__(self) -> Generator[Any, None, Leadership]:
        return self._election._campaign(self._value, self._timeout).__await__()

    async def __aenter__(self) -> Leadership:
        self._leadership = await self._election._campaign(self._value, self._timeout)
        return await self._leadership.__aenter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._leadership is not None
        await self._leadership.__aexit__(exc_type, exc, tb)


class Election:
    """A leader election among any number of candidates (processes, tasks), compatible with ``etcdctl elect``.

    Example::

        election = client.election("scheduler", ttl=5)
        async with election.campaign("host-a") as leadership:   # blocks until elected
            ...                                                 # runs only while leader
        print(await election.leader())                          # Leader(value=..., epoch=...) or None
        async for leader in election.observe():                 # every change, None when there is no leader
            ...

    ``ttl``: None (default) campaigns on the client's session lease; ``N`` gives each campaign a lease of its own of
    N seconds. A leader that dies or is cut off loses leadership after the TTL and the next candidate takes over.
    See :meth:`coord.AsyncClient.elected` for running a function only while leader.
    """

    def __init__(self, client: AsyncClient, name: NameLike, *, ttl: int | None = None) -> None:
        self.client = client
        self._prefix = prefix_of(name)
        self.name = name if isinstance(name, str) else name.decode(errors="replace")
        self.ttl = check_ttl(ttl)

    def __repr__(self) -> str:
        return f"<Election {self.name!r}>"

    def campaign(self, value: NameLike = b"", *, timeout: float | None = None) -> Campaign:
        """Campaign with ``value`` until elected: ``leadership = await election.campaign(v)`` or
        ``async with election.campaign(v) as leadership:``.

        Raises :class:`coord.ElectionTimeout` when not elected within ``timeout`` seconds (None: wait forever); the
        candidate key is removed then, and also when the waiting task is cancelled.
        """
        return Campaign(self, _value(value), check_timeout(timeout))

    async def _campaign(self, value: bytes, timeout: float | None) -> Leadership:
        leadership = Leadership(self, value)
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        try:
            hold = await acquire_key(
                self.client, prefix=self._prefix, policy=Exclusive(self._prefix), ttl=self.ttl, value=value,
                deadline=deadline, blocking=True, on_lost=leadership._on_lost,
            )  # fmt: skip
        except TimeoutError:
            raise ElectionTimeout(f"not elected leader of {self.name!r} within {timeout}s") from None
        assert hold is not None
        leadership._hold = hold
        return leadership

    async def _leader_at(self, revision: int) -> tuple[Leader | None, int]:
        try:
            result = await self.client.range(
                self._prefix, prefix=True, sort_target=SortTarget.CREATE, sort_order=SortOrder.ASCEND, limit=1,
                revision=revision,
            )  # fmt: skip
        except CompactedError:
            return await self._leader_at(0)
        kv = result.kv
        return (Leader.from_kv(kv) if kv is not None else None), result.revision

    async def leader(self) -> Leader | None:
        """The current leader, or None when there is none (a linearizable read)."""
        return (await self._leader_at(0))[0]

    async def observe(self) -> AsyncIterator[Leader | None]:
        """The current leader (None when there is none), then every change: a new leader, a new value proclaimed,
        or None when the last candidate is gone. Consecutive duplicates are not repeated.

        Built on one watch from the revision of the first read, so no change is missed; a leader whose lease expired
        is reported gone as soon as the server deletes its key. Stop with ``break`` or ``aclose()``.
        """
        current, revision = await self._leader_at(0)
        yield current
        async with await self.client.watch(self._prefix, prefix=True, start_revision=revision + 1) as watcher:
            async for event in watcher:
                new = current
                if event.resynced:
                    new = (await self._leader_at(0))[0]
                elif current is None:
                    if event.type is WatchEventType.PUT:
                        new = Leader.from_kv(event.kv)  # the first key after none is the lowest
                elif event.key == current.key:
                    if event.type is WatchEventType.PUT:
                        new = Leader.from_kv(event.kv)
                    else:
                        new = (await self._leader_at(event.revision))[0]
                if new != current:
                    current = new
                    yield new
