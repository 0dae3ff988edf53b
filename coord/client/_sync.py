"""The blocking facade: :class:`Client` runs one private event loop in a background thread and forwards every call
to the same :class:`~coord.client.client.AsyncClient` with :func:`asyncio.run_coroutine_threadsafe`.

There is one forwarding mechanism (:func:`_forward`); stateful results (watchers, keep-alives, the session) get thin
wrappers whose methods forward the same way, and whose async iterators become blocking iterators. Callbacks and
listeners given to the sync API run in a worker thread (one at a time, in order), so they may call the client.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from concurrent.futures import Future
from types import TracebackType
from typing import TYPE_CHECKING, Any, Concatenate, Literal, ParamSpec, TypeVar, overload

from coord.client.client import AsyncClient
from coord.client.lease import KeepAlive, LeaseKeepAliveResult
from coord.client.results import WatchEvent
from coord.client.session import Session, SessionEvent, SessionState
from coord.client.txn import KeyLike
from coord.client.watch import Watcher
from coord.errors import ClientClosedError

if TYPE_CHECKING:  # coord.recipes builds on this module: the recipe factories below import it on use
    from coord.recipes.barrier import SyncBarrier, SyncDoubleBarrier
    from coord.recipes.config import ChangeHook, Format, SyncConfig
    from coord.recipes.counter import SyncCounter
    from coord.recipes.election_sync import SyncElection
    from coord.recipes.lock import SyncLock
    from coord.recipes.queue import SyncQueue
    from coord.recipes.registry import SyncRegistration, SyncServiceView
    from coord.recipes.rwlock import SyncRWLock
    from coord.recipes.semaphore import SyncSemaphore
    from coord.recipes.stm import SyncSTMTransaction

__all__ = ["Client", "SyncKeepAlive", "SyncSession", "SyncWatcher"]

P = ParamSpec("P")
R = TypeVar("R")


class _LoopThread:
    """A private event loop running forever in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="coord-client-loop", daemon=True)
        self.thread.start()
        self.closed = False

    def run(self, coro: Coroutine[Any, Any, R], timeout: float | None = None) -> R:
        """Run ``coro`` in the loop and block for its result (its exception is re-raised here)."""
        if threading.current_thread() is self.thread:
            coro.close()
            raise RuntimeError("a blocking coord.Client call was made from the client's own event loop thread")
        if self.closed:
            coro.close()
            raise ClientClosedError("the client is closed")
        future: Future[R] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except BaseException:
            future.cancel()
            raise

    def stop(self) -> None:
        self.closed = True
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        if not self.thread.is_alive():
            self.loop.close()


