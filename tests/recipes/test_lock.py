"""Locks on real etcd and on coord-server: mutual exclusion across processes, timeouts that leave nothing behind,
fencing tokens, fairness, and loss that is never silent (fault: keep-alives stop, the lease is revoked, the key is
deleted)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

import coord
from tests.client._proxy import PausableProxy
from tests.recipes.conftest import Backend, Workers


async def _keys(client: coord.AsyncClient, prefix: str) -> list[bytes]:
    return [kv.key for kv in (await client.range(prefix, prefix=True)).kvs]


async def _until(predicate_coro, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not await predicate_coro():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def test_mutual_exclusion_across_processes(server: Backend, workers: Workers, tmp_path: Path) -> None:
    # Three processes increment a number in a file (read, pause, write) under one lock: no increment is lost, and
    # the fencing tokens, logged in lock order, strictly increase.
    counter, log = tmp_path / "counter", tmp_path / "tokens"
    counter.write_text("0")
    for _ in range(3):
        workers.start("lock", server.endpoint, "shared", str(counter), str(log), "8")
    workers.wait_all(timeout=120)
    assert counter.read_text() == "24"
    tokens = [int(line.split()[0]) for line in log.read_text().splitlines()]
    assert len(tokens) == 24 and tokens == sorted(set(tokens))


def test_timeout_and_try_lock_leave_no_waiter_key(server: Backend) -> None:
    async def scenario() -> None:
        async with coord.AsyncClient(server.endpoint, timeout=5) as a, coord.AsyncClient(server.endpoint) as b:
            async with a.lock("jobs") as held:
                assert held.is_held
                with pytest.raises(coord.LockTimeout):
                    async with b.lock("jobs", timeout=0.3):
                        pytest.fail("the body must not run without the lock")
                assert await _keys(b, "jobs/") == [held.key]
                other = b.lock("jobs", ttl=3)
                assert await other.try_acquire() is False
                assert await other.acquire(blocking=False) is False
                assert not other.is_held and await _keys(b, "jobs/") == [held.key]
                # A waiter cancelled while waiting removes its key too.
                waiter = asyncio.ensure_future(b.lock("jobs").acquire())
                await _until(lambda: _has_n_keys(b, "jobs/", 2))
                waiter.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await waiter
                assert await _keys(b, "jobs/") == [held.key]
            assert await _keys(b, "jobs/") == []
            assert await other.try_acquire() is True
            await other.release()
            await other.release()  # idempotent
            assert not other.is_held and await _keys(b, "jobs/") == []

    asyncio.run(scenario())


async def _has_n_keys(client: coord.AsyncClient, prefix: str, n: int) -> bool:
    return len(await _keys(client, prefix)) == n


def test_tokens_increase_and_waiters_are_served_in_arrival_order(server: Backend) -> None:
    async def scenario() -> None:
        async with coord.AsyncClient(server.endpoint, timeout=5) as client:
            order: list[int] = []
            tokens: list[int] = []

            async def wait_then_record(i: int) -> None:
                async with client.lock("fifo", timeout=30) as lock:
                    order.append(i)
                    tokens.append(lock.token)

            first = client.lock("fifo")
            await first.acquire()
            tasks = []
            for i in range(3):  # queue the waiters one after the other
                tasks.append(asyncio.ensure_future(wait_then_record(i)))
                await _until(lambda i=i: _has_n_keys(client, "fifo/", i + 2))  # type: ignore[misc]
            assert order == []
            await first.release()
            await asyncio.wait_for(asyncio.gather(*tasks), 30)
            assert order == [0, 1, 2]
            assert first.token < tokens[0] < tokens[1] < tokens[2]

    asyncio.run(scenario())


def test_one_handle_shared_by_tasks_excludes_them(server: Backend) -> None:
    async def scenario() -> None:
        async with coord.AsyncClient(server.endpoint, timeout=5) as client:
            lock = client.lock("shared-handle", timeout=30)
            inside = 0
            most = 0

            async def work() -> None:
                nonlocal inside, most
                async with lock:
                    inside += 1
                    most = max(most, inside)
                    await asyncio.sleep(0.01)
                    inside -= 1

            await asyncio.wait_for(asyncio.gather(*(work() for _ in range(5))), 60)
            assert most == 1 and not lock.is_held

    asyncio.run(scenario())


def test_lost_when_keepalives_stop_and_fenced_write_is_rejected(server: Backend) -> None:
    # Fault: every byte between the holder and the server is held (a partition), so its lease's keep-alives stop.
    # Guarantee: the holder is told (on_lost, body cancelled, LockLost at exit), another client acquires the lock
    # once the lease expires, and the old holder's write fenced with guard() is rejected when it finally arrives.
    proxy = PausableProxy(server.endpoint)

    async def scenario() -> None:
        async with coord.AsyncClient(proxy.endpoint, timeout=3) as a, coord.AsyncClient(server.endpoint) as b:
            lock = a.lock("jobs", ttl=2)
            told: list[coord.LockLost] = []
            lock.on_lost(told.append)
            cancelled = False
            with pytest.raises(coord.LockLost):
                async with lock:
                    stale_guard, stale_token = lock.guard(), lock.token
                    proxy.pause()
                    try:
                        await asyncio.sleep(60)
                    except asyncio.CancelledError:
                        cancelled = True
                        raise
            assert cancelled and not lock.is_held
            await _until(lambda: _true(bool(told)))
            assert isinstance(told[0], coord.LockLost) and lock.lost_error is told[0]
            async with b.lock("jobs", timeout=20) as other:
                assert other.token > stale_token
                proxy.resume()
                late = await a.txn([stale_guard], [coord.Put("jobs/result", "stale writer")])
                assert not late.succeeded
                assert (await b.txn([other.guard()], [coord.Put("jobs/result", "holder")])).succeeded
            assert (await b.get("jobs/result")).value == b"holder"

    try:
        asyncio.run(scenario())
    finally:
        proxy.resume()
        proxy.close()


async def _true(value: bool) -> bool:
    return value


def test_lost_when_session_lease_is_revoked_sync_form(server: Backend) -> None:
    # Fault: another client revokes the holder's session lease (as expiry would). The blocking body is told
    # (is_held, wait_lost, on_lost in a worker thread) and leaving the with-block raises LockLost; the session
    # comes back with a new lease and the lock can be taken again.
    with coord.connect(server.endpoint, timeout=5) as a, coord.connect(server.endpoint, timeout=5) as b:
        a.session(ttl=3)  # the session notices the revocation at its next keep-alive (every TTL / 3)
        lock = a.lock("jobs")
        called = threading.Event()
        lock.on_lost(lambda error: called.set())
        with pytest.raises(coord.LockLost) as raised, lock:
            first_token = lock.token
            assert lock.is_held and not lock.wait_lost(timeout=0.05)
            b.revoke(a.session().lease_id)
            assert lock.wait_lost(timeout=10)
            assert not lock.is_held
        assert "lost" in str(raised.value)
        assert called.wait(10)
        with a.lock("jobs", timeout=15) as again:
            assert again.token > first_token


def test_module_level_lock_async_with_is_cancelled_when_its_key_is_deleted(
    server: Backend, default_client_for: coord.Client
) -> None:
    # coord.lock(...) on the default (blocking) client, entered with async with from another event loop: loss
    # (someone deletes the key) cancels the body's task and raises LockLost.
    async def scenario() -> None:
        lock = coord.lock("jobs", timeout=10)
        with pytest.raises(coord.LockLost):
            async with lock:
                await asyncio.to_thread(default_client_for.delete, lock.key)
                await asyncio.sleep(60)
        assert not lock.is_held
        async with coord.lock("jobs", timeout=10) as again:
            assert again.token > lock.token

    asyncio.run(scenario())
    with coord.lock("jobs", timeout=10) as lock:
        assert lock.is_held
    assert not lock.is_held


def test_bad_arguments_are_rejected(server: Backend) -> None:
    with coord.connect(server.endpoint, timeout=5) as client:
        with pytest.raises(ValueError):
            client.lock("")
        with pytest.raises(ValueError):
            client.lock("/")
        with pytest.raises(TypeError):
            client.lock(3)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            client.lock("x", ttl=0)
        with pytest.raises(ValueError):
            client.lock("x", timeout=-1)
        with pytest.raises(coord.LockNotHeld):
            _ = client.lock("x").token
        with pytest.raises(coord.LockNotHeld):
            client.lock("x").guard()
        client.lock("x").release()  # releasing what was never acquired is a no-op


@pytest.mark.skipif(shutil.which("etcdctl") is None, reason="etcdctl is not installed")
def test_interoperates_with_etcdctl_lock(server: Backend) -> None:
    # etcdctl's lock (etcd's client-side mutex) and ours queue under the same prefix and exclude each other.
    cmd = ["etcdctl", f"--endpoints={server.endpoint}", "lock", "tools"]
    holder = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={"ETCDCTL_API": "3"})
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().startswith(b"tools/")  # etcdctl prints its key once it holds the lock
        with coord.connect(server.endpoint, timeout=5) as client:
            with pytest.raises(coord.LockTimeout):
                client.lock("tools", timeout=0.5).acquire()
            holder.terminate()
            holder.wait(10)
            with client.lock("tools", timeout=20) as lock:
                assert lock.is_held
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait(10)
