"""Helpers every recipe shares: names and keys, the callbacks fired on loss, cancelling an ``async with`` body when
what it holds is lost, and the bridge that lets the blocking client's recipes be awaited from other event loops.

Threads and loops: every recipe object (a :class:`~coord.recipes.lock.Lock`, an
:class:`~coord.recipes.election.Election`, ...) lives in the event loop of its :class:`coord.AsyncClient`. The
blocking facades (``SyncLock``, ...) run their calls in the :class:`coord.Client`'s private loop through a
:class:`Runner`, and :func:`bridged` awaits such a call from any other loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, Generic, Protocol, TypeAlias, TypeVar

from opentelemetry import trace
from opentelemetry.util.types import AttributeValue

from coord.errors import CoordError

__all__ = [
    "DEFAULT",
    "BodyGuard",
    "Callback",
    "Callbacks",
    "Default",
    "NameLike",
    "Runner",
    "bridged",
    "check_timeout",
    "check_ttl",
    "exit_body",
    "holder_identity",
    "in_thread",
    "name_bytes",
    "new_key",
    "prefix_of",
    "span",
    "spawn",
]

log = logging.getLogger("coord.recipes")
_tracer = trace.get_tracer("coord.recipes")

R = TypeVar("R")
E = TypeVar("E", bound=BaseException)

NameLike: TypeAlias = str | bytes


class Default(enum.Enum):
    DEFAULT = "default"


DEFAULT = Default.DEFAULT
"""The default of a per-call ``timeout`` argument: the timeout given when the handle was created."""


class Runner(Protocol):
    """The blocking client's loop thread: ``run`` executes a coroutine in ``loop`` and blocks for its result."""

    loop: asyncio.AbstractEventLoop

    def run(self, coro: Coroutine[Any, Any, R], timeout: float | None = None) -> R: ...


async def bridged(runner: Runner, coro: Coroutine[Any, Any, R]) -> R:
    """Await ``coro`` in ``runner``'s loop from the current loop (directly when it is the same loop).

    Cancelling the caller cancels ``coro``; its result or exception is returned or raised here.
    """
    if asyncio.get_running_loop() is runner.loop:
        return await coro
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, runner.loop))


@contextlib.contextmanager
def span(op: str, **attributes: AttributeValue) -> Iterator[trace.Span]:
    """A span named ``coord.recipes.<op>`` (a no-op without an OpenTelemetry SDK); an escaping exception is
    recorded on it."""
    with _tracer.start_as_current_span(f"coord.recipes.{op}", attributes=attributes) as current:
        yield current


# --- names and keys -------------------------------------------------------------------------------------------


def name_bytes(name: NameLike, what: str = "name") -> bytes:
    """``name`` as bytes; raises TypeError for other types and ValueError when it is empty."""
    if not isinstance(name, str | bytes):
        raise TypeError(f"{what} must be str or bytes, not {type(name).__name__}")
    raw = name.encode() if isinstance(name, str) else bytes(name)
    if not raw:
        raise ValueError(f"{what} must not be empty")
    return raw


RESERVED = b"coord"
"""The barrier, queue and registry recipes keep their keys under ``coord/<kind>/<name>/``: a lock, semaphore or
election named ``coord`` or ``coord/...`` would count those keys as its own waiters, so such names are refused."""


def prefix_of(name: NameLike) -> bytes:
    """The key prefix of a recipe named ``name``: ``name + "/"`` (one trailing slash; etcd's convention, so that
    ``etcdctl lock`` and ``etcdctl elect`` on the same name interoperate). Every key under the prefix takes part, so
    a lock and an election must not share a name, as with etcd's own recipes.

    Raises ValueError for an empty name and for ``coord`` and ``coord/...`` (see :data:`RESERVED`)."""
    raw = name_bytes(name).rstrip(b"/")
    if not raw:
        raise ValueError("name must contain something other than '/'")
    if raw == RESERVED or raw.startswith(RESERVED + b"/"):
        raise ValueError(f"name {name!r} is reserved: the keys under 'coord/' belong to coord's queues and registry")
    return raw + b"/"


def new_key(prefix: bytes, lease_id: int) -> bytes:
    """A fresh key under ``prefix`` for one acquisition: the lease ID in hex (as etcd's recipes name keys), plus a
    random suffix so that two acquisitions on one lease (two tasks or threads sharing a client) never share a key."""
    return prefix + f"{lease_id:x}_{secrets.token_hex(6)}".encode()


