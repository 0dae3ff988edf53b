"""Service registry: :class:`Registration` keeps one instance of a service listed while its process lives;
:class:`ServiceView` is a live, watch-backed list of a service's instances with load-balancing ``pick``.

Keys: ``coord/services/<service>/<instance id>``, attached to the registering client's session lease, holding JSON
``{"id", "service", "address", "metadata", "status", "registered_at"}``. ``status`` is ``"up"`` or ``"draining"``
(still listed, never picked). :class:`SyncRegistration` and :class:`SyncServiceView` are the blocking forms;
:func:`register` and :func:`discover` pick the form matching the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import Any, Literal, overload

from coord.client import (
    AsyncClient,
    Client,
    Delete,
    LeaseId,
    Put,
    Session,
    SessionEvent,
    SessionState,
    Value,
    WatchEvent,
)
from coord.client import WatchEventType as _Type
from coord.errors import ClientClosedError, CoordError, LeaseNotFoundError, SessionLostError
from coord.recipes._support import (
    ROOT,
    CallbackQueue,
    DiscoveryTimeout,
    NoInstanceAvailable,
    PrefixWatch,
    async_client_of,
    in_thread,
    run_sync,
    validate_name,
)

__all__ = [
    "DRAINING",
    "UP",
    "DiscoveryTimeout",
    "Instance",
    "NoInstanceAvailable",
    "Registration",
    "ServiceChange",
    "ServiceView",
    "SyncRegistration",
    "SyncServiceView",
    "discover",
    "register",
]

log = logging.getLogger(__name__)

UP = "up"
DRAINING = "draining"
_STATUSES = (UP, DRAINING)


def service_prefix(service: str) -> str:
    return f"{ROOT}services/{validate_name(service, 'service name')}/"


def _check_status(status: str) -> str:
    if status not in _STATUSES:
        raise ValueError(f"status must be one of {_STATUSES}, not {status!r}")
    return status


@dataclass(frozen=True)
class Instance:
    """One registered instance of a service, as last seen by a :class:`ServiceView`.

    ``status`` is ``"up"`` or ``"draining"``; ``lease`` the registering session's lease; ``revision`` the revision of
    the registration's last change.
    """

    service: str
    id: str
    address: str
    metadata: Mapping[str, Any] = field(default_factory=dict)
    status: str = UP
    registered_at: float = 0.0
    lease: int = 0
    revision: int = 0

    @property
    def up(self) -> bool:
        return self.status == UP

    @classmethod
    def parse(cls, service: str, instance_id: str, raw: bytes, lease: int, revision: int) -> Instance | None:
        try:
            data = json.loads(raw)
            metadata = data.get("metadata") or {}
            if not isinstance(data, dict) or not isinstance(metadata, dict):
                return None
            return cls(
                service,
                instance_id,
                str(data["address"]),
                MappingProxyType(metadata),
                str(data.get("status", UP)),
                float(data.get("registered_at", 0.0)),
                lease,
                revision,
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return None


@dataclass(frozen=True)
class ServiceChange:
    """What one batch of changes did to a :class:`ServiceView`: instances that appeared, disappeared or changed
    (address, metadata or status), and the full list afterwards."""

    added: tuple[Instance, ...]
    removed: tuple[Instance, ...]
    updated: tuple[Instance, ...]
    instances: tuple[Instance, ...]


class Registration:
    """Registers one instance of a service for as long as it is open.

    Example::

        async with register(client, "api", "10.0.0.5:8080", metadata={"zone": "a"}, ttl=10) as me:
            ...                                   # listed in discover("api")
            await me.set_status("draining")       # still listed, no longer picked
        # closed: deregistered at once

    Parameters:
        client: an :class:`coord.AsyncClient`.
        service: the service name (no ``/``).
        address: how to reach the instance (any string; typically ``host:port`` or a URL).
        metadata: JSON-serialisable details published with the instance.
        ttl: the session TTL to request when this call creates the client's session. The registration lives on
            the client's session lease: when the process dies, it disappears after that TTL. An existing session
            keeps its TTL (a warning is logged when it differs).
        instance_id: the instance's identity (default ``<hostname>-<pid>-<random>``).
        status: ``"up"`` (default) or ``"draining"``.

    Guarantees: while the registration is open the key is kept in place: if the session is lost (its lease expired or
    was revoked) it is re-registered on the new session lease as soon as the session reconnects, and if the key is
    deleted by someone else it is written again. ``registered`` tells whether the key is believed present now.
    Raises SessionLostError from ``start``/``set_status`` when the session is lost at that moment.
    """

    def __init__(
        self,
        client: AsyncClient,
        service: str,
        address: str,
        *,
        metadata: Mapping[str, Any] | None = None,
        ttl: int | None = None,
        instance_id: str | None = None,
        status: str = UP,
    ) -> None:
        self._client = async_client_of(client)
        self.service = service
        self.instance_id = validate_name(
            instance_id if instance_id is not None else f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}",
            "instance_id",
        )
        self.key = service_prefix(service) + self.instance_id
        if not isinstance(address, str) or not address:
            raise ValueError(f"address must be a non-empty str, not {address!r}")
        self.address = address
        self.metadata: dict[str, Any] = dict(metadata or {})
        json.dumps(self.metadata)  # TypeError now rather than at registration
        self.status = _check_status(status)
        self.ttl = ttl
        self.registered_at = time.time()
        self.registered = False
        self.lease_id = 0
        self._session: Session | None = None
        self._remove_listener: Callable[[], None] | None = None
        self._watch: PrefixWatch | None = None
        self._dirty = asyncio.Event()
        self._ensure_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False

    def _value(self) -> bytes:
        fields = {
            "id": self.instance_id,
            "service": self.service,
            "address": self.address,
            "metadata": self.metadata,
            "status": self.status,
            "registered_at": self.registered_at,
        }
        return json.dumps(fields, separators=(",", ":")).encode()

    async def _current_session(self) -> Session:
        session = await (self._client.session() if self.ttl is None else self._client.session(self.ttl))
        if session is not self._session:
            if self._remove_listener is not None:
                self._remove_listener()
            if self.ttl is not None and session.ttl != self.ttl:
                log.warning(
                    "registration %s: the client's session has TTL %ds, not the requested %ds",
                    self.key, session.ttl, self.ttl,
                )  # fmt: skip
            self._session = session
            self._remove_listener = session.add_listener(self._on_session)
        return session

    async def _ensure(self, *, repair: bool = True) -> None:
        """Write the registration unless it is already in place with this value and the current lease. ``repair``:
        this call restores a lost registration (logged when it had to write)."""
        async with self._ensure_lock:  # one writer at a time: the keeper task and set_status may race
            await self._write(repair)

    async def _write(self, repair: bool) -> None:
        session = await self._current_session()
        lease = session.ensure_alive()
        value = self._value()
        result = await self._client.txn(
            [Value(self.key) == value, LeaseId(self.key) == lease], [], [Put(self.key, value, lease=lease)]
        )
        if not result.succeeded and self._started and repair:
            if lease != self.lease_id:
                log.info("registration %s: re-registered on the new session lease %x", self.key, lease)
            else:
                log.info("registration %s: written again (it had been deleted or changed)", self.key)
        self.lease_id, self.registered = lease, True

    async def start(self) -> Registration:
        """Register now (idempotent). Raises SessionLostError, and the client's errors."""
        if self._closed:
            raise RuntimeError(f"registration {self.key} is closed")
        if self._started:
            return self
        await self._ensure()
        revision = (await self._client.get(self.key, keys_only=True)).revision
        self._watch = PrefixWatch(
            self._client, self.key, self._on_event, self._resync, single_key=True, name="registration-watch"
        )
        await self._watch.start(revision + 1)
        self._task = asyncio.get_running_loop().create_task(self._keep_registered(), name="coord-registration")
        self._started = True
        return self

    def _on_session(self, event: SessionEvent) -> None:
        if event.new is SessionState.LOST:
            self.registered = False
            log.warning(
                "registration %s: session lease %x lost; re-registering when it reconnects", self.key, event.lease_id
            )
        if event.new is SessionState.CONNECTED:
            self._dirty.set()

    def _on_event(self, event: WatchEvent) -> None:
        if event.type is _Type.DELETE and not self._closed:
            self.registered = False
            self._dirty.set()

    async def _resync(self) -> int:
        self._dirty.set()
        return (await self._client.get(self.key, keys_only=True)).revision

    async def _keep_registered(self) -> None:
        while not self._closed:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                await self._ensure()
            except (SessionLostError, LeaseNotFoundError):
                continue  # the session is (about to be) LOST; its reconnection sets _dirty again
            except ClientClosedError:
                return
            except CoordError as exc:
                log.warning("registration %s: could not re-register (%s); retrying", self.key, exc)
                await asyncio.sleep(0.5)
                self._dirty.set()

    async def set_status(self, status: str) -> None:
        """Publish ``"up"`` or ``"draining"`` (a draining instance is listed but never picked)."""
        self.status = _check_status(status)
        if self._started:
            await self._ensure(repair=False)

    async def set_metadata(self, metadata: Mapping[str, Any]) -> None:
        """Replace the published metadata (JSON-serialisable)."""
        json.dumps(dict(metadata))
        self.metadata = dict(metadata)
        if self._started:
            await self._ensure(repair=False)

    async def close(self) -> None:
        """Deregister (delete the key if it is still ours) and stop keeping it. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._watch is not None:
            await self._watch.close()
        if self._remove_listener is not None:
            self._remove_listener()
        if self.lease_id:
            with contextlib.suppress(CoordError):
                await self._client.txn([LeaseId(self.key) == self.lease_id], [Delete(self.key)])
        self.registered = False

    def __await__(self) -> Generator[Any, None, Registration]:
        return self.start().__await__()

    async def __aenter__(self) -> Registration:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


class ServiceView:
    """A live view of a service's registered instances, kept current by a watch.

    Example::

        async with discover(client, "api") as api:
            await api.wait_ready(timeout=30)              # at least one instance is up
            target = api.pick()                           # round-robin over the instances that are up
            print(target.address, target.metadata)

            @api.on_change
            def changed(change: ServiceChange) -> None:
                print("now", [i.address for i in change.instances])

    Parameters:
        client: an :class:`coord.AsyncClient`.
        service: the service name.
        strategy: how :meth:`pick` chooses: ``"round_robin"`` (default) or ``"random"``.

    Guarantees: after ``start`` the view reflects the registry at some revision and follows every later change in
    revision order (the watch resumes after failures and re-syncs after compaction); a registration that expires or
    is deleted disappears from the view as soon as the watch delivers it. Reading (``instances``, ``pick``) never
    calls the server and is safe from any thread.
    """

    def __init__(
        self, client: AsyncClient, service: str, *, strategy: Literal["round_robin", "random"] = "round_robin"
    ) -> None:
        if strategy not in ("round_robin", "random"):
            raise ValueError(f"strategy must be 'round_robin' or 'random', not {strategy!r}")
        self._client = async_client_of(client)
        self.service = service
        self.prefix = service_prefix(service)
        self.strategy = strategy
        self.revision = 0
        self._instances: dict[str, Instance] = {}  # replaced, never mutated: readers in other threads see a snapshot
        self._before: dict[str, Instance] | None = None  # the snapshot at the start of the current batch
        self._counter = itertools.count()
        self._changed = asyncio.Event()
        self._callbacks = CallbackQueue("service-view")
        self._watch: PrefixWatch | None = None
        self._started = False
        self._closed = False

    async def _read(self) -> tuple[dict[str, Instance], int]:
        got = await self._client.range(self.prefix, prefix=True)
        instances = {}
        for kv in got.kvs:
            instance_id = kv.key.decode()[len(self.prefix) :]
            instance = Instance.parse(self.service, instance_id, kv.value, kv.lease, kv.mod_revision)
            if instance is None:
                log.warning("service %r: ignoring unreadable registration %r", self.service, kv.key)
            else:
                instances[instance_id] = instance
        return instances, got.revision

    async def start(self) -> ServiceView:
        """Read the registry and start following it (idempotent)."""
        if self._closed:
            raise RuntimeError(f"the view of {self.service!r} is closed")
        if not self._started:
            self._instances, self.revision = await self._read()
            self._watch = PrefixWatch(
                self._client, self.prefix, self._on_event, self._resync, self._on_batch, name="service-watch"
            )
            await self._watch.start(self.revision + 1)
            self._started = True
        return self

    def _on_event(self, event: WatchEvent) -> None:
        if self._before is None:
            self._before = self._instances
        instances = dict(self._instances)
        instance_id = event.key.decode()[len(self.prefix) :]
        if event.type is _Type.DELETE:
            instances.pop(instance_id, None)
        else:
            instance = Instance.parse(self.service, instance_id, event.value, event.kv.lease, event.revision)
            if instance is None:
                log.warning("service %r: ignoring unreadable registration %r", self.service, event.key)
                instances.pop(instance_id, None)
            else:
                instances[instance_id] = instance
        self._instances = instances
        self.revision = max(self.revision, event.revision)

    async def _resync(self) -> int:
        if self._before is None:
            self._before = self._instances
        self._instances, self.revision = await self._read()
        return self.revision

    def _on_batch(self) -> None:
        before, self._before = self._before, None
        if before is None:
            return
        after = self._instances
        added = tuple(after[k] for k in sorted(after.keys() - before.keys()))
        removed = tuple(before[k] for k in sorted(before.keys() - after.keys()))
        updated = tuple(
            after[k]
            for k in sorted(after.keys() & before.keys())
            if (after[k].address, dict(after[k].metadata), after[k].status)
            != (before[k].address, dict(before[k].metadata), before[k].status)
        )
        self._changed.set()
        self._changed = asyncio.Event()
        if added or removed or updated:
            self._callbacks.notify(ServiceChange(added, removed, updated, tuple(self.instances())))

    def instances(self, *, include_draining: bool = True) -> list[Instance]:
        """The instances now, ordered by id (only those that are up with ``include_draining=False``)."""
        snapshot = self._instances
        return [snapshot[k] for k in sorted(snapshot) if include_draining or snapshot[k].up]

    def pick(self) -> Instance:
        """One instance that is up, by the view's strategy. Raises NoInstanceAvailable when there is none."""
        candidates = self.instances(include_draining=False)
        if not candidates:
            raise NoInstanceAvailable(f"no instance of {self.service!r} is up")
        if self.strategy == "random":
            return random.choice(candidates)
        return candidates[next(self._counter) % len(candidates)]

    async def wait_ready(self, timeout: float | None = None, *, count: int = 1) -> list[Instance]:
        """Wait until at least ``count`` instances are up; returns them. Raises DiscoveryTimeout."""
        await self.start()
        try:
            async with asyncio.timeout(timeout):
                while len(up := self.instances(include_draining=False)) < count:
                    await self._changed.wait()
        except TimeoutError:
            raise DiscoveryTimeout(f"fewer than {count} instances of {self.service!r} up after {timeout}s") from None
        return up

    def on_change(self, callback: Callable[[ServiceChange], Any]) -> Callable[[ServiceChange], Any]:
        """Call ``callback(change)`` after every batch of changes (one at a time, in order; awaited when it returns
        an awaitable). Usable as a decorator; returns ``callback``. Call :meth:`remove_callback` to stop."""
        self._callbacks.add(callback)
        return callback

    def remove_callback(self, callback: Callable[[ServiceChange], Any]) -> None:
        """Stop calling ``callback``."""
        self._callbacks.discard(callback)

    async def close(self) -> None:
        """Stop following the registry. Idempotent."""
        self._closed = True
        if self._watch is not None:
            await self._watch.close()
        await self._callbacks.close()

    def __await__(self) -> Generator[Any, None, ServiceView]:
        return self.start().__await__()

    async def __aenter__(self) -> ServiceView:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class SyncRegistration:
    """Blocking form of :class:`Registration` over a :class:`coord.Client`; registered when constructed.

    Example::

        with SyncRegistration(client, "api", "10.0.0.5:8080", ttl=10) as me:
            serve_forever()
    """

    def __init__(
        self,
        client: Client,
        service: str,
        address: str,
        *,
        metadata: Mapping[str, Any] | None = None,
        ttl: int | None = None,
        instance_id: str | None = None,
        status: str = UP,
    ) -> None:
        if not isinstance(client, Client):
            raise TypeError("SyncRegistration needs a coord.Client; use Registration (or coord.register)")
        self._client = client
        self.registration = Registration(
            client.async_client, service, address, metadata=metadata, ttl=ttl, instance_id=instance_id, status=status
        )
        run_sync(client, self.registration.start())

    @property
    def instance_id(self) -> str:
        return self.registration.instance_id

    @property
    def key(self) -> str:
        return self.registration.key

    @property
    def status(self) -> str:
        return self.registration.status

    @property
    def registered(self) -> bool:
        return self.registration.registered

    @property
    def lease_id(self) -> int:
        return self.registration.lease_id

    def set_status(self, status: str) -> None:
        """See :meth:`Registration.set_status`."""
        run_sync(self._client, self.registration.set_status(status))

    def set_metadata(self, metadata: Mapping[str, Any]) -> None:
        """See :meth:`Registration.set_metadata`."""
        run_sync(self._client, self.registration.set_metadata(metadata))

    def close(self) -> None:
        """See :meth:`Registration.close`."""
        run_sync(self._client, self.registration.close())

    def __enter__(self) -> SyncRegistration:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class SyncServiceView:
    """Blocking form of :class:`ServiceView` over a :class:`coord.Client`; following the registry when constructed.
    Callbacks run in a worker thread (one at a time, in order), so they may call the client.

    Example::

        api = SyncServiceView(client, "api")
        api.wait_ready(timeout=30)
        address = api.pick().address
    """

    def __init__(
        self, client: Client, service: str, *, strategy: Literal["round_robin", "random"] = "round_robin"
    ) -> None:
        if not isinstance(client, Client):
            raise TypeError("SyncServiceView needs a coord.Client; use ServiceView (or coord.discover)")
        self._client = client
        self.view = ServiceView(client.async_client, service, strategy=strategy)
        self._wrapped: dict[Callable[[ServiceChange], Any], Callable[..., Any]] = {}
        run_sync(client, self.view.start())

    @property
    def service(self) -> str:
        return self.view.service

    @property
    def revision(self) -> int:
        return self.view.revision

    def instances(self, *, include_draining: bool = True) -> list[Instance]:
        """See :meth:`ServiceView.instances`."""
        return self.view.instances(include_draining=include_draining)

    def pick(self) -> Instance:
        """See :meth:`ServiceView.pick`."""
        return self.view.pick()

    def wait_ready(self, timeout: float | None = None, *, count: int = 1) -> list[Instance]:
        """See :meth:`ServiceView.wait_ready`."""
        return run_sync(self._client, self.view.wait_ready(timeout, count=count))

    def on_change(self, callback: Callable[[ServiceChange], Any]) -> Callable[[ServiceChange], Any]:
        """See :meth:`ServiceView.on_change`; ``callback`` runs in a worker thread."""
        wrapped = in_thread(callback)
        self._wrapped[callback] = wrapped
        self.view.on_change(wrapped)
        return callback

    def remove_callback(self, callback: Callable[[ServiceChange], Any]) -> None:
        wrapped = self._wrapped.pop(callback, None)
        if wrapped is not None:
            self.view.remove_callback(wrapped)

    def close(self) -> None:
        """See :meth:`ServiceView.close`."""
        run_sync(self._client, self.view.close())

    def __enter__(self) -> SyncServiceView:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@overload
