"""The asyncio client: :class:`AsyncClient` combines the KV, Watch, Lease, Cluster and Maintenance calls over one
:class:`~coord.client._channel.Transport`. :class:`coord.Client` is the blocking facade over this same class.
"""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from coord.client._channel import DEFAULT_ENDPOINT, TLSConfig, Transport
from coord.client.cluster import ClusterMixin
from coord.client.kv import KVMixin
from coord.client.lease import KeepAlive, LeaseMixin
from coord.client.maintenance import MaintenanceMixin
from coord.client.session import Session, SessionState
from coord.client.txn import KeyLike
from coord.client.watch import WatchCallback, Watcher, run_callback

if TYPE_CHECKING:  # coord.recipes builds on this module: the recipe factories below import it on use
    from collections.abc import Awaitable

    from coord.recipes.barrier import Barrier, DoubleBarrier
    from coord.recipes.config import ChangeHook, Config, Format
    from coord.recipes.counter import Counter
    from coord.recipes.election import Election
    from coord.recipes.lock import Lock
    from coord.recipes.queue import Queue
    from coord.recipes.registry import Registration, ServiceView
    from coord.recipes.rwlock import RWLock
    from coord.recipes.semaphore import Semaphore
    from coord.recipes.stm import STMTransaction

_T = TypeVar("_T")
_F = TypeVar("_F", bound=Callable[..., Any])

__all__ = ["ENDPOINTS_ENV", "AsyncClient", "endpoints_from_env"]

ENDPOINTS_ENV = "COORD_ENDPOINTS"


def endpoints_from_env() -> list[str]:
    """The endpoints named by ``COORD_ENDPOINTS`` (comma-separated host:port), default ``127.0.0.1:2379``."""
    raw = os.environ.get(ENDPOINTS_ENV, "")
    return [e.strip() for e in raw.split(",") if e.strip()] or [DEFAULT_ENDPOINT]


