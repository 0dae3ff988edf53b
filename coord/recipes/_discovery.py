"""Service discovery (private; re-exported by :mod:`coord.recipes.registry`): the registration record
(:class:`Instance`), and :class:`ServiceView`, a live, watch-backed list of a service's instances with
load-balancing ``pick``; :class:`SyncServiceView` is its blocking form and :func:`discover` picks the form matching
the client.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import random
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, overload

from coord.client import AsyncClient, Client, WatchEvent
from coord.client import WatchEventType as _Type
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
    "Instance",
    "ServiceChange",
    "ServiceView",
    "SyncServiceView",
    "check_status",
    "discover",
    "service_prefix",
]

log = logging.getLogger("coord.recipes.registry")

UP = "up"
DRAINING = "draining"
_STATUSES = (UP, DRAINING)


def service_prefix(service: str) -> str:
    return f"{ROOT}services/{validate_name(service, 'service name')}/"


def check_status(status: str) -> str:
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
