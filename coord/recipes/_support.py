"""Helpers shared by the barrier, queue, registry and config recipes: key naming, timeouts, running the async core
from the blocking facade, sequential callback delivery, and a prefix watch that survives failures.

Everything here is built on coord.client's public API.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import re
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from coord.client import AsyncClient, Client, Watcher, WatchEvent
from coord.errors import ClientClosedError, CoordError
from coord.recipes._common import in_thread
from coord.recipes._errors import (
    BarrierTimeout,
    ClaimLost,
    ConfigInvalid,
    DiscoveryTimeout,
    NoInstanceAvailable,
    QueueEmpty,
)

__all__ = [
    "ROOT",
    "BarrierTimeout",
    "CallbackQueue",
    "ClaimLost",
    "ConfigInvalid",
    "DiscoveryTimeout",
    "NoInstanceAvailable",
    "PrefixWatch",
    "QueueEmpty",
    "async_client_of",
    "deadline_after",
    "in_thread",
    "invoke",
    "recipe_prefix",
    "remaining",
    "run_sync",
    "validate_name",
]

log = logging.getLogger(__name__)

R = TypeVar("R")

ROOT = "coord/"
"""Every key a recipe in this package creates for itself lives under ``coord/<kind>/<name>/``."""

_NAME = re.compile(r"^[^/\x00-\x1f\x7f]{1,200}$")


def validate_name(name: object, what: str = "name") -> str:
    """``name`` when it is a usable recipe name: 1-200 characters, no ``/`` and no control characters (a ``/``
    would let one recipe's keys fall inside another's prefix). Raises TypeError / ValueError otherwise."""
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a str, not {type(name).__name__}")
    if not _NAME.match(name):
        raise ValueError(f"invalid {what} {name!r}: use 1-200 characters without '/' or control characters")
    return name


def recipe_prefix(kind: str, name: str) -> str:
    """The key prefix owned by one recipe instance: ``coord/<kind>/<name>/``."""
    return f"{ROOT}{kind}/{validate_name(name)}/"


def async_client_of(client: AsyncClient | Client) -> AsyncClient:
    """The AsyncClient behind ``client`` (itself for an AsyncClient). Raises TypeError for anything else."""
    if isinstance(client, AsyncClient):
        return client
    if isinstance(client, Client):
        return client.async_client
    raise TypeError(f"expected a coord.AsyncClient or coord.Client, not {type(client).__name__}")


def run_sync(client: Client, coro: Coroutine[Any, Any, R], timeout: float | None = None) -> R:
    """Run ``coro`` in the event loop of the blocking ``client`` and return its result (its exception is raised)."""
    return client.run(coro, timeout)


async def invoke(callback: Callable[..., Any], *args: Any) -> None:
    """Call ``callback(*args)``, awaiting the result when it is awaitable."""
    result = callback(*args)
    if inspect.isawaitable(result):
        await result


def deadline_after(timeout: float | None) -> float | None:
    """The event-loop time at which ``timeout`` seconds from now run out (None: never)."""
    if timeout is None:
        return None
    if timeout < 0:
        raise ValueError(f"timeout must be >= 0, not {timeout}")
    return asyncio.get_running_loop().time() + timeout


def remaining(deadline: float | None) -> float | None:
    """Seconds left until ``deadline`` (never below 0), or None for no deadline."""
    if deadline is None:
        return None
    return max(deadline - asyncio.get_running_loop().time(), 0.0)


class CallbackQueue:
    """Delivers notifications to registered callbacks one at a time, in order, from one background task.

    A failing callback is logged and does not stop the others. Callbacks may be plain functions or coroutine
    functions; the blocking facades register their callbacks wrapped with :func:`in_thread`.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._callbacks: list[Callable[..., Any]] = []
        self._pending: asyncio.Queue[tuple[Any, ...] | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def add(self, callback: Callable[..., Any]) -> Callable[[], None]:
        """Register ``callback``; returns a function that unregisters it."""
        self._callbacks.append(callback)
        return lambda: self.discard(callback)

    def discard(self, callback: Callable[..., Any]) -> None:
        """Unregister ``callback`` (no-op when it is not registered)."""
        if callback in self._callbacks:
            self._callbacks.remove(callback)

    def __bool__(self) -> bool:
        return bool(self._callbacks)

    def notify(self, *args: Any) -> None:
        """Queue one notification (a no-op when no callback is registered). Call from the event loop."""
        if not self._callbacks:
            return
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._deliver(), name=f"coord-{self._name}-callbacks")
        self._pending.put_nowait(args)

    async def _deliver(self) -> None:
        while (args := await self._pending.get()) is not None:
            for callback in list(self._callbacks):
                try:
                    await invoke(callback, *args)
                except Exception:
                    log.exception("%s callback %r failed", self._name, callback)

    async def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (waiting at most ``timeout`` seconds), then stop."""
        if self._task is None:
            return
        self._pending.put_nowait(None)
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class PrefixWatch:
    """Follows every change under a key prefix from a given revision, in a background task.

    ``on_event`` is called (in the event loop) for each event in revision order; ``on_batch`` once after each group
    of events that arrived together (one watch response, so never in the middle of one revision's events). When the
    watch fails (for example the server canceled it), the task calls ``resync()``, which must re-read the state and
    return the revision it read at, then watches again from the next revision; it backs off between attempts.
    The task ends when :meth:`close` is called or the client is closed.
    """

    def __init__(
        self,
        client: AsyncClient,
        prefix: str,
        on_event: Callable[[WatchEvent], None],
        resync: Callable[[], Awaitable[int]],
        on_batch: Callable[[], None] | None = None,
        *,
        single_key: bool = False,
        name: str = "watch",
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._single_key = single_key
        self._on_event = on_event
        self._on_batch = on_batch
        self._resync = resync
        self._name = name
        self._watcher: Watcher | None = None
        self._task: asyncio.Task[None] | None = None
        self._batch_pending = False
        self._closed = False

    async def start(self, start_revision: int) -> None:
        """Watch from ``start_revision`` (inclusive); returns once the server confirmed the watch."""
        self._watcher = await self._open(start_revision)
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"coord-{self._name}")

    async def _open(self, start_revision: int) -> Watcher:
        return await self._client.watch(self._prefix, prefix=not self._single_key, start_revision=start_revision)

    def _schedule_batch(self) -> None:
        # All events of one watch response are queued together and consumed without suspending, so a callback
        # scheduled with call_soon runs after the whole group.
        if self._on_batch is not None and not self._batch_pending:
            self._batch_pending = True
            asyncio.get_running_loop().call_soon(self._fire_batch)

    def _fire_batch(self) -> None:
        self._batch_pending = False
        if self._on_batch is not None and not self._closed:
            try:
                self._on_batch()
            except Exception:
                log.exception("%s: batch handler failed", self._name)

    async def _run(self) -> None:
        backoff = 0.1
        while not self._closed:
            watcher = self._watcher
            if watcher is not None:
                try:
                    async for event in watcher:
                        self._on_event(event)
                        self._schedule_batch()
                        backoff = 0.1
                    return  # canceled: by close(), or because the client was closed
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("%s on %s failed (%s); re-reading and watching again", self._name, self._prefix, exc)
                    with contextlib.suppress(CoordError):
                        await watcher.cancel()
                    self._watcher = None
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
            try:
                revision = await self._resync()
                self._watcher = await self._open(revision + 1)
            except asyncio.CancelledError:
                raise
            except ClientClosedError:
                return
            except CoordError as exc:
                log.warning("%s on %s: re-sync failed (%s); retrying", self._name, self._prefix, exc)
            self._schedule_batch()

    async def close(self) -> None:
        """Stop watching. Idempotent."""
        self._closed = True
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._watcher is not None:
            with contextlib.suppress(CoordError):
                await self._watcher.cancel()
