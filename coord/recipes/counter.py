"""A shared integer counter in one key, updated with compare-and-swap transactions."""

from __future__ import annotations

import asyncio
import random

from coord.client import AsyncClient, Get, GetResult, KeyValue, ModRevision, Put
from coord.recipes._common import NameLike, Runner, name_bytes
from coord.recipes._errors import TransactionConflict

__all__ = ["Counter", "SyncCounter", "backoff_delay"]


def backoff_delay(attempt: int) -> float:
    """A random delay before retry number ``attempt`` (1, 2, ...) after a conflict: full jitter, capped at 0.2 s."""
    return random.uniform(0, min(0.005 * 2**attempt, 0.2))


class Counter:
    """A distributed integer counter: one key holding the number as decimal text (``etcdctl get`` shows it).

    Example::

        visits = client.counter("stats/visits")
        n = await visits.increment()        # atomically, however many processes increment at once
        await visits.add(-5)
        print(await visits.get())

    A missing key counts as 0. Updates are compare-and-swap txns on the key's mod revision, retried on conflict up to
    ``max_attempts`` times (with jittered backoff), then :class:`coord.TransactionConflict` is raised and nothing
    was written by the last attempt. An update that fails with DeadlineExceededError may or may not have been
    applied (it is never applied twice). A value that is not an integer raises ValueError.
    """

    def __init__(self, client: AsyncClient, name: NameLike, *, max_attempts: int = 64) -> None:
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise ValueError(f"max_attempts must be a positive int, not {max_attempts!r}")
        self._client = client
        self.key = name_bytes(name)
        self.name = name if isinstance(name, str) else name.decode(errors="replace")
        self.max_attempts = max_attempts

    def __repr__(self) -> str:
        return f"<Counter {self.name!r}>"

    def _parse(self, kv: KeyValue | None) -> tuple[int, int]:
        """(value, mod revision) of the key; (0, 0) when missing."""
        if kv is None:
            return 0, 0
        try:
            return int(kv.value.decode()), kv.mod_revision
        except ValueError:
            raise ValueError(f"counter {self.name!r}: the key holds {kv.value[:40]!r}, not an integer") from None

    async def get(self) -> int:
        """The current value (0 when the key does not exist)."""
        return self._parse((await self._client.get(self.key)).kv)[0]

    async def set(self, value: int) -> None:
        """Overwrite the value."""
        await self._client.put(self.key, str(_int(value)))

    async def add(self, delta: int = 1) -> int:
        """Add ``delta`` atomically; returns the new value. Raises TransactionConflict after ``max_attempts``."""
        delta = _int(delta)
        current, mod_revision = self._parse((await self._client.get(self.key)).kv)
        for attempt in range(1, self.max_attempts + 1):
            new = current + delta
            result = await self._client.txn(
                [ModRevision(self.key) == mod_revision], [Put(self.key, str(new))], [Get(self.key)]
            )
            if result.succeeded:
                return new
            seen = result.responses[0]
            assert isinstance(seen, GetResult)
            current, mod_revision = self._parse(seen.kv)
            await asyncio.sleep(backoff_delay(attempt))
        raise TransactionConflict(f"counter {self.name!r}: still conflicting after {self.max_attempts} attempts")

    async def increment(self) -> int:
        """``add(1)``."""
        return await self.add(1)

    async def decrement(self) -> int:
        """``add(-1)``."""
        return await self.add(-1)

    async def compare_and_set(self, expected: int, value: int) -> bool:
        """Set ``value`` only if the counter is ``expected`` (a missing key counts as 0); True when it was set."""
        expected, value = _int(expected), _int(value)
        for attempt in range(1, self.max_attempts + 1):
            current, mod_revision = self._parse((await self._client.get(self.key)).kv)
            if current != expected:
                return False
            result = await self._client.txn([ModRevision(self.key) == mod_revision], [Put(self.key, str(value))])
            if result.succeeded:
                return True
            await asyncio.sleep(backoff_delay(attempt))
        raise TransactionConflict(f"counter {self.name!r}: still conflicting after {self.max_attempts} attempts")


def _int(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"a counter takes int values, not {type(value).__name__}")
    return value


class SyncCounter:
    """The blocking form of :class:`Counter`: ``coord.counter("stats/visits").increment()``."""

    def __init__(self, runner: Runner, counter: Counter) -> None:
        self._runner = runner
        self.counter = counter

    def __repr__(self) -> str:
        return f"<SyncCounter {self.counter.name!r}>"

    @property
    def name(self) -> str:
        return self.counter.name

    def get(self) -> int:
        return self._runner.run(self.counter.get())

    def set(self, value: int) -> None:
        self._runner.run(self.counter.set(value))

    def add(self, delta: int = 1) -> int:
        return self._runner.run(self.counter.add(delta))

    def increment(self) -> int:
        return self._runner.run(self.counter.increment())

    def decrement(self) -> int:
        return self._runner.run(self.counter.decrement())

    def compare_and_set(self, expected: int, value: int) -> bool:
        return self._runner.run(self.counter.compare_and_set(expected, value))
