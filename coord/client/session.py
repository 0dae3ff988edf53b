"""Session: one lease per client, kept alive in the background, with an explicit state machine.

States and transitions (each transition fires every listener once, in order, and opens a span
``coord.client.session_transition``)::

    CONNECTED --keep-alive fails--> SUSPENDED --keep-alive succeeds--> CONNECTED
    CONNECTED/SUSPENDED --local deadline passed, or server says the lease is gone--> LOST
    LOST --a new lease was granted--> CONNECTED (new lease_id, generation + 1)   (unless renew=False: LOST is final)
    any --close()--> CLOSED

After LOST -> CONNECTED the lost lease is revoked (best effort), in case delayed keep-alives refreshed it after all.

The local deadline is the send time of the last successful keep-alive plus the TTL the server returned: the lease
cannot have expired before it, so SUSPENDED means "possibly still held", and LOST is declared no later than the
server could expire the lease. Everything attached to a lost lease (locks, registrations) must be considered gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from coord.client import _tracing
from coord.errors import CoordError, LeaseNotFoundError, SessionLostError

if TYPE_CHECKING:
    from coord.client.lease import LeaseMixin

__all__ = ["Session", "SessionEvent", "SessionListener", "SessionState"]

log = logging.getLogger(__name__)


class SessionState(enum.Enum):
    CONNECTED = "connected"
    SUSPENDED = "suspended"
    LOST = "lost"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class SessionEvent:
    """A transition: ``lease_id`` is the lease of the new state (the new lease when re-CONNECTED after LOST)."""

    old: SessionState
    new: SessionState
    lease_id: int
    generation: int


SessionListener = Callable[[SessionEvent], Awaitable[None] | None]


class Session:
    """A lease and its keep-alive loop. :meth:`coord.AsyncClient.session` gives the client's shared session;
    :meth:`coord.AsyncClient.new_session` a session of its own.

    ``ttl`` is the requested lease TTL in seconds (the server may raise it to its minimum). Keep-alives are sent every
    third of the granted TTL. ``lease_id`` changes only on LOST -> CONNECTED (``generation`` counts leases). With
    ``renew=False`` no new lease is granted after LOST: the session ends there (for a holding that must end with its
    lease).
    """

    def __init__(self, client: LeaseMixin, ttl: int, *, renew: bool = True) -> None:
        self._client = client
        self.ttl = ttl
        self.renew = renew
        self.lease_id = 0
        self.granted_ttl = 0
        self.generation = 0
        self.state = SessionState.LOST
        self.deadline = 0.0  # event-loop time before which the lease cannot have expired
        self._listeners: list[SessionListener] = []
        self._notifications: asyncio.Queue[SessionEvent] = asyncio.Queue()
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()  # cuts the keep-alive loop's sleep short (set by check())

    async def _start(self) -> None:
        await self._grant()
        self.state = SessionState.CONNECTED
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(), name="coord-session")
        self._dispatcher = loop.create_task(self._dispatch(), name="coord-session-listeners")

    async def _grant(self) -> None:
        loop = asyncio.get_running_loop()
        sent = loop.time()
        grant = await self._client.grant(self.ttl)
        self.lease_id, self.granted_ttl = grant.id, grant.ttl
        self.deadline = sent + grant.ttl
        self.generation += 1

    def add_listener(self, listener: SessionListener) -> Callable[[], None]:
        """Call ``listener(event)`` on every later transition (awaited when it returns an awaitable). Listeners run
        one at a time in transition order, never concurrently. Returns a function that removes the listener."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _transition(self, new: SessionState) -> None:
        old, self.state = self.state, new
        with _tracing.span("session_transition", old=old.value, new=new.value, lease_id=self.lease_id):
            log.info("session lease %x: %s -> %s", self.lease_id, old.value, new.value)
        self._notifications.put_nowait(SessionEvent(old, new, self.lease_id, self.generation))
        self._changed.set()
        self._changed = asyncio.Event()

    async def _dispatch(self) -> None:
        while True:
            event = await self._notifications.get()
            for listener in list(self._listeners):
                try:
                    result = listener(event)
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    log.exception("session listener failed on %s -> %s", event.old.value, event.new.value)
            if event.new is SessionState.CLOSED:
                return

    async def _sleep(self, seconds: float) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), max(seconds, 0))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self.state is SessionState.LOST:
                if not self.renew:
                    return
                lost_lease = self.lease_id
                try:
                    await self._grant()
                except CoordError as exc:
                    log.warning("session: granting a new lease failed: %s", exc)
                    await self._sleep(0.5)
                    continue
                self._transition(SessionState.CONNECTED)
                # Keep-alives held up in the network may still have refreshed the lease we declared lost; revoke it
                # so that nothing attached to it outlives the LOST we announced.
                revoke = loop.create_task(self._revoke_quietly(lost_lease))
                self._background.add(revoke)
                revoke.add_done_callback(self._background.discard)
            now = loop.time()
            if now >= self.deadline:
                self._transition(SessionState.LOST)
                continue
            try:
                result = await self._client.keep_alive_once(
                    self.lease_id, timeout=max(min(self.granted_ttl / 3, self.deadline - now), 0.05)
                )
            except LeaseNotFoundError:
                self._transition(SessionState.LOST)
                continue
            except CoordError as exc:
                if self.state is SessionState.CONNECTED:
                    log.warning("session lease %x: keep-alive failed: %s", self.lease_id, exc)
                    self._transition(SessionState.SUSPENDED)
                await self._sleep(min(0.1, self.deadline - loop.time()))
                continue
            if self.state is SessionState.LOST:
                continue  # check() saw the lease gone meanwhile
            self.deadline = max(self.deadline, now + result.ttl)
            if self.state is SessionState.SUSPENDED:
                self._transition(SessionState.CONNECTED)
            await self._sleep(self.granted_ttl / 3 - (loop.time() - now))

    async def check(self, timeout: float | None = None) -> SessionState:
        """Probe the lease now rather than at the next keep-alive (up to a third of the TTL away), and return the
        state after the probe: LOST at once when the server says the lease is gone (revoked, or expired), CONNECTED
        when it answered. Use it before work that must not start on a lease that is already gone.

        A failure to reach any member changes nothing (the keep-alive loop decides, by the local deadline) and is
        raised: UnavailableError, DeadlineExceededError, ...
        """
        if self.state not in (SessionState.CONNECTED, SessionState.SUSPENDED):
            return self.state
        loop = asyncio.get_running_loop()
        lease_id, sent = self.lease_id, loop.time()
        try:
            result = await self._client.keep_alive_once(lease_id, timeout=timeout)
        except LeaseNotFoundError:
            if self.lease_id == lease_id and self.state in (SessionState.CONNECTED, SessionState.SUSPENDED):
                self._transition(SessionState.LOST)
                self._wake.set()  # the loop grants the next lease (or ends) now
            return self.state
        if self.lease_id == lease_id and self.state in (SessionState.CONNECTED, SessionState.SUSPENDED):
            self.deadline = max(self.deadline, sent + result.ttl)
            if self.state is SessionState.SUSPENDED:
                self._transition(SessionState.CONNECTED)
        return self.state

    async def _revoke_quietly(self, lease_id: int) -> None:
        with contextlib.suppress(CoordError):
            await self._client.revoke(lease_id, timeout=max(self.granted_ttl, 1))

    async def wait_for(self, state: SessionState, timeout: float) -> None:
        """Return once the session is in ``state``; raises TimeoutError after ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            while self.state is not state:
                await self._changed.wait()

    def ensure_alive(self) -> int:
        """The current lease ID; raises SessionLostError unless CONNECTED or SUSPENDED."""
        if self.state in (SessionState.CONNECTED, SessionState.SUSPENDED):
            return self.lease_id
        raise SessionLostError(f"session lease {self.lease_id:x} is {self.state.value}")

    async def close(self, *, revoke: bool = True) -> None:
        """Stop the keep-alive loop and (by default) revoke the lease, deleting its keys. Idempotent."""
        if self.state is SessionState.CLOSED:
            return
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        was_alive = self.state is not SessionState.LOST
        self._transition(SessionState.CLOSED)
        if revoke and was_alive:
            with contextlib.suppress(CoordError):
                await self._client.revoke(self.lease_id, timeout=2.0)
        if self._dispatcher is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._dispatcher, 5.0)
