"""The base of every handle on a held key (locks, semaphore slots, leaderships): fencing token and guard, loss
callbacks, waiting for the end, and cancelling an ``async with`` body when the holding is lost."""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Callable
from typing import Generic, TypeVar

from coord.client import Compare, CreateRevision
from coord.errors import CoordError
from coord.recipes._common import BodyGuard, Callback, Callbacks
from coord.recipes._hold import Hold

__all__ = ["Holder"]

log = logging.getLogger("coord.recipes")

E = TypeVar("E", bound=CoordError)


class Holder(abc.ABC, Generic[E]):
    """What every handle of a held key offers (locks and leaderships): the fencing token, a guard for fenced writes,
    loss callbacks, waiting for the end, and cancelling an ``async with`` body on loss.

    Subclasses set ``_hold`` when acquired and reset ``_lost`` before each acquisition; a :class:`Hold` reports its
    loss through :meth:`_on_lost`.
    """

    def __init__(self) -> None:
        self._hold: Hold | None = None
        self._lost: E | None = None
        self._callbacks: Callbacks[E] = Callbacks()
        self._body: BodyGuard | None = None

    @abc.abstractmethod
    def _lost_error(self, reason: str) -> E: ...

    @abc.abstractmethod
    def _not_held_error(self) -> CoordError: ...

    def _on_lost(self, reason: str) -> None:
        error = self._lost_error(reason)
        self._lost = error
        log.warning("%s", error)
        self._callbacks.fire(error)
        body = self._body
        if body is not None:
            body.request(str(error))

    def _current(self) -> Hold:
        if self._hold is None:
            raise self._not_held_error()
        return self._hold

    @property
    def _is_held(self) -> bool:
        return self._hold is not None and self._hold.held

    @property
    def lost_error(self) -> E | None:
        """The loss of the current (or last) holding, or None when it was not lost."""
        return self._lost

    @property
    def key(self) -> bytes:
        """The key of the current (or last) holding."""
        return self._current().key

    @property
    def lease_id(self) -> int:
        """The lease the current (or last) holding lives on."""
        return self._current().lease_id

    def guard(self) -> Compare:
        """A txn compare that holds only while this holding's key exists: ``CreateRevision(key) == token``.

        Put it in the ``compare`` list of a :meth:`coord.AsyncClient.txn`: the write then succeeds only while the
        holding is still in force (on the server's clock), however late the request arrives.
        """
        hold = self._current()
        return CreateRevision(hold.key) == hold.token

    def on_lost(self, callback: Callback[E]) -> Callable[[], None]:
        """Call ``callback(error)`` when a holding of this handle is lost (at once if the current one already is).
        Returns a function that removes the callback."""
        remove = self._callbacks.add(callback)
        if self._lost is not None:
            self._callbacks.fire(self._lost, only=callback)
        return remove

    async def wait_lost(self, timeout: float | None = None) -> bool:
        """Wait until the current holding ends (lost, or released); True once it has, False after ``timeout``."""
        hold = self._hold
        if hold is None:
            return True
        try:
            async with asyncio.timeout(timeout):
                await hold.ended.wait()
        except TimeoutError:
            return False
        return True

    def _arm(self, guard: BodyGuard) -> None:
        self._body = guard
        if self._lost is not None:
            guard.request(str(self._lost))

    def _disarm(self) -> BodyGuard | None:
        guard, self._body = self._body, None
        if guard is not None:
            guard.disarm()
        return guard