def holder_identity() -> bytes:
    """``"<host>:<pid>"``: the value recipes store in their keys, so that ``etcdctl get --prefix <name>/`` shows who
    holds and who waits."""
    return f"{socket.gethostname()}:{os.getpid()}".encode()


def check_ttl(ttl: int | None) -> int | None:
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 1):
        raise ValueError(f"ttl must be a positive number of seconds or None, not {ttl!r}")
    return ttl


def check_timeout(timeout: float | None) -> float | None:
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0):
        raise ValueError(f"timeout must be a non-negative number of seconds or None, not {timeout!r}")
    return timeout


# --- background tasks and callbacks ---------------------------------------------------------------------------

_background: set[asyncio.Task[Any]] = set()


def spawn(coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
    """Run ``coro`` in the background of the running loop, keeping a reference until it finishes; its failure is
    logged, never lost."""
    task = asyncio.get_running_loop().create_task(coro, name=name)
    _background.add(task)

    def done(t: asyncio.Task[Any]) -> None:
        _background.discard(t)
        if not t.cancelled() and t.exception() is not None:
            log.error("%s failed", name, exc_info=t.exception())

    task.add_done_callback(done)
    return task


Callback = Callable[[E], Awaitable[None] | None]


def in_thread(callback: Callable[..., object]) -> Callable[..., Awaitable[None]]:
    """A callback for the async recipes that runs the blocking ``callback`` in a worker thread, so that it may call
    the blocking client (whose loop would deadlock if the callback ran in it)."""

    async def run(*args: Any) -> None:
        await asyncio.to_thread(callback, *args)

    return run


class Callbacks(Generic[E]):
    """Callbacks fired with an error when something held is lost. They run one at a time, in registration order, in a
    background task of the loop (awaited when they return an awaitable); a failing callback is logged and the next
    one still runs."""

    def __init__(self) -> None:
        self._callbacks: list[Callback[E]] = []

    def add(self, callback: Callback[E]) -> Callable[[], None]:
        self._callbacks.append(callback)

        def remove() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return remove

    def fire(self, error: E, only: Callback[E] | None = None) -> None:
        """Run every callback (or just ``only``) with ``error``, in the background."""
        callbacks = [only] if only is not None else list(self._callbacks)
        if callbacks:
            spawn(self._run(callbacks, error), name="coord-recipe-lost-callbacks")

    @staticmethod
    async def _run(callbacks: list[Callback[E]], error: E) -> None:
        for callback in callbacks:
            try:
                result = callback(error)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("a lost-callback failed")


# --- cancelling an ``async with`` body ------------------------------------------------------------------------


class BodyGuard:
    """Cancels the task running an ``async with`` body when what the body holds is lost.

    Created inside the body's task (in its loop). :meth:`request` may be called from any thread; the cancellation
    happens in the body's loop, and only while the guard is armed: :meth:`disarm` (called first thing on exit, in
    the same loop) makes later requests no-ops, so a cancellation never lands after the body has finished.
    """

    def __init__(self) -> None:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("async with must run inside an asyncio task")
        self.task = task
        self._loop = asyncio.get_running_loop()
        self._armed = True
        self.cancelled = False  # set when this guard cancelled the task

    def request(self, reason: str) -> None:
        with contextlib.suppress(RuntimeError):  # the body's loop is closed: nothing left to cancel
            self._loop.call_soon_threadsafe(self._fire, reason)

    def _fire(self, reason: str) -> None:
        if self._armed and not self.cancelled:
            self.cancelled = True
            self.task.cancel(reason)

    def disarm(self) -> None:
        self._armed = False


def exit_body(guard: BodyGuard | None, error: CoordError | None, exc: BaseException | None) -> None:
    """The end of an ``async with`` (or elected) body whose holding has been released: decide what propagates.

    ``error`` is the loss error when the holding was lost during the body (None otherwise), ``exc`` the exception the
    body ended with. Raises ``error`` when the holding was lost, unless an outside cancellation or a ``BaseException``
    that is not an ``Exception`` (KeyboardInterrupt, SystemExit) is propagating: those win, and this returns so the
    caller re-raises ``exc``. The cancellation this guard caused is undone (``uncancel``) and replaced by ``error``.
    """
    ours = False
    if guard is not None:
        guard.disarm()
        if guard.cancelled:
            ours = guard.task.uncancel() == 0
            if not ours:
                return  # someone else cancelled the task too: that cancellation propagates
    if error is None:
        return
    if exc is not None and not isinstance(exc, Exception) and not (ours and isinstance(exc, asyncio.CancelledError)):
        return
    if ours and isinstance(exc, asyncio.CancelledError):
        raise error from None
    raise error from exc
