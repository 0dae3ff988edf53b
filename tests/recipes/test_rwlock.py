"""Read/write locks on real etcd and on coord-server: readers share, writers exclude everyone, a waiting writer holds
back later readers (no writer starvation); the same rules hold across processes."""

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


def test_readers_share_writers_exclude_and_waiting_writers_hold_back_readers(server: Backend) -> None:
    async def scenario() -> None:
        async with coord.AsyncClient(server.endpoint, timeout=5) as client:
            rw = client.rwlock("cfg", timeout=20)
            r1, r2 = rw.read(), rw.read()
            assert await r1.try_acquire() and await r2.try_acquire()  # readers share
            assert not await rw.write().try_acquire()  # a writer is excluded by readers
            writer = rw.write()
            waiting = asyncio.ensure_future(writer.acquire())
            await _until_count(client, "cfg/", 3)
            assert not await rw.read().try_acquire()  # a reader arriving after a waiting writer waits for it
            await r1.release()
            assert not writer.is_held  # it waits for its predecessor, r2
            await r2.release()
            assert await asyncio.wait_for(waiting, 20) and writer.is_held
            assert not await rw.read().try_acquire() and not await rw.write().try_acquire()
            assert writer.token > r2.token
            await writer.release()
            async with rw.read() as r3, rw.read() as r4:
                assert r3.is_held and r4.is_held
            with pytest.raises(coord.LockTimeout):
                async with rw.read(), rw.write(timeout=0.3):
                    pytest.fail("a writer must not enter while a reader holds")
            assert await _count(client, "cfg/") == 0

    asyncio.run(scenario())


def test_rules_hold_across_processes(server: Backend, workers: Workers, tmp_path: Path) -> None:
    # Three processes take read and write holds in turn and log entering and leaving. At no point in the log is a
    # writer inside together with anyone else.
    log = tmp_path / "log"
    for modes in ("rrw", "rwr", "wrr"):
        workers.start("rw", server.endpoint, "rw", str(log), "6", modes)
    workers.wait_all(timeout=120)
    readers = writers = 0
    lines = log.read_text().splitlines()
    assert len(lines) == 3 * 6 * 2
    for line in lines:
        kind = line.split()[0]
        readers += {"R+": 1, "R-": -1}.get(kind, 0)
        writers += {"W+": 1, "W-": -1}.get(kind, 0)
        assert writers <= 1 and not (writers and readers), f"rule broken at {line!r}:\n{log.read_text()}"
    assert readers == writers == 0


def test_sync_rwlock(server: Backend) -> None:
    with coord.connect(server.endpoint, timeout=5) as client:
        rw = client.rwlock("sync-rw", timeout=5)
        with rw.read() as r1, rw.read() as r2:
            assert r1.is_held and r2.is_held
            assert not rw.write().try_acquire()
        with rw.write() as w:
            assert w.is_held and not rw.read().try_acquire()
        assert not w.is_held
