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


def test_check_notices_a_revoked_lease_at_once_and_the_session_renews(backend: Backend) -> None:
    backend.require("lease")
    with coord.connect(backend.endpoint, timeout=3) as client:
        session = client.session(ttl=60)  # the next keep-alive is 20 s away: only check() can notice in time
        first = session.lease_id
        assert session.check() is SessionState.CONNECTED
        client.revoke(first)
        assert session.check() is SessionState.LOST
        session.wait_for(SessionState.CONNECTED, timeout=10)  # the loop renews at once, not after its sleep
        assert session.lease_id != first and session.generation == 2
        assert client.time_to_live(session.lease_id).ttl > 0


def test_a_new_session_without_renew_ends_at_lost(backend: Backend) -> None:
    backend.require("lease")
    events: list[SessionEvent] = []
    with coord.connect(backend.endpoint, timeout=3) as client:
        shared = client.session(ttl=TTL)
        own = client.new_session(ttl=TTL, renew=False)
        assert own.lease_id != shared.lease_id and own.state is SessionState.CONNECTED
        own.add_listener(events.append)
        client.revoke(own.lease_id)
        assert own.check() is SessionState.LOST
        time.sleep(0.5)  # give a (wrong) renewal the chance to happen
        assert own.state is SessionState.LOST and own.generation == 1
        with pytest.raises(SessionLostError):
            own.ensure_alive()
        assert shared.state is SessionState.CONNECTED  # the client's session is untouched
        renewed = client.new_session(ttl=TTL)
        lease = renewed.lease_id
    # Closing the client closed its own sessions, revoking their leases.
    with coord.connect(backend.endpoint, timeout=3) as admin:
        assert admin.time_to_live(lease).ttl == -1
    deadline = time.monotonic() + 5
    while len(events) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [(e.old, e.new) for e in events] == [
        (SessionState.CONNECTED, SessionState.LOST),
        (SessionState.LOST, SessionState.CLOSED),
    ]
