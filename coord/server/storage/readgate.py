"""A gate in front of LMDB read transactions, so the environment can be closed and reopened safely (defragment).

Usage::

    gate = ReaderGate()
    with gate.reading():             # any thread: a read transaction may be in flight inside the block
        ...
    await gate.run_exclusive(swap)   # on the event loop: ``swap()`` runs once no read transaction is in flight

Why it works: code on the event loop opens read transactions only between two awaits (a ``with backend.read()``
block never awaits), so while ``run_exclusive`` runs ``swap`` synchronously on the loop no loop reader can be in
flight. Readers on other threads (snapshot spools, the commit thread) are counted: once ``run_exclusive`` starts, new
readers from other threads wait at the gate until it ends, and ``swap`` runs only when the count is zero. Readers on
the loop's own thread are never held (holding them would block the loop that must run ``swap``), nor are nested
readers of a thread that already holds one (holding those would deadlock the outer one).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")


class ReadersBusyError(RuntimeError):
    """Read transactions on other threads did not finish within the allowed time; nothing was done."""


class ReaderGate:
    """Counts read transactions in flight and lets one caller run code while none is (see the module docstring)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._active = 0
        # Thread running run_exclusive (the event loop's), or None when the gate is open.
        self._holder: int | None = None
        self._drained: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None
        self._local = threading.local()

    def enter(self) -> None:
        """Count a reader; waits first while another thread holds the gate. Pair with :meth:`leave`."""
        depth: int = getattr(self._local, "depth", 0)
        with self._cond:
            if depth == 0:
                me = threading.get_ident()
                while self._holder is not None and self._holder != me:
                    self._cond.wait()
            self._active += 1
        self._local.depth = depth + 1

    def leave(self) -> None:
        """The reader counted by the matching :meth:`enter` is done."""
        self._local.depth -= 1
        with self._cond:
            self._active -= 1
            if self._active == 0 and self._drained is not None:
                loop, event = self._drained
                with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                    loop.call_soon_threadsafe(event.set)

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """Count a reader for the duration of the block (see :meth:`enter`)."""
        self.enter()
        try:
            yield
        finally:
            self.leave()

    async def run_exclusive(self, fn: Callable[[], T], timeout: float) -> T:
        """Run ``fn()`` on the calling event loop once no read transaction is in flight; returns its result.

        ``fn`` must not await (it runs synchronously, so no loop reader can start meanwhile). Readers on other
        threads that start after this call wait until ``fn`` returned. Raises :class:`ReadersBusyError` (without
        running ``fn``) when the readers in flight did not finish within ``timeout`` seconds, and RuntimeError when
        another ``run_exclusive`` is under way.
        """
        loop = asyncio.get_running_loop()
        drained = asyncio.Event()
        with self._cond:
            if self._holder is not None:
                raise RuntimeError("the reader gate is already held")
            self._holder = threading.get_ident()
            self._drained = (loop, drained)
        try:
            deadline = loop.time() + timeout
            while True:
                with self._cond:
                    if self._active == 0:
                        break
                    drained.clear()
                left = deadline - loop.time()
                if left <= 0:
                    raise ReadersBusyError(f"read transactions still in flight after {timeout:g}s")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(drained.wait(), left)
            return fn()
        finally:
            with self._cond:
                self._holder = None
                self._drained = None
                self._cond.notify_all()