class AsyncClient(KVMixin, LeaseMixin, ClusterMixin, MaintenanceMixin):
    """An asyncio client for coord-server or etcd v3.

    Example::

        async with coord.AsyncClient(["127.0.0.1:2379", "127.0.0.1:22379"]) as client:
            await client.put("greeting", "hello")
            print((await client.get("greeting")).value)

    Parameters:
        endpoints: ``host:port`` strings (or one comma-separated string); default from ``COORD_ENDPOINTS``.
            Calls fail over between them in order.
        timeout: the default deadline, in seconds, of every call including its retries; each call accepts
            ``timeout=`` to override it.
        user, password: authenticate and send the token with every call; refreshed when the server rejects it.
        ca_cert, cert, key: PEM files for TLS (``ca_cert`` to verify the server, ``cert`` + ``key`` for a client
            certificate). Endpoints given as ``https://...`` also turn TLS on (with the system roots).
        keepalive_time, keepalive_timeout: gRPC HTTP/2 keepalive pings, to detect dead connections while idle
            (etcd refuses pings more often than every 5 s by default).

    Channels open lazily in the event loop of the first call; use one client from one event loop.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str] | None = None,
        *,
        timeout: float = 10.0,
        user: str | None = None,
        password: str | None = None,
        ca_cert: str | Path | None = None,
        cert: str | Path | None = None,
        key: str | Path | None = None,
        keepalive_time: float = 10.0,
        keepalive_timeout: float = 5.0,
    ) -> None:
        if endpoints is None:
            addresses = endpoints_from_env()
        elif isinstance(endpoints, str):
            addresses = [e.strip() for e in endpoints.split(",")]
        else:
            addresses = list(endpoints)
        use_tls = any(x is not None for x in (ca_cert, cert, key)) or any(a.startswith("https://") for a in addresses)
        self._transport = Transport(
            addresses,
            timeout=timeout,
            tls=TLSConfig(ca_cert, cert, key) if use_tls else None,
            keepalive_time=keepalive_time,
            keepalive_timeout=keepalive_timeout,
            user=user,
            password=password,
        )
        self._session: Session | None = None
        self._session_lock: asyncio.Lock | None = None
        self._watchers: weakref.WeakSet[Watcher] = weakref.WeakSet()
        self._keep_alives: weakref.WeakSet[KeepAlive] = weakref.WeakSet()
        self._own_sessions: weakref.WeakSet[Session] = weakref.WeakSet()

    @property
    def endpoints(self) -> list[str]:
        """Every endpoint, in failover order."""
        return list(self._transport.addresses)

    @property
    def endpoint(self) -> str:
        """The endpoint calls go to right now."""
        return self._transport.current_address

    async def watch(
        self,
        key: KeyLike,
        range_end: KeyLike | None = None,
        *,
        prefix: bool = False,
        from_key: bool = False,
        start_revision: int = 0,
        prev_kv: bool = False,
        no_put: bool = False,
        no_delete: bool = False,
        progress_notify: bool = False,
        timeout: float | None = None,
    ) -> Watcher:
        """Watch a key or range; returns once the watch is established (see :class:`Watcher` for guarantees).

        ``start_revision`` 0 means "changes after now". Raises CompactedError when ``start_revision`` - 1 is already
        compacted, DeadlineExceededError when no member confirmed the watch within ``timeout``.
        """
        watcher = Watcher(
            self._transport, key, range_end, prefix=prefix, from_key=from_key, start_revision=start_revision,
            prev_kv=prev_kv, no_put=no_put, no_delete=no_delete, progress_notify=progress_notify,
        )  # fmt: skip
        await watcher._start(self._transport.timeout if timeout is None else timeout)
        self._watchers.add(watcher)
        return watcher

    async def add_watch_callback(
        self,
        key: KeyLike,
        callback: WatchCallback,
        range_end: KeyLike | None = None,
        *,
        on_error: Callable[[BaseException], Any] | None = None,
        prefix: bool = False,
        from_key: bool = False,
        start_revision: int = 0,
        prev_kv: bool = False,
        no_put: bool = False,
        no_delete: bool = False,
        progress_notify: bool = False,
        timeout: float | None = None,
    ) -> Watcher:
        """Like :meth:`watch`, but each event is passed to ``callback`` (in order, one at a time) by a background
        task; ``await watcher.cancel()`` stops it. A failure of the watch or of the callback goes to ``on_error``."""
        watcher = await self.watch(
            key, range_end, prefix=prefix, from_key=from_key, start_revision=start_revision, prev_kv=prev_kv,
            no_put=no_put, no_delete=no_delete, progress_notify=progress_notify, timeout=timeout,
        )  # fmt: skip
        watcher.callback_task = asyncio.get_running_loop().create_task(
            run_callback(watcher, callback, on_error), name="coord-watch-callback"
        )
        return watcher

    def keep_alive(self, lease_id: int, *, interval: float | None = None) -> KeepAlive:
        keep_alive = super().keep_alive(lease_id, interval=interval)
        self._keep_alives.add(keep_alive)
        return keep_alive

    keep_alive.__doc__ = LeaseMixin.keep_alive.__doc__

    async def session(self, ttl: int = 60) -> Session:
        """The client's session (one lease, kept alive in the background), created on first use with ``ttl``.

        Raises the errors of lease grant when the first lease cannot be granted.
        """
        if self._session_lock is None:
            self._session_lock = asyncio.Lock()
        async with self._session_lock:
            if self._session is None or self._session.state is SessionState.CLOSED:
                session = Session(self, ttl)
                await session._start()
                self._session = session
            return self._session

    async def new_session(self, ttl: int = 60, *, renew: bool = True) -> Session:
        """A session of its own, apart from the client's shared :meth:`session`: its own lease and keep-alive loop.

        With ``renew=False`` the session ends at LOST (no new lease is granted): right for something that must end
        with its lease, such as a lock held on a dedicated lease. Close it with ``await session.close()`` (revoking
        the lease); :meth:`close` closes it too. Raises the errors of lease grant.
        """
        session = Session(self, ttl, renew=renew)
        await session._start()
        self._own_sessions.add(session)
        return session

    # --- recipes (coord.recipes): handles on this client ----------------------------------------------------------

    def lock(self, name: str | bytes, *, ttl: int | None = None, timeout: float | None = None) -> Lock:
        """A distributed lock (not yet acquired): ``async with client.lock("jobs", timeout=10) as lock:``.
        See :class:`coord.Lock`."""
        from coord.recipes.lock import Lock

        return Lock(self, name, ttl=ttl, timeout=timeout)

    def rwlock(self, name: str | bytes, *, ttl: int | None = None, timeout: float | None = None) -> RWLock:
        """A read/write lock: ``async with client.rwlock("cfg").read():``. See :class:`coord.RWLock`."""
        from coord.recipes.rwlock import RWLock

        return RWLock(self, name, ttl=ttl, timeout=timeout)

    def semaphore(
        self, name: str | bytes, limit: int, *, ttl: int | None = None, timeout: float | None = None
    ) -> Semaphore:
        """A counting semaphore of ``limit`` slots: ``async with client.semaphore("gpu", 4):``. See
        :class:`coord.Semaphore`."""
        from coord.recipes.semaphore import Semaphore

        return Semaphore(self, name, limit, ttl=ttl, timeout=timeout)

    def election(self, name: str | bytes, *, ttl: int | None = None) -> Election:
        """A leader election: ``async with client.election("scheduler").campaign("me") as leadership:``. See
        :class:`coord.Election`."""
        from coord.recipes.election import Election

        return Election(self, name, ttl=ttl)

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
        """Decorator: run an async function only while this process leads ``name`` (``@client.elected("sched")``
        or bare ``@client.elected``). See :func:`coord.elected`."""
        from coord.recipes._elected import elected

        if callable(name) and not isinstance(name, str | bytes):
            return elected(None, client=self)(name)
        return elected(name, ttl=ttl, value=value, client=self)

    def counter(self, name: str | bytes, *, max_attempts: int = 64) -> Counter:
        """A shared integer counter in one key: ``await client.counter("visits").increment()``. See
        :class:`coord.Counter`."""
        from coord.recipes.counter import Counter

        return Counter(self, name, max_attempts=max_attempts)

    async def stm(self, fn: Callable[[STMTransaction], Awaitable[_T]], *, max_attempts: int = 16) -> _T:
        """Run ``fn(tx)`` as a serializable transaction, retried on conflict; returns its result. See
        :class:`coord.STMTransaction`."""
        from coord.recipes.stm import run_stm

        return await run_stm(self, fn, max_attempts=max_attempts)

    def barrier(self, name: str, *, ephemeral: bool = False, ttl: int | None = None) -> Barrier:
        """A barrier: one process ``await barrier.hold()``, others ``await barrier.wait()`` until it is released.
        See :class:`coord.Barrier`."""
        from coord.recipes.barrier import Barrier

        return Barrier(self, name, ephemeral=ephemeral, ttl=ttl)

    def double_barrier(self, name: str, count: int, *, ttl: int | None = None) -> DoubleBarrier:
        """A double barrier for ``count`` participants: ``await b.enter()`` ... ``await b.leave()``. See
        :class:`coord.DoubleBarrier`."""
        from coord.recipes.barrier import DoubleBarrier

        return DoubleBarrier(self, name, count, ttl=ttl)

    def queue(
        self,
        name: str,
        *,
        visibility_timeout: float = 30,
        max_deliveries: int | None = 5,
        dead_letter: str | None = None,
        recheck_interval: float = 5.0,
    ) -> Queue:
        """A work queue with at-least-once delivery: ``await q.put(item)``, ``item = await q.get(timeout=5)``,
        ``await item.ack()``. See :class:`coord.Queue`."""
        from coord.recipes.queue import Queue

        return Queue(
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
    ) -> Registration:
        """Register an instance of ``service`` for as long as this process lives: ``async with
        client.register("api", "10.0.0.5:8080"):``. See :class:`coord.Registration`."""
        from coord.recipes.registry import Registration

        return Registration(self, service, address, metadata=metadata, ttl=ttl, instance_id=instance_id, status=status)

    def discover(self, service: str, *, strategy: Literal["round_robin", "random"] = "round_robin") -> ServiceView:
        """A live view of ``service``'s instances: ``async with client.discover("api") as view: view.pick()``. See
        :class:`coord.ServiceView`."""
        from coord.recipes.registry import ServiceView

        return ServiceView(self, service, strategy=strategy)

    def config(
        self,
        prefix: str,
        model: type[Any] | None = None,
        *,
        key: str | None = None,
        format: Format = "auto",
        debounce: float = 0.1,
    ) -> Config[Any]:
        """The hot-reloading configuration under ``prefix``, as a dict or a ``model`` instance (dataclass or pydantic):
        ``async with client.config("apps/web/", Settings) as live: live.value``. See :class:`coord.Config`."""
        from coord.recipes.config import Config

        return Config(self, prefix, model, key=key, format=format, debounce=debounce)

    def on_change(
        self,
        prefix: str,
        model: type[Any] | None = None,
        *,
        key: str | None = None,
        format: Format = "auto",
        debounce: float = 0.1,
    ) -> ChangeHook:
        """Decorator: call the function with the new configuration after every change under ``prefix``. See
        :func:`coord.on_change`."""
        from coord.recipes.config import ChangeHook

        return ChangeHook(self, prefix, model, key=key, format=format, debounce=debounce)

    async def close(self) -> None:
        """Cancel every watcher and keep-alive loop, close every session (revoking their leases) and every channel.
        Idempotent."""
        for watcher in list(self._watchers):
            await watcher.cancel()
        for keep_alive in list(self._keep_alives):
            await keep_alive.close()
        for session in [self._session, *self._own_sessions]:
            if session is not None:
                await session.close()
        await self._transport.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