def register(
    client: AsyncClient,
    service: str,
    address: str,
    *,
    metadata: Mapping[str, Any] | None = ...,
    ttl: int | None = ...,
    instance_id: str | None = ...,
    status: str = ...,
) -> Registration: ...
@overload
def register(
    client: Client,
    service: str,
    address: str,
    *,
    metadata: Mapping[str, Any] | None = ...,
    ttl: int | None = ...,
    instance_id: str | None = ...,
    status: str = ...,
) -> SyncRegistration: ...
def register(
    client: AsyncClient | Client,
    service: str,
    address: str,
    *,
    metadata: Mapping[str, Any] | None = None,
    ttl: int | None = None,
    instance_id: str | None = None,
    status: str = UP,
) -> Registration | SyncRegistration:
    """Register an instance of ``service``. With a Client: a :class:`SyncRegistration`, registered on return. With an
    AsyncClient: a :class:`Registration` to ``await`` or use with ``async with``."""
    if isinstance(client, AsyncClient):
        return Registration(
            client, service, address, metadata=metadata, ttl=ttl, instance_id=instance_id, status=status
        )
    return SyncRegistration(
        client, service, address, metadata=metadata, ttl=ttl, instance_id=instance_id, status=status
    )


@overload
def discover(client: AsyncClient, service: str, *, strategy: Literal["round_robin", "random"] = ...) -> ServiceView: ...
@overload
def discover(client: Client, service: str, *, strategy: Literal["round_robin", "random"] = ...) -> SyncServiceView: ...
def discover(
    client: AsyncClient | Client, service: str, *, strategy: Literal["round_robin", "random"] = "round_robin"
) -> ServiceView | SyncServiceView:
    """A live view of ``service``. With a Client: a :class:`SyncServiceView`, following the registry on return. With
    an AsyncClient: a :class:`ServiceView` to ``await`` or use with ``async with``."""
    if isinstance(client, AsyncClient):
        return ServiceView(client, service, strategy=strategy)
    return SyncServiceView(client, service, strategy=strategy)
