"""Barriers and double barriers with several participants, each on its own client, on etcd and on coord-server.

Guarantees checked: a held barrier blocks every waiter until released (and an open one blocks nobody); a double
barrier lets nobody past ``enter`` before ``count`` participants joined, nor past ``leave`` before all of them left;
a participant whose session lease is gone (a crash) does not wedge the others' ``leave``; extra participants form the
next round instead of deadlocking.
"""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

import coord
from coord.recipes.barrier import Barrier, BarrierTimeout, DoubleBarrier, SyncBarrier, SyncDoubleBarrier, barrier
from tests.client.conftest import Backend

TTL = 2


def test_barrier_blocks_waiters_until_released(backend: Backend) -> None:
    async def scenario() -> None:
        async with coord.AsyncClient(backend.endpoint, timeout=5) as a, coord.AsyncClient(backend.endpoint) as b:
            gate = barrier(a, "deploy")
            assert isinstance(gate, Barrier)
            await gate.wait(timeout=5)  # never held: does not block
            assert await gate.hold() is True
            assert await gate.hold() is False  # already held
            assert await gate.is_held()
            waiters = [asyncio.create_task(Barrier(b, "deploy").wait(timeout=60)) for _ in range(3)]
            with pytest.raises(BarrierTimeout):
                await Barrier(b, "deploy").wait(timeout=0.3)
            assert not any(w.done() for w in waiters)
            assert await gate.release() is True
            await asyncio.wait_for(asyncio.gather(*waiters), 30)
            assert not await gate.is_held()
            assert await gate.release() is False

    asyncio.run(scenario())

    # An ephemeral barrier opens by itself when its holder dies (blocking API this time).
    with coord.connect(backend.endpoint, timeout=5) as holder, coord.connect(backend.endpoint, timeout=5) as other:
        gate = barrier(holder, "ephemeral", ephemeral=True, ttl=TTL)
        assert isinstance(gate, SyncBarrier)
        assert gate.hold()
        done = threading.Event()
        thread = threading.Thread(target=lambda: (SyncBarrier(other, "ephemeral").wait(timeout=60), done.set()))
        thread.start()
        try:
            assert not done.wait(0.3)
            # The holder "dies": its session lease is revoked (as on expiry), which deletes the barrier key.
            other.revoke(holder.session().lease_id)
            assert done.wait(30)
        finally:
            thread.join(60)


def test_double_barrier_lets_all_in_together_and_out_together(backend: Backend) -> None:
    started: list[int] = []
    leaving: list[int] = []
    seen_at_enter: list[int] = []
    seen_at_leave: list[int] = []

    async def participant(i: int) -> None:
        async with coord.AsyncClient(backend.endpoint, timeout=5) as client:
            await asyncio.sleep(0.05 * i)  # staggered arrivals
            started.append(i)
            async with DoubleBarrier(client, "batch", 3, ttl=TTL) as db:
                assert db.entered
                seen_at_enter.append(len(started))
                await asyncio.sleep(0.05 * (3 - i))  # staggered departures
                leaving.append(i)
            seen_at_leave.append(len(leaving))

    async def scenario() -> None:
        for _ in range(2):  # the same barrier serves round after round
            started.clear(), leaving.clear(), seen_at_enter.clear(), seen_at_leave.clear()
            await asyncio.wait_for(asyncio.gather(*(participant(i) for i in range(3))), 60)
            assert seen_at_enter == [3, 3, 3]
            assert seen_at_leave == [3, 3, 3]
        async with coord.AsyncClient(backend.endpoint) as client:
            left = await client.range("coord/double-barrier/batch/", prefix=True, count_only=True)
            assert left.count == 0  # the last one out cleaned up

    asyncio.run(scenario())


def test_double_barrier_crash_extras_timeouts_and_blocking_form(backend: Backend) -> None:
    async def scenario() -> None:
        clients = [coord.AsyncClient(backend.endpoint, timeout=5) for _ in range(5)]
        try:
            # A crash inside: participant 2's session lease is revoked (as on expiry), deleting its key; the others'
            # leave must still complete.
            barriers = [DoubleBarrier(c, "crash", 3, ttl=TTL) for c in clients[:3]]
            await asyncio.wait_for(asyncio.gather(*(b.enter(timeout=60) for b in barriers)), 60)
            crashed = await clients[2].session()
            await clients[0].revoke(crashed.lease_id)
            await asyncio.wait_for(asyncio.gather(*(b.leave(timeout=60) for b in barriers[:2])), 60)

            # Four participants on a barrier of two: they form two rounds instead of deadlocking.
            async def pair_member(client: coord.AsyncClient) -> None:
                db = DoubleBarrier(client, "pairs", 2, ttl=TTL)
                await db.enter(timeout=60)
                await db.leave(timeout=60)

            healthy = [c for i, c in enumerate(clients) if i != 2]
            await asyncio.wait_for(asyncio.gather(*(pair_member(c) for c in healthy)), 90)
        finally:
            for c in clients:
                await c.close()

    asyncio.run(scenario())

    # The blocking form: a lone participant times out (and withdraws); two threads pass together.
    with coord.connect(backend.endpoint, timeout=5) as a, coord.connect(backend.endpoint, timeout=5) as b:
        lone = SyncDoubleBarrier(a, "sync", 2, ttl=TTL)
        with pytest.raises(BarrierTimeout):
            lone.enter(timeout=0.3)
        assert not lone.entered
        assert a.range("coord/double-barrier/sync/waiters/", prefix=True, count_only=True).count == 0  # withdrew
        with pytest.raises(RuntimeError):
            lone.leave()

        inside = []
        errors: list[BaseException] = []

        def run(client: coord.Client, name: str) -> None:
            try:
                with SyncDoubleBarrier(client, "sync", 2, ttl=TTL):
                    inside.append(name)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(c, n)) for c, n in ((a, "a"), (b, "b"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors and sorted(inside) == ["a", "b"]
        with pytest.raises(ValueError):
            SyncDoubleBarrier(a, "sync", 0)
        with pytest.raises(ValueError):
            SyncBarrier(a, "a/b")


def test_a_participant_finds_its_round_after_later_rounds_came_and_went(backend: Backend) -> None:
    # Regression: a round's member that had not looked yet when a later round formed (overwriting the latest-round
    # key) and left (deleting it) must still find its own round, not wait forever for partners that already entered.
    # The store is set up as that moment leaves it: this participant's round recorded under rounds/, no latest round.
    async def scenario() -> None:
        async with coord.AsyncClient(backend.endpoint, timeout=5) as client:
            late = DoubleBarrier(client, "rounds", 2, ttl=TTL)
            far = 10**15  # a round whose bounds surely hold the participant's key
            await client.put(f"coord/double-barrier/rounds/rounds/{far:020d}", json.dumps({"floor": 0, "last": far}))
            await late.enter(timeout=10)
            assert late.entered

    asyncio.run(scenario())