def _forward(
    method: Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[Client, P], R]:
    """The blocking form of an AsyncClient coroutine method, with the same signature and docstring."""

    def blocking(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._runner.run(method(self._async, *args, **kwargs))

    blocking.__name__ = method.__name__
    blocking.__qualname__ = f"Client.{method.__name__}"
    blocking.__doc__ = method.__doc__
    return blocking


W = TypeVar("W")
_F = TypeVar("_F", bound=Callable[..., Any])


def _forward_as(
    method: Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, R]],
    wrap: Callable[[_LoopThread, R], W],
) -> Callable[Concatenate[Client, P], W]:
    """Like :func:`_forward`, for calls returning a long-lived handle: the handle gets a blocking wrapper."""

    def blocking(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> W:
        return wrap(self._runner, self._runner.run(method(self._async, *args, **kwargs)))

    blocking.__name__ = method.__name__
    blocking.__qualname__ = f"Client.{method.__name__}"
    blocking.__doc__ = method.__doc__
    return blocking


def _in_thread(callback: Callable[[Any], Any]) -> Callable[[Any], Coroutine[Any, Any, None]]:
    async def run(arg: Any) -> None:
        await asyncio.to_thread(callback, arg)

    return run


class SyncWatcher:
    """Blocking form of :class:`~coord.client.watch.Watcher`: ``for event in watcher`` blocks for each event."""

    def __init__(self, runner: _LoopThread, watcher: Watcher) -> None:
        self._runner = runner
        self.watcher = watcher

    @property
    def revision(self) -> int:
        """Every event with a revision <= this one has been received."""
        return self.watcher.revision

    @property
    def start_revision(self) -> int:
        return self.watcher.start_revision

    def __iter__(self) -> Iterator[WatchEvent]:
        return self

    def __next__(self) -> WatchEvent:
        return self.next()

    def next(self, timeout: float | None = None) -> WatchEvent:
        """The next event; raises TimeoutError after ``timeout`` seconds, StopIteration once canceled."""

        async def one() -> WatchEvent:
            return await asyncio.wait_for(self.watcher.__anext__(), timeout)

        try:
            return self._runner.run(one())
        except StopAsyncIteration:
            raise StopIteration from None

    def request_progress(self, timeout: float | None = None) -> int:
        return self._runner.run(self.watcher.request_progress(timeout))

    def cancel(self) -> None:
        self._runner.run(self.watcher.cancel())

    def __enter__(self) -> SyncWatcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cancel()


class SyncKeepAlive:
    """Blocking form of :class:`~coord.client.lease.KeepAlive`."""

    def __init__(self, runner: _LoopThread, keep_alive: KeepAlive) -> None:
        self._runner = runner
        self.keep_alive = keep_alive
        self._iterator = aiter(keep_alive)

    def __iter__(self) -> Iterator[LeaseKeepAliveResult]:
        return self

    def __next__(self) -> LeaseKeepAliveResult:
        async def one() -> LeaseKeepAliveResult:
            return await anext(self._iterator)

        try:
            return self._runner.run(one())
        except StopAsyncIteration:
            raise StopIteration from None

    def close(self) -> None:
        self._runner.run(self.keep_alive.close())


class SyncSession:
    """Blocking form of :class:`~coord.client.session.Session`. Listeners run in a worker thread, in order."""

    def __init__(self, runner: _LoopThread, session: Session) -> None:
        self._runner = runner
        self.session = session

    @property
    def state(self) -> SessionState:
        return self.session.state

    @property
    def lease_id(self) -> int:
        return self.session.lease_id

    @property
    def generation(self) -> int:
        return self.session.generation

    def add_listener(self, listener: Callable[[SessionEvent], None]) -> Callable[[], None]:
        remove = self.session.add_listener(_in_thread(listener))

        def remove_listener() -> None:
            self._runner.loop.call_soon_threadsafe(remove)

        return remove_listener

    def wait_for(self, state: SessionState, timeout: float) -> None:
        self._runner.run(self.session.wait_for(state, timeout))

    def ensure_alive(self) -> int:
        return self.session.ensure_alive()

    def check(self, timeout: float | None = None) -> SessionState:
        """Blocking :meth:`Session.check`: probe the lease now; returns the state after the probe."""
        return self._runner.run(self.session.check(timeout))

    def close(self, *, revoke: bool = True) -> None:
        self._runner.run(self.session.close(revoke=revoke))


class Client:
    """The blocking client: same parameters, methods and guarantees as :class:`coord.AsyncClient`.

    Example::

        with coord.Client("127.0.0.1:2379") as client:
            client.put("greeting", "hello")
            for event in client.watch("greeting"):
                ...

    Safe to use from many threads. Do not call it from inside its own callbacks' event loop (callbacks and listeners
    given to this class already run in worker threads, where calling the client is fine).
    """

    def __init__(self, endpoints: str | Sequence[str] | None = None, **options: Any) -> None:
        self._runner = _LoopThread()
        try:
            self._async = AsyncClient(endpoints, **options)
        except BaseException:
            self._runner.stop()
            raise

    @property
    def endpoints(self) -> list[str]:
        return self._async.endpoints

    @property
    def endpoint(self) -> str:
        return self._async.endpoint

    @property
    def async_client(self) -> AsyncClient:
        """The underlying AsyncClient (its coroutines must run in this client's loop)."""
        return self._async

    get = _forward(AsyncClient.get)
    range = _forward(AsyncClient.range)
    put = _forward(AsyncClient.put)
    delete = _forward(AsyncClient.delete)
    txn = _forward(AsyncClient.txn)
    compact = _forward(AsyncClient.compact)
    grant = _forward(AsyncClient.grant)
    revoke = _forward(AsyncClient.revoke)
    time_to_live = _forward(AsyncClient.time_to_live)
    leases = _forward(AsyncClient.leases)
    keep_alive_once = _forward(AsyncClient.keep_alive_once)
    member_list = _forward(AsyncClient.member_list)
    member_add = _forward(AsyncClient.member_add)
    member_remove = _forward(AsyncClient.member_remove)
    member_update = _forward(AsyncClient.member_update)
    member_promote = _forward(AsyncClient.member_promote)
    status = _forward(AsyncClient.status)
    hash_kv = _forward(AsyncClient.hash_kv)
    defragment = _forward(AsyncClient.defragment)
    snapshot = _forward(AsyncClient.snapshot)
    alarms = _forward(AsyncClient.alarms)
    disarm = _forward(AsyncClient.disarm)
    move_leader = _forward(AsyncClient.move_leader)

    watch = _forward_as(AsyncClient.watch, SyncWatcher)
    session = _forward_as(AsyncClient.session, SyncSession)
    new_session = _forward_as(AsyncClient.new_session, SyncSession)

    def add_watch_callback(
        self, key: KeyLike, callback: Callable[[WatchEvent], None], range_end: KeyLike | None = None, **options: Any
    ) -> SyncWatcher:
        """Blocking :meth:`AsyncClient.add_watch_callback`; ``callback`` (and ``on_error``) run in a worker thread,
        one event at a time."""
        on_error = options.pop("on_error", None)
        coro = self._async.add_watch_callback(
            key, _in_thread(callback), range_end, on_error=_in_thread(on_error) if on_error else None, **options
        )
        return SyncWatcher(self._runner, self._runner.run(coro))

    def keep_alive(self, lease_id: int, *, interval: float | None = None) -> SyncKeepAlive:
        """Blocking :meth:`AsyncClient.keep_alive`."""

        async def start() -> KeepAlive:
            return self._async.keep_alive(lease_id, interval=interval)

        return SyncKeepAlive(self._runner, self._runner.run(start()))

    # --- recipes (coord.recipes): blocking handles on this client -------------------------------------------------

    def lock(self, name: str | bytes, *, ttl: int | None = None, timeout: float | None = None) -> SyncLock:
        """A distributed lock (not yet acquired): ``with client.lock("jobs", timeout=10) as lock:``. See
        :class:`coord.SyncLock`."""
        from coord.recipes.lock import Lock, SyncLock

        return SyncLock(self._runner, Lock(self._async, name, ttl=ttl, timeout=timeout))

    def rwlock(self, name: str | bytes, *, ttl: int | None = None, timeout: float | None = None) -> SyncRWLock:
        """A read/write lock: ``with client.rwlock("cfg").read():``. See :class:`coord.SyncRWLock`."""
        from coord.recipes.rwlock import RWLock, SyncRWLock

        return SyncRWLock(self._runner, RWLock(self._async, name, ttl=ttl, timeout=timeout))

    def semaphore(
        self, name: str | bytes, limit: int, *, ttl: int | None = None, timeout: float | None = None
    ) -> SyncSemaphore:
        """A counting semaphore of ``limit`` slots: ``with client.semaphore("gpu", 4):``. See
        :class:`coord.SyncSemaphore`."""
        from coord.recipes.semaphore import Semaphore, SyncSemaphore

        return SyncSemaphore(self._runner, Semaphore(self._async, name, limit, ttl=ttl, timeout=timeout))

    def election(self, name: str | bytes, *, ttl: int | None = None) -> SyncElection:
        """A leader election: ``with client.election("scheduler").campaign("me") as leadership:``. See
        :class:`coord.SyncElection`."""
        from coord.recipes.election import Election
        from coord.recipes.election_sync import SyncElection

        return SyncElection(self._runner, Election(self._async, name, ttl=ttl))

    @overload
    def elected(self, func: _F, /) -> _F: ...

    @overload
    def elected(
        self, name: str | bytes | None = None, /, *, ttl: int | None = None, value: str | bytes | None = None
    ) -> Callable[[_F], _F]: ...

    def elected(
        self,
        name: str | bytes | Callable[..., Any] | None = None,
        /,
        *,
        ttl: int | None = None,
        value: str | bytes | None = None,
    ) -> Any:
        """Decorator: run a function (sync or async) only while this process leads ``name``
        (``@client.elected("sched")`` or bare ``@client.elected``). See :func:`coord.elected`."""
        from coord.recipes._elected import elected

        if callable(name) and not isinstance(name, str | bytes):
            return elected(None, client=self)(name)
        return elected(name, ttl=ttl, value=value, client=self)

    def counter(self, name: str | bytes, *, max_attempts: int = 64) -> SyncCounter:
        """A shared integer counter in one key: ``client.counter("visits").increment()``. See
        :class:`coord.SyncCounter`."""
        from coord.recipes.counter import Counter, SyncCounter

        return SyncCounter(self._runner, Counter(self._async, name, max_attempts=max_attempts))

    def stm(self, fn: Callable[[SyncSTMTransaction], R], *, max_attempts: int = 16) -> R:
        """Run ``fn(tx)`` (in this thread) as a serializable transaction, retried on conflict; returns its result.
        See :class:`coord.STMTransaction`."""
        from coord.recipes.stm import run_stm_sync

        return run_stm_sync(self._runner, self._async, fn, max_attempts=max_attempts)

    def barrier(self, name: str, *, ephemeral: bool = False, ttl: int | None = None) -> SyncBarrier:
        """A barrier: one process ``barrier.hold()``, others ``barrier.wait()`` until it is released. See
        :class:`coord.SyncBarrier`."""
        from coord.recipes.barrier import SyncBarrier

        return SyncBarrier(self, name, ephemeral=ephemeral, ttl=ttl)

    def double_barrier(self, name: str, count: int, *, ttl: int | None = None) -> SyncDoubleBarrier:
        """A double barrier for ``count`` participants: ``with client.double_barrier("step", 3):``. See
        :class:`coord.SyncDoubleBarrier`."""
        from coord.recipes.barrier import SyncDoubleBarrier

        return SyncDoubleBarrier(self, name, count, ttl=ttl)

    def queue(
        self,
        name: str,
        *,
        visibility_timeout: float = 30,
        max_deliveries: int | None = 5,
        dead_letter: str | None = None,
        recheck_interval: float = 5.0,
    ) -> SyncQueue:
        """A work queue with at-least-once delivery: ``q.put(item)``, ``item = q.get(timeout=5)``, ``item.ack()``.
        See :class:`coord.SyncQueue`."""
        from coord.recipes.queue import SyncQueue

        return SyncQueue(
            self, name, visibility_timeout=visibility_timeout, max_deliveries=max_deliveries,
            dead_letter=dead_letter, recheck_interval=recheck_interval,
        )  # fmt: skip

    def register(
        self,
        service: str,
        address: str,
        *,
        metadata: Mapping[str, Any] | None = None,
        ttl: int | None = None,
        instance_id: str | None = None,
        status: str = "up",
    ) -> SyncRegistration:
        """Register an instance of ``service`` (registered on return) for as long as this process lives. See
        :class:`coord.SyncRegistration`."""
        from coord.recipes.registry import SyncRegistration

        return SyncRegistration(
            self, service, address, metadata=metadata, ttl=ttl, instance_id=instance_id, status=status
        )

    def discover(self, service: str, *, strategy: Literal["round_robin", "random"] = "round_robin") -> SyncServiceView:
        """A live view of ``service``'s instances, following the registry on return: ``client.discover("api").pick()``.
        See :class:`coord.SyncServiceView`."""
        from coord.recipes.registry import SyncServiceView

        return SyncServiceView(self, service, strategy=strategy)

    def config(
        self,
        prefix: str,
        model: type[Any] | None = None,
        *,
        key: str | None = None,
        format: Format = "auto",
        debounce: float = 0.1,
    ) -> SyncConfig[Any]:
        """The hot-reloading configuration under ``prefix`` (read on return), as a dict or a ``model`` instance:
        ``settings = client.config("apps/web/", Settings)``; ``settings.value``. See :class:`coord.SyncConfig`."""
        from coord.recipes.config import SyncConfig

        return SyncConfig(self, prefix, model, key=key, format=format, debounce=debounce)

    def on_change(
        self,
        prefix: str,
        model: type[Any] | None = None,
        *,
        key: str | None = None,
        format: Format = "auto",
        debounce: float = 0.1,
    ) -> ChangeHook:
        """Decorator: call the function (in a worker thread) with the new configuration after every change under
        ``prefix``. See :func:`coord.on_change`."""
        from coord.recipes.config import ChangeHook

        return ChangeHook(self, prefix, model, key=key, format=format, debounce=debounce)

    def run(self, coro: Coroutine[Any, Any, R], timeout: float | None = None) -> R:
        """Run ``coro`` in this client's event loop and block for its result (its exception is raised here).

        The loop is where :attr:`async_client` lives, so ``coro`` may use it:
        ``client.run(client.async_client.get("k"))``.
        Raises TimeoutError after ``timeout`` seconds (the coroutine is cancelled), ClientClosedError once closed,
        RuntimeError when called from that loop's own thread (it would deadlock).
        """
        return self._runner.run(coro, timeout)

    def close(self) -> None:
        """Close the async client, then stop the private loop. Idempotent."""
        if self._runner.closed:
            return
        try:
            self._runner.run(self._async.close(), timeout=30)
        finally:
            self._runner.stop()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
