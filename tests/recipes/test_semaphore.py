"""Semaphores on real etcd and on coord-server: the limit is never exceeded (also across processes), waiters are
admitted in arrival order, and timeouts leave nothing behind."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

import coord
from tests.recipes.conftest import Backend, Workers


async def _count(client: coord.AsyncClient, prefix: str) -> int:
    return len((await client.range(prefix, prefix=True, keys_only=True)).kvs)


async def _until_count(client: coord.AsyncClient, prefix: str, n: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while await _count(client, prefix) != n:
        assert time.monotonic() < deadline, f"{prefix} never had {n} keys"
        await asyncio.sleep(0.02)


def test_limit_try_acquire_and_timeout(server: Backend) -> None:
    async def scenario() -> None:
        async with coord.AsyncClient(server.endpoint, timeout=5) as client:
            s1, s2 = client.semaphore("gpu", 2), client.semaphore("gpu", 2)
            assert await s1.try_acquire() and await s2.try_acquire()
            assert s1.token != s2.token and s1.limit == 2
            assert not await client.semaphore("gpu", 2).try_acquire()
            with pytest.raises(coord.LockTimeout):
                async with client.semaphore("gpu", 2, timeout=0.3):
                    pytest.fail("a third holder must not enter")
            assert await _count(client, "gpu/") == 2
            third = client.semaphore("gpu", 2, timeout=20)
            waiting = asyncio.ensure_future(third.acquire())
            await _until_count(client, "gpu/", 3)
            await s2.release()
            assert await asyncio.wait_for(waiting, 20)
            assert third.is_held and s1.is_held and not s2.is_held
            await asyncio.gather(s1.release(), third.release())
            assert await _count(client, "gpu/") == 0
            with pytest.raises(ValueError):
                client.semaphore("gpu", 0)

    asyncio.run(scenario())


def test_waiters_are_admitted_in_arrival_order(server: Backend) -> None:
    # Two holders, four queued waiters: releases admit the waiters one by one, first come first served (this
    # exercises the head waiter watching the prefix and later waiters watching only their predecessor).
    async def scenario() -> None:
        async with coord.AsyncClient(server.endpoint, timeout=5) as client:
            holders = [client.semaphore("slots", 2) for _ in range(2)]
            for holder in holders:
                assert await holder.try_acquire()
            admitted: list[int] = []
            waiters = [client.semaphore("slots", 2, timeout=30) for _ in range(4)]
            tasks = []
            for i, waiter in enumerate(waiters):
                tasks.append(asyncio.ensure_future(waiter.acquire()))
                tasks[-1].add_done_callback(lambda _, i=i: admitted.append(i))
                await _until_count(client, "slots/", 3 + i)
            release_order = [holders[1], holders[0], waiters[0], waiters[1]]
            for step, holder in enumerate(release_order):
                await holder.release()
                deadline = time.monotonic() + 20
                while len(admitted) < step + 1:
                    assert time.monotonic() < deadline, f"nobody admitted after release {step}"
                    await asyncio.sleep(0.02)
                assert admitted == list(range(step + 1))
                assert sum(w.is_held for w in waiters) + sum(h.is_held for h in holders) == 2
            await asyncio.gather(*tasks)
            for waiter in waiters:
                await waiter.release()

    asyncio.run(scenario())


def test_limit_never_exceeded_across_processes(server: Backend, workers: Workers, tmp_path: Path) -> None:
    # Four processes enter a semaphore of 2 slots repeatedly, logging entering and leaving while inside.
    log = tmp_path / "log"
    for _ in range(4):
        workers.start("semaphore", server.endpoint, "sem", "2", str(log), "4")
    workers.wait_all(timeout=120)
    inside = most = 0
    lines = log.read_text().splitlines()
    assert len(lines) == 4 * 4 * 2
    for line in lines:
        inside += 1 if line.startswith("+") else -1
        most = max(most, inside)
        assert inside <= 2, log.read_text()
    assert inside == 0 and most >= 1


def test_sync_semaphore_on_the_default_client(server: Backend) -> None:
    client = coord.connect(server.endpoint, timeout=5)
    previous = coord.set_default_client(client)
    try:
        with coord.semaphore("pool", 1, timeout=5) as slot:
            assert slot.is_held and slot.limit == 1
            assert not coord.semaphore("pool", 1).try_acquire()
        assert coord.semaphore("pool", 1).try_acquire()
    finally:
        coord.set_default_client(previous)
        client.close()
