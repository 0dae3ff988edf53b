"""The lease one holding (a lock, a semaphore slot, a leadership) lives on, and the signal that it is gone.

Two kinds, chosen by the recipe's ``ttl``:

* ``ttl=None``: the client's :class:`~coord.client.session.Session` lease, shared by every recipe of the client
  (created on first use with the session's default TTL). The holding is lost when the session goes LOST or CLOSED.
* ``ttl=N``: a lease of its own, granted for this holding and revoked when it ends, kept alive by a loop with the
  session's rule: it is declared lost once no keep-alive was answered within the TTL the server last granted
  (measured from when that keep-alive was sent, so never later than the server could expire it), or at once when
  the server says the lease is gone.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
from collections.abc import Callable

from coord.client import AsyncClient, SessionEvent, SessionState
from coord.errors import ClientClosedError, CoordError, LeaseNotFoundError
from coord.recipes._common import spawn

__all__ = ["LeaseScope", "open_scope"]

log = logging.getLogger("coord.recipes")

_ALIVE = (SessionState.CONNECTED, SessionState.SUSPENDED)


class LeaseScope(abc.ABC):
    """A lease a holding lives on. ``lost`` is set (once, with ``reason``) when the lease is gone or may be."""

    def __init__(self, client: AsyncClient, lease_id: int) -> None:
        self.client = client
        self.lease_id = lease_id
        self.lost = asyncio.Event()
        self.reason = ""
        self._subscribers: list[Callable[[str], None]] = []

    def subscribe(self, on_lost: Callable[[str], None]) -> None:
        """Call ``on_lost(reason)`` when the lease is lost (at once when it already is)."""
        self._subscribers.append(on_lost)
        if self.lost.is_set():
            on_lost(self.reason)

    def _lose(self, reason: str) -> None:
        if self.lost.is_set():
            return
        self.reason = reason
        self.lost.set()
        for on_lost in list(self._subscribers):
            on_lost(reason)

    @abc.abstractmethod
    async def close(self, key: bytes | None) -> None:
        """End the scope, deleting ``key`` (the holding's key, if any). Never raises CoordError."""


class _SessionScope(LeaseScope):
    def __init__(self, client: AsyncClient, lease_id: int, session_states: Callable[[], tuple[SessionState, int]]):
        super().__init__(client, lease_id)
        self._session_states = session_states
        self._remove: Callable[[], None] = lambda: None

    def on_event(self, event: SessionEvent) -> None:
        if event.new not in _ALIVE or event.lease_id != self.lease_id:
            self._lose(f"the session lease {self.lease_id:x} is {event.new.value}")

    async def close(self, key: bytes | None) -> None:
        self._remove()
        self._subscribers.clear()
        if key is None or self.lost.is_set():
            return  # a lost lease took its keys with it
        try:
            await self.client.delete(key)
        except CoordError as exc:
            # The key would otherwise live as long as the session: keep trying in the background.
            log.warning("deleting %r failed (%s); retrying in the background", key, exc)
            spawn(self._delete_until_gone(key), name="coord-recipe-delete")

    async def _delete_until_gone(self, key: bytes) -> None:
        delay = 0.2
        while True:
            state, lease_id = self._session_states()
            if state not in _ALIVE or lease_id != self.lease_id:
                return  # the lease, and the key with it, is gone
            await asyncio.sleep(delay)
            try:
                await self.client.delete(key)
                return
            except CoordError as exc:
                log.info("deleting %r failed again (%s)", key, exc)
                delay = min(delay * 2, 5.0)


class _OwnLeaseScope(LeaseScope):
    def __init__(self, client: AsyncClient, lease_id: int, ttl: int, deadline: float) -> None:
        super().__init__(client, lease_id)
        self._ttl = ttl
        self._deadline = deadline  # loop time before which the lease cannot have expired
        self._task: asyncio.Task[None] | None = None
        self._lease_gone = False

    def start(self) -> None:
        self._task = spawn(self._keep_alive(), name=f"coord-recipe-lease-{self.lease_id:x}")

    async def _keep_alive(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self._ttl / 3
        await asyncio.sleep(interval)
        while True:
            now = loop.time()
            if now >= self._deadline:
                self._lease_gone = True
                self._lose(f"lease {self.lease_id:x}: no keep-alive was answered within its {self._ttl}s TTL")
                return
            try:
                result = await self.client.keep_alive_once(
                    self.lease_id, timeout=max(min(interval, self._deadline - now), 0.05)
                )
            except LeaseNotFoundError:
                self._lease_gone = True
                self._lose(f"lease {self.lease_id:x} was revoked or has expired")
                return
            except ClientClosedError:
                self._lose("the client was closed")
                return
            except CoordError as exc:
                log.info("keep-alive of lease %x failed: %s", self.lease_id, exc)
                await asyncio.sleep(max(min(0.1, self._deadline - loop.time()), 0))
                continue
            self._deadline = now + result.ttl
            await asyncio.sleep(max(interval - (loop.time() - now), 0))

    async def close(self, key: bytes | None) -> None:
        self._subscribers.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._lease_gone:
            return
        # Revoking deletes the key with the lease. If it fails, the lease expires on its own within its TTL.
        try:
            await self.client.revoke(self.lease_id, timeout=max(self._ttl, 2))
        except LeaseNotFoundError:
            pass
        except CoordError as exc:
            log.warning("revoking lease %x failed (%s); it expires within %ss", self.lease_id, exc, self._ttl)


async def open_scope(client: AsyncClient, ttl: int | None) -> LeaseScope:
    """A scope on the client's session (``ttl`` None; waits while the session is re-granting a lost lease) or on a
    new lease of ``ttl`` seconds. Raises the errors of lease grant; bound it with a timeout."""
    loop = asyncio.get_running_loop()
    if ttl is not None:
        sent = loop.time()
        grant = await client.grant(ttl)
        own = _OwnLeaseScope(client, grant.id, grant.ttl, sent + grant.ttl)
        own.start()
        return own
    session = await client.session()
    while session.state not in _ALIVE:
        if session.state is SessionState.CLOSED:
            session = await client.session()  # closed sessions are replaced by a new one
            continue
        await session.wait_for(SessionState.CONNECTED, timeout=3600)
    scope = _SessionScope(client, session.lease_id, lambda: (session.state, session.lease_id))
    scope._remove = session.add_listener(scope.on_event)
    if session.state not in _ALIVE or session.lease_id != scope.lease_id:
        scope._lose(f"the session lease {scope.lease_id:x} is {session.state.value}")
    return scope
