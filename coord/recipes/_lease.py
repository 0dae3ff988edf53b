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
import logging
from collections.abc import Callable

from coord.client import AsyncClient, Session, SessionEvent, SessionState
from coord.errors import CoordError
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
    """A holding on a session of its own that ends at LOST (``renew=False``): the session's keep-alive loop and
    its rule for declaring the lease lost, with no second copy here."""

    def __init__(self, client: AsyncClient, session: Session) -> None:
        super().__init__(client, session.lease_id)
        self._session = session
        self._remove = session.add_listener(self._on_event)
        if session.state not in _ALIVE:
            self._lose(f"lease {self.lease_id:x} is {session.state.value}")

    def _on_event(self, event: SessionEvent) -> None:
        if event.new is SessionState.LOST:
            self._lose(f"lease {self.lease_id:x} was revoked, has expired, or no keep-alive was answered in its TTL")
        elif event.new is SessionState.CLOSED:
            self._lose("the lease's session was closed (the client was closed)")

    async def close(self, key: bytes | None) -> None:
        self._remove()
        self._subscribers.clear()
        # Revoking deletes the key with the lease. If that fails, the lease expires on its own within its TTL.
        await self._session.close(revoke=True)


async def open_scope(client: AsyncClient, ttl: int | None) -> LeaseScope:
    """A scope on the client's session (``ttl`` None; waits while the session is re-granting a lost lease) or on a
    new lease of ``ttl`` seconds. Raises the errors of lease grant; bound it with a timeout."""
    if ttl is not None:
        return _OwnLeaseScope(client, await client.new_session(ttl, renew=False))
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
