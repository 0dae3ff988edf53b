"""The blocking forms of leader election: :class:`SyncElection`, :class:`SyncLeadership` and :class:`SyncObserver`
(same guarantees as :mod:`coord.recipes.election`, calls run in the :class:`coord.Client`'s loop)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from types import TracebackType

from coord.client import Compare
from coord.recipes._common import NameLike, Runner, check_timeout, in_thread
from coord.recipes._errors import LeadershipLost
from coord.recipes.election import Election, Leader, Leadership, _value

__all__ = ["SyncElection", "SyncLeadership", "SyncObserver"]


class SyncLeadership:
    """The blocking form of :class:`Leadership` (same guarantees), from :meth:`SyncElection.campaign`.

    Example::

        with coord.election("scheduler").campaign("host-a") as leadership:
            while leadership.is_leader:          # a blocking body is not interrupted: check, or wait_lost()
                client.txn([leadership.guard()], [coord.Put("schedule", plan())])
                leadership.wait_lost(timeout=1)

    On loss, :attr:`is_leader` turns False, :meth:`wait_lost` returns, ``on_lost`` callbacks run in a worker thread,
    and leaving the ``with`` block raises :class:`coord.LeadershipLost` (leaving always resigns).
    """

    def __init__(self, runner: Runner, leadership: Leadership) -> None:
        self._runner = runner
        self.leadership = leadership

    def __repr__(self) -> str:
        return repr(self.leadership).replace("<Leadership", "<SyncLeadership", 1)

    @property
    def epoch(self) -> int:
        return self.leadership.epoch

    @property
    def key(self) -> bytes:
        return self.leadership.key

    @property
    def value(self) -> bytes:
        return self.leadership.value

    @property
    def is_leader(self) -> bool:
        return self.leadership.is_leader

    @property
    def lost_error(self) -> LeadershipLost | None:
        return self.leadership.lost_error

    def guard(self) -> Compare:
        return self.leadership.guard()

    def check(self) -> None:
        self.leadership.check()

    def proclaim(self, value: NameLike) -> None:
        self._runner.run(self.leadership.proclaim(value))

    def resign(self) -> None:
        self._runner.run(self.leadership.resign())

    def on_lost(self, callback: Callable[[LeadershipLost], object]) -> Callable[[], None]:
        """Call ``callback(error)`` in a worker thread when this leadership is lost. Returns a remover."""

        async def add() -> Callable[[], None]:
            return self.leadership.on_lost(in_thread(callback))

        remove = self._runner.run(add())

        def remove_callback() -> None:
            self._runner.loop.call_soon_threadsafe(remove)

        return remove_callback

    def wait_lost(self, timeout: float | None = None) -> bool:
        """Block until leadership ends (lost or resigned): True once it has, False after ``timeout``."""
        return self._runner.run(self.leadership.wait_lost(timeout))

    def __enter__(self) -> SyncLeadership:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        error = self.leadership.lost_error
        self.resign()
        if error is not None and (exc is None or isinstance(exc, Exception)):
            raise error from exc


class SyncObserver:
    """A blocking iterator over :meth:`Election.observe`: ``for leader in observer`` (None: no leader).

    ``next(timeout)`` raises TimeoutError when nothing changed in time (the observer stays usable); :meth:`close`
    stops it."""

    def __init__(self, runner: Runner, election: Election) -> None:
        self._runner = runner
        self._items: asyncio.Queue[tuple[Leader | None] | BaseException] | None = None
        self._task: asyncio.Task[None] | None = None

        async def start() -> None:
            self._items = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._pump(election), name="coord-election-observe")

        runner.run(start())

    async def _pump(self, election: Election) -> None:
        assert self._items is not None
        try:
            async for leader in election.observe():
                self._items.put_nowait((leader,))
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._items.put_nowait(exc)
        else:
            self._items.put_nowait(StopIteration())

    def __iter__(self) -> Iterator[Leader | None]:
        return self

    def __next__(self) -> Leader | None:
        return self.next()

    def next(self, timeout: float | None = None) -> Leader | None:
        async def one() -> tuple[Leader | None] | BaseException:
            assert self._items is not None
            return await asyncio.wait_for(self._items.get(), timeout)

        item = self._runner.run(one())
        if isinstance(item, BaseException):
            assert self._items is not None
            self._runner.loop.call_soon_threadsafe(self._items.put_nowait, item)  # stay failed / exhausted
            raise item
        return item[0]

    def close(self) -> None:
        """Stop observing. Idempotent."""

        async def stop() -> None:
            if self._task is not None:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task

        self._runner.run(stop())

    def __enter__(self) -> SyncObserver:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class SyncElection:
    """The blocking form of :class:`Election`, from ``coord.election(name)`` or :meth:`coord.Client.election`.

    Example::

        election = coord.election("scheduler", ttl=5)
        with election.campaign("host-a") as leadership:   # blocks until elected; leaving resigns
            ...
        print(election.leader())
        for leader in election.observe():                 # blocking; None when there is no leader
            ...
    """

    def __init__(self, runner: Runner, election: Election) -> None:
        self._runner = runner
        self.election = election

    def __repr__(self) -> str:
        return f"<SyncElection {self.name!r}>"

    @property
    def name(self) -> str:
        return self.election.name

    def campaign(self, value: NameLike = b"", *, timeout: float | None = None) -> SyncLeadership:
        """Block until elected (see :meth:`Election.campaign`); raises ElectionTimeout after ``timeout``."""
        campaign = self.election._campaign(_value(value), check_timeout(timeout))
        return SyncLeadership(self._runner, self._runner.run(campaign))

    def leader(self) -> Leader | None:
        return self._runner.run(self.election.leader())

    def observe(self) -> SyncObserver:
        return SyncObserver(self._runner, self.election)
