"""Service registry: :class:`Registration` keeps one instance of a service listed while its process lives;
:class:`ServiceView` (from :mod:`coord.recipes._discovery`, re-exported here) is a live, watch-backed list of a
service's instances with load-balancing ``pick``.

Keys: ``coord/services/<service>/<instance id>``, attached to the registering client's session lease, holding JSON
``{"id", "service", "address", "metadata", "status", "registered_at"}``. ``status`` is ``"up"`` or ``"draining"``
(still listed, never picked). :class:`SyncRegistration` and :class:`SyncServiceView` are the blocking forms;
:func:`register` and :func:`discover` pick the form matching the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Generator, Mapping
from types import TracebackType
from typing import Any, overload

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
from coord.recipes._discovery import (
    DRAINING,
    UP,
    Instance,
    ServiceChange,
    ServiceView,
    SyncServiceView,
    check_status,
    discover,
    service_prefix,
)
from coord.recipes._support import (
    DiscoveryTimeout,
    NoInstanceAvailable,
    PrefixWatch,
    async_client_of,
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
        self.status = check_status(status)
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
        self.status = check_status(status)
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
