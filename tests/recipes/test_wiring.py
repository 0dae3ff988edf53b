"""The barrier, queue, registry and config recipes through every entry point (``coord.<recipe>(...)`` on the default
client, ``client.<recipe>(...)`` on a Client and on an AsyncClient), the names reserved for their keys, and
``Client.run``; on etcd and on coord-server."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

import coord
from tests.client.conftest import Backend
from tests.waiting import wait_until


def test_module_level_forms_run_on_the_default_client(server: Backend, default_client_for: coord.Client) -> None:
    jobs = coord.queue("jobs", visibility_timeout=5)
    assert isinstance(jobs, coord.SyncQueue)
    jobs.put({"n": 1})
    item = jobs.get(timeout=10)
    assert isinstance(item, coord.SyncQueueItem) and item.value == {"n": 1}
    item.ack()
    with pytest.raises(coord.QueueEmpty):
        jobs.get(timeout=0.2)

    registration = coord.register("api", "10.0.0.1:80", metadata={"zone": "a"}, ttl=5)
    assert isinstance(registration, coord.SyncRegistration)
    view = coord.discover("api")
    try:
        (ready,) = view.wait_ready(timeout=10)
        assert (ready.address, ready.metadata) == ("10.0.0.1:80", {"zone": "a"})
        registration.close()
        wait_until(lambda: not view.instances(), 10, "the closed registration to disappear")
    finally:
        view.close()

    seen: list[dict[str, Any]] = []
    changed = threading.Event()

    hook = coord.on_change("apps/web/", debounce=0.01)

    @hook
    def reconfigure(values: dict[str, Any]) -> None:
        seen.append(values)
        changed.set()

    live = coord.config("apps/web/", debounce=0.01)
    try:
        assert isinstance(live, coord.SyncConfig) and live.value == {}
        default_client_for.put("apps/web/port", "8080")
        wait_until(lambda: live.value == {"port": 8080}, 10, "the config to reload")
        assert changed.wait(10) and seen[-1] == {"port": 8080}
        assert callable(reconfigure)  # the decorator returns the function itself
    finally:
        live.close()
        hook.close()

    gate = coord.barrier("deploy")
    assert gate.hold() and gate.is_held()
    with pytest.raises(coord.BarrierTimeout):
        gate.wait(timeout=0.2)
    assert gate.release()
    gate.wait(timeout=5)  # released: returns at once
    step = coord.double_barrier("step", 1)
    step.enter(timeout=10)
    step.leave(timeout=10)


def test_async_client_methods(server: Backend) -> None:
    async def scenario() -> None:
        async with coord.AsyncClient(server.endpoint, timeout=5) as client:
            jobs = client.queue("emails", visibility_timeout=5)
            assert isinstance(jobs, coord.Queue)
            await jobs.put("hello")
            async with await jobs.get(timeout=10) as item:
                assert item.value == "hello"
            async with client.register("db", "10.0.0.2:5432", ttl=5), client.discover("db") as view:
                assert isinstance(view, coord.ServiceView)
                (ready,) = await view.wait_ready(timeout=10)
                assert view.pick() == ready
            async with client.config("apps/db/", debounce=0.01) as live:
                assert isinstance(live, coord.Config) and live.value == {}
            gate = client.barrier("gate")
            assert isinstance(gate, coord.Barrier) and await gate.hold()
            assert isinstance(client.double_barrier("step", 2), coord.DoubleBarrier)
            assert isinstance(client.on_change("apps/db/"), coord.ChangeHook)

    asyncio.run(scenario())


@pytest.mark.parametrize("name", ["coord", "coord/", "coord/queue/jobs", b"coord/services/api"])
def test_names_under_coord_are_reserved_for_the_keyed_recipes(server: Backend, name: str | bytes) -> None:
    # A lock named "coord" would count the queues' and registry's keys (coord/<kind>/<name>/...) as its waiters.
    with coord.connect(server.endpoint, timeout=5) as client:
        for make in (
            lambda: client.lock(name),
            lambda: client.rwlock(name),
            lambda: client.semaphore(name, 2),
            lambda: client.election(name),
        ):
            with pytest.raises(ValueError, match="reserved"):
                make()
        with client.lock("coordinator", timeout=10) as lock:  # only the exact segment is reserved
            assert lock.is_held


def test_client_run_executes_a_coroutine_in_the_clients_loop(server: Backend) -> None:
    with coord.connect(server.endpoint, timeout=5) as client:
        client.put("k", "v")
        assert client.run(client.async_client.get("k")).value == b"v"
        with pytest.raises(TimeoutError):
            client.run(asyncio.sleep(30), timeout=0.2)
        client.close()
        with pytest.raises(coord.errors.ClientClosedError):
            client.run(asyncio.sleep(0))
