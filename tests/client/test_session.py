"""Session state machine under a fault: a pausable proxy between client and server stops keep-alives.

Fault: every byte between the client and the server is held (connections stay open), as in a partition.
Guarantee: the session goes CONNECTED -> SUSPENDED as soon as a keep-alive fails, -> LOST no later than the server
can expire the lease (and not long before), then -> CONNECTED with a new lease once the network is back; each
listener fires exactly once per transition.
"""

from __future__ import annotations

import threading
import time

import pytest

import coord
from coord import SessionEvent, SessionState
from coord.errors import SessionLostError
from tests.client._proxy import PausableProxy
from tests.client.conftest import Backend

TTL = 2  # etcd's minimum lease TTL with default election timeout


def test_suspended_then_lost_then_new_session(backend: Backend) -> None:
    backend.require("lease")
    proxy = PausableProxy(backend.endpoint)
    events: list[tuple[float, SessionEvent]] = []
    lock = threading.Lock()

    def listener(event: SessionEvent) -> None:
        with lock:
            events.append((time.monotonic(), event))

    try:
        with coord.connect(proxy.endpoint, timeout=3) as client, coord.connect(backend.endpoint, timeout=3) as direct:
            session = client.session(ttl=TTL)
            assert session.state is SessionState.CONNECTED
            first_lease = session.lease_id
            session.add_listener(listener)
            client.put("owned", "v", lease=first_lease)
            time.sleep(1.0)  # a few keep-alives go through

            paused_at = time.monotonic()
            proxy.pause()
            session.wait_for(SessionState.LOST, timeout=TTL + 3)
            lost_at = time.monotonic()
            # LOST must not be declared while the server still holds the lease for long: at most ~1 s left.
            assert direct.time_to_live(first_lease).ttl <= 1
            proxy.resume()
            session.wait_for(SessionState.CONNECTED, timeout=10)
            assert session.lease_id != first_lease and session.generation == 2
            assert direct.time_to_live(session.lease_id).ttl > 0
            # Nothing attached to the lost lease outlives the LOST (it expired, or the session revoked it).
            deadline = time.monotonic() + 5
            while direct.get("owned").kv is not None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert direct.get("owned").kv is None
            time.sleep(0.5)  # let the listener thread catch up; nothing else may arrive
            with lock:
                seen = [(e.old, e.new) for _, e in events]
                times = {e.new: t for t, e in events}
            assert seen == [
                (SessionState.CONNECTED, SessionState.SUSPENDED),
                (SessionState.SUSPENDED, SessionState.LOST),
                (SessionState.LOST, SessionState.CONNECTED),
            ]
            # Deadlines, with generous slack: suspended within ~2 keep-alive intervals, lost within the TTL.
            assert times[SessionState.SUSPENDED] - paused_at < 2 * TTL / 3 + 1.0
            assert TTL / 3 < lost_at - paused_at < TTL + 1.0
            assert events[-1][1].lease_id == session.lease_id
    finally:
        proxy.resume()
        proxy.close()


def test_suspended_then_recovers_without_losing_the_lease(backend: Backend) -> None:
    backend.require("lease")
    proxy = PausableProxy(backend.endpoint)
    transitions: list[SessionState] = []
    try:
        with coord.connect(proxy.endpoint, timeout=3) as client:
            session = client.session(ttl=5)
            lease = session.lease_id
            session.add_listener(lambda e: transitions.append(e.new))
            proxy.pause()
            session.wait_for(SessionState.SUSPENDED, timeout=5)
            proxy.resume()
            session.wait_for(SessionState.CONNECTED, timeout=5)
            assert session.lease_id == lease and session.generation == 1
            assert client.time_to_live(lease).ttl > 0
            time.sleep(0.3)
            assert transitions == [SessionState.SUSPENDED, SessionState.CONNECTED]
    finally:
        proxy.resume()
        proxy.close()


def test_close_revokes_the_lease(backend: Backend) -> None:
    backend.require("kv", "lease")
    with coord.connect(backend.endpoint, timeout=3) as client:
        session = client.session(ttl=10)
        client.put("mine", "v", lease=session.lease_id)
        assert client.session() is not None and client.session().lease_id == session.lease_id  # one per client
        session.close()
        assert session.state is SessionState.CLOSED
        assert client.get("mine").kv is None
        with pytest.raises(SessionLostError):
            session.ensure_alive()
