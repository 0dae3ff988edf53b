"""Counters and STM on real etcd and on coord-server: concurrent updates are never lost, transactions see one
snapshot and are retried on conflict, and giving up is a typed error."""

from __future__ import annotations

import asyncio

import pytest

import coord
from tests.recipes.conftest import Backend


def test_concurrent_increments_from_several_clients_are_all_counted(server: Backend) -> None:
    async def scenario() -> None:
        clients = [coord.AsyncClient(server.endpoint, timeout=5) for _ in range(3)]
        try:
            counters = [c.counter("hits") for c in clients]
            assert await counters[0].get() == 0
            results = await asyncio.gather(*(counter.increment() for counter in counters for _ in range(8)))
            assert sorted(results) == list(range(1, 25))  # every increment saw a distinct value
            assert await counters[1].get() == 24
            assert await counters[2].add(6) == 30 and await counters[0].decrement() == 29
            assert await counters[0].compare_and_set(29, 100) is True
            assert await counters[1].compare_and_set(29, 5) is False
            assert (await clients[0].get("hits")).value == b"100"  # plain decimal text
            await clients[0].put("hits", "not a number")
            with pytest.raises(ValueError):
                await counters[0].increment()
        finally:
            for client in clients:
                await client.close()

    asyncio.run(scenario())


def test_sync_counter(server: Backend) -> None:
    with coord.connect(server.endpoint, timeout=5) as client:
        counter = client.counter("visits")
        counter.set(10)
        assert counter.increment() == 11 and counter.add(4) == 15 and counter.get() == 15
        with pytest.raises(TypeError):
            counter.add(1.5)  # type: ignore[arg-type]


def test_stm_transfers_conserve_the_total_under_contention(server: Backend) -> None:
    async def scenario() -> None:
        async with coord.AsyncClient(server.endpoint, timeout=5) as a, coord.AsyncClient(server.endpoint) as b:
            for name in ("x", "y", "z"):
                await a.put(f"acct/{name}", "100")
            runs = 0

            def transfer(src: str, dst: str, amount: int):  # type: ignore[no-untyped-def]
                async def tx(t: coord.STMTransaction) -> int:
                    nonlocal runs
                    runs += 1
                    s = int(await t.get(f"acct/{src}") or 0)
                    d = int(await t.get(f"acct/{dst}") or 0)
                    t.put(f"acct/{src}", str(s - amount))
                    t.put(f"acct/{dst}", str(d + amount))
                    return s - amount

                return tx

            pairs = [("x", "y"), ("y", "z"), ("z", "x"), ("x", "z")] * 3
            await asyncio.gather(
                *((a if i % 2 else b).stm(transfer(src, dst, i + 1)) for i, (src, dst) in enumerate(pairs))
            )
            values = [int((await a.get(f"acct/{n}")).value or 0) for n in ("x", "y", "z")]
            assert sum(values) == 300
            assert runs >= len(pairs)

    asyncio.run(scenario())


def test_stm_reads_one_snapshot_and_gives_up_with_a_typed_error(server: Backend) -> None:
    async def scenario() -> None:
        async with coord.AsyncClient(server.endpoint, timeout=5) as a, coord.AsyncClient(server.endpoint) as b:
            await a.put("k1", "1")
            await a.put("k2", "1")

            async def interfered(t: coord.STMTransaction) -> tuple[bytes | None, bytes | None]:
                first = await t.get("k1")
                await b.put("k2", "changed")  # a concurrent writer between our two reads
                second = await t.get("k2")
                t.put("k1", "mine")
                return first, second

            with pytest.raises(coord.TransactionConflict):
                await a.stm(interfered, max_attempts=2)
            assert (await a.get("k1")).value == b"1"  # nothing committed

            seen: list[bytes | None] = []

            async def snapshot(t: coord.STMTransaction) -> None:
                await t.get("k1")
                await b.put("k2", "later")
                seen.append(await t.get("k2"))  # still the snapshot's value

            await a.stm(snapshot)  # read-only: commits without a conflict check
            assert seen == [b"changed"]

            async def own_writes(t: coord.STMTransaction) -> bytes | None:
                t.put("k3", "v")
                t.delete("k1")
                assert await t.get("k1") is None
                return await t.get("k3")

            assert await a.stm(own_writes) == b"v"
            assert (await a.get("k1")).kv is None and (await a.get("k3")).value == b"v"

    asyncio.run(scenario())


def test_sync_stm_on_the_default_client(server: Backend) -> None:
    client = coord.connect(server.endpoint, timeout=5)
    previous = coord.set_default_client(client)
    try:

        def bump(tx: coord.SyncSTMTransaction) -> int:
            value = int(tx.get("n") or 0) + 1
            tx.put("n", str(value))
            return value

        assert coord.stm(bump) == 1 and coord.stm(bump) == 2
        assert coord.counter("n").get() == 2
        with pytest.raises(ValueError):
            coord.stm(bump, max_attempts=0)
    finally:
        coord.set_default_client(previous)
        client.close()
