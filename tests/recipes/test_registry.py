"""Service registration and discovery on etcd and on coord-server.

Guarantees checked: registered instances appear in a live view and closed ones disappear; ``pick`` round-robins over
the instances that are up and never picks a draining one; change callbacks report what changed; a crashed instance
(SIGKILLed process) disappears within its TTL; a registration whose session lease is revoked from elsewhere, or whose
key is deleted, comes back by itself.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import coord
from coord.recipes.registry import (
    DiscoveryTimeout,
    NoInstanceAvailable,
    Registration,
    ServiceChange,
    ServiceView,
    SyncRegistration,
    SyncServiceView,
    discover,
    register,
)
from tests.client.conftest import Backend
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
TTL = 2


def test_register_discover_pick_and_drain(backend: Backend) -> None:
    with (
        coord.connect(backend.endpoint, timeout=5) as a,
        coord.connect(backend.endpoint, timeout=5) as b,
        coord.connect(backend.endpoint, timeout=5) as watcher,
    ):
        changes: list[ServiceChange] = []
        seen = threading.Lock()
        api = discover(watcher, "api")
        assert isinstance(api, SyncServiceView)
        with pytest.raises(NoInstanceAvailable):
            api.pick()

        @api.on_change
        def changed(change: ServiceChange) -> None:
            with seen:
                changes.append(change)

        one = register(a, "api", "10.0.0.1:80", metadata={"zone": "a"}, instance_id="one", ttl=TTL)
        assert isinstance(one, SyncRegistration) and one.registered
        two = SyncRegistration(b, "api", "10.0.0.2:80", instance_id="two", ttl=TTL)
        assert [i.address for i in api.wait_ready(timeout=30, count=2)] == ["10.0.0.1:80", "10.0.0.2:80"]
        assert api.instances()[0].metadata == {"zone": "a"}
        assert {api.pick().id for _ in range(4)} == {"one", "two"}  # round robin visits both

        two.set_status("draining")
        wait_until(lambda: len(api.instances(include_draining=False)) == 1, 30, "the drain to be seen")
        assert [i.status for i in api.instances()] == ["up", "draining"]
        assert {api.pick().id for _ in range(10)} == {"one"}  # a draining instance is never picked

        one.close()
        wait_until(lambda: [i.id for i in api.instances()] == ["two"], 30, "the deregistration to be seen")
        with pytest.raises(NoInstanceAvailable):
            api.pick()  # the only one left is draining
        with pytest.raises(DiscoveryTimeout):
            api.wait_ready(timeout=0.3)
        two.close()
        wait_until(lambda: not api.instances(), 30, "the view to empty")

        def callbacks_done() -> bool:
            with seen:
                return bool(changes) and not changes[-1].instances

        wait_until(callbacks_done, 30, "the last change callback")
        with seen:
            added = [i.id for c in changes for i in c.added]
            removed = [i.id for c in changes for i in c.removed]
            updated = [(i.id, i.status) for c in changes for i in c.updated]
        assert sorted(added) == ["one", "two"] and sorted(removed) == ["one", "two"]
        assert ("two", "draining") in updated
        api.close()


def test_crashed_instance_disappears_within_its_ttl(backend: Backend, tmp_path: Path) -> None:
    """Fault: SIGKILL of the process that registered. Guarantee: its instance leaves every view (after its TTL)."""
    out = tmp_path / "instance.out"
    with open(out, "wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.recipes._queue_workers", "register", backend.endpoint, "crashy", "h:1", "2"],
            cwd=REPO,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        with coord.connect(backend.endpoint, timeout=5) as client, discover(client, "crashy") as view:
            view.wait_ready(timeout=60)
            wait_until(lambda: out.read_text().startswith("registered "), 30, "the instance to report in")
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            wait_until(lambda: not view.instances(), 30, "the crashed instance to disappear")
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def test_registration_comes_back_after_session_loss_and_the_async_view(backend: Backend) -> None:
    async def scenario() -> None:
        async with (
            coord.AsyncClient(backend.endpoint, timeout=5) as client,
            coord.AsyncClient(backend.endpoint, timeout=5) as admin,
        ):
            view = await discover(admin, "svc")
            assert isinstance(view, ServiceView)
            async with register(client, "svc", "h:2", ttl=TTL) as me:
                assert isinstance(me, Registration)
                await view.wait_ready(timeout=30)
                first_lease = me.lease_id
                assert view.instances()[0].lease == first_lease
                # The session lease is revoked from elsewhere (as on expiry): the key goes with it ...
                await admin.revoke(first_lease)

                # ... and comes back on the session's new lease once the session notices.
                def back() -> bool:
                    listed = view.instances()
                    return bool(listed) and listed[0].lease != first_lease and listed[0].lease == me.lease_id

                async with asyncio.timeout(30):
                    while not (back() and me.registered):
                        await asyncio.sleep(0.05)
                # Deleted by someone else: written again.
                await admin.delete(me.key)
                async with asyncio.timeout(30):
                    while (await admin.get(me.key)).kv is None:
                        await asyncio.sleep(0.05)
            async with asyncio.timeout(30):
                while view.instances():
                    await asyncio.sleep(0.05)
            await view.close()

            # The async view: change callbacks, the random strategy, wait_ready for several instances.
            async with discover(client, "web", strategy="random") as web:
                changes: list[ServiceChange] = []
                web.on_change(changes.append)
                with pytest.raises(DiscoveryTimeout):
                    await web.wait_ready(timeout=0.3)
                regs = [await register(client, "web", f"h:{i}", instance_id=f"i{i}") for i in range(3)]
                ready = await web.wait_ready(timeout=30, count=3)
                assert [i.address for i in ready] == ["h:0", "h:1", "h:2"]
                assert {web.pick().id for _ in range(60)} <= {"i0", "i1", "i2"}
                for reg in regs:
                    await reg.close()
                async with asyncio.timeout(30):
                    while web.instances() or not changes or changes[-1].instances:
                        await asyncio.sleep(0.05)
                assert sum(len(c.added) for c in changes) == 3
                assert sum(len(c.removed) for c in changes) == 3
            with pytest.raises(ValueError):
                Registration(client, "web", "h:1", status="sleeping")
            with pytest.raises(TypeError):
                Registration(client, "web", "h:1", metadata={"x": object()})
            with pytest.raises(ValueError):
                ServiceView(client, "a/b")

    asyncio.run(scenario())
