"""Leader election on real etcd and on coord-server: campaign, proclaim, resign, observe (including "no leader"),
loss that cancels or signals the leader, ``@elected`` in all its forms, and failover when the leader process is
killed (fault: SIGSTOP, then SIGKILL, of the leading process; guarantee: another process leads, epochs grow, and
fenced writes never go back to an older leadership)."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import coord
from tests.recipes.conftest import Backend, Workers


async def _eventually(check: Callable[[], Any], timeout: float = 20.0, message: Callable[[], str] = str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"condition not reached in time {message()}"
        await asyncio.sleep(0.02)


def test_campaign_proclaim_resign_and_observe(server: Backend) -> None:
    async def scenario() -> None:
        async with coord.AsyncClient(server.endpoint, timeout=5) as a, coord.AsyncClient(server.endpoint) as b:
            election_a, election_b = a.election("sched"), b.election("sched")
            seen: list[bytes | None] = []

            async def observe() -> None:
                async for leader in b.election("sched").observe():
                    seen.append(None if leader is None else leader.value)

            observer = asyncio.ensure_future(observe())
            await _eventually(lambda: seen == [None])
            assert await election_b.leader() is None

            lead_a = await election_a.campaign("a")
            assert lead_a.is_leader and lead_a.value == b"a"
            second = asyncio.ensure_future(election_b.campaign("b"))
            await _eventually(lambda: seen == [None, b"a"])
            deadline = time.monotonic() + 20
            while len((await a.range("sched/", prefix=True)).kvs) < 2:  # b's candidate key is queued behind a's
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            await lead_a.proclaim("a2")
            await _eventually(lambda: seen == [None, b"a", b"a2"])
            current = await election_b.leader()
            assert current is not None and current.value == b"a2" and current.epoch == lead_a.epoch
            assert not second.done()

            await lead_a.resign()
            lead_b = await asyncio.wait_for(second, 20)
            assert lead_b.epoch > lead_a.epoch and not lead_a.is_leader
            await _eventually(lambda: seen == [None, b"a", b"a2", b"b"], message=lambda: f"{seen} {observer}")
            with pytest.raises(coord.NotLeader):
                await lead_a.proclaim("stale")
            await lead_b.resign()
            await lead_b.resign()  # idempotent
            await _eventually(lambda: seen == [None, b"a", b"a2", b"b", None])
            observer.cancel()
            await asyncio.gather(observer, return_exceptions=True)

    asyncio.run(scenario())


def test_campaign_timeout_leaves_no_candidate_key(server: Backend) -> None:
    async def scenario() -> None:
        async with coord.AsyncClient(server.endpoint, timeout=5) as client:
            async with client.election("e").campaign("first") as leadership:
                with pytest.raises(coord.ElectionTimeout):
                    await client.election("e", ttl=3).campaign("second", timeout=0.3)
                keys = [kv.key for kv in (await client.range("e/", prefix=True)).kvs]
                assert keys == [leadership.key]
            assert (await client.range("e/", prefix=True)).kvs == ()

    asyncio.run(scenario())


def test_loss_cancels_the_leader_and_fences_its_writes(server: Backend) -> None:
    # Fault: the leader's lease is revoked by another client. Guarantee: the async body is cancelled, the campaign
    # context raises LeadershipLost, callbacks run, and the old leader's fenced write fails once another leads.
    async def scenario() -> None:
        async with coord.AsyncClient(server.endpoint, timeout=5) as a, coord.AsyncClient(server.endpoint) as b:
            told: list[coord.LeadershipLost] = []
            cancelled = False
            with pytest.raises(coord.LeadershipLost):
                async with a.election("sched", ttl=5).campaign("a") as leadership:
                    leadership.on_lost(told.append)
                    stale_guard = leadership.guard()
                    try:
                        await b.revoke(leadership.lease_id)
                        await asyncio.sleep(60)
                    except asyncio.CancelledError:
                        cancelled = True
                        raise
            assert cancelled and not leadership.is_leader
            await _eventually(lambda: bool(told))
            with pytest.raises(coord.LeadershipLost):
                await leadership.proclaim("still me?")
            with pytest.raises(coord.LeadershipLost):
                leadership.check()
            async with b.election("sched").campaign("b") as new:
                assert new.epoch > leadership.epoch
                assert not (await a.txn([stale_guard], [coord.Put("plan", "stale")])).succeeded
                assert (await b.txn([new.guard()], [coord.Put("plan", "fresh")])).succeeded

    asyncio.run(scenario())


def test_elected_async_functions_take_turns_and_rerun_after_loss(server: Backend) -> None:
    async def scenario() -> None:
        async with coord.AsyncClient(server.endpoint, timeout=5) as a, coord.AsyncClient(server.endpoint) as b:
            inside: list[str] = []
            overlap = False
            runs = {"a": 0, "b": 0}

            def make(client: coord.AsyncClient, who: str) -> Callable[[], Any]:
                @client.elected("turns", value=who)
                async def job() -> str:
                    nonlocal overlap
                    runs[who] += 1
                    leadership = coord.leadership()
                    assert isinstance(leadership, coord.Leadership) and leadership.is_leader
                    if who == "a" and runs["a"] == 1:
                        # Lose leadership in the middle of the first run. (The next leader may start before this
                        # task is cancelled: that is what fencing is for, so this run is left out of the overlap
                        # check.)
                        await b.delete(leadership.key)
                        await asyncio.sleep(60)
                    overlap = overlap or bool(inside)
                    inside.append(who)
                    await asyncio.sleep(0.05)
                    inside.remove(who)
                    return f"{who} done"

                return job

            results = await asyncio.wait_for(asyncio.gather(make(a, "a")(), make(b, "b")()), 60)
            assert results == ["a done", "b done"]
            assert runs == {"a": 2, "b": 1} and not overlap
            assert await a.election("turns").leader() is None  # returning resigned

    asyncio.run(scenario())


def test_elected_sync_function_is_signalled_then_reruns(server: Backend, default_client_for: coord.Client) -> None:
    runs: list[int] = []

    @coord.elected
    def job(x: int) -> int:
        leadership = coord.leadership()
        assert isinstance(leadership, coord.SyncLeadership)
        runs.append(leadership.epoch)
        if len(runs) == 1:
            threading.Thread(target=default_client_for.delete, args=(leadership.key,)).start()
            assert leadership.wait_lost(timeout=10)  # signalled: the blocking body notices and returns
            assert not leadership.is_leader
            return -1  # discarded: leadership was lost during the run
        return x * 2

    assert job(21) == 42
    assert len(runs) == 2 and runs[1] > runs[0]
    election = default_client_for.election(f"{job.__module__}.{job.__qualname__}")
    assert election.leader() is None
    with pytest.raises(coord.NotLeader):
        coord.leadership()


def test_elected_methods_and_async_functions_on_the_blocking_client(
    server: Backend, default_client_for: coord.Client
) -> None:
    class Scheduler:
        def __init__(self) -> None:
            self.ticks = 0

        @default_client_for.elected("scheduler", ttl=3)
        def tick(self, n: int) -> int:
            self.ticks += n
            return self.ticks

    assert Scheduler().tick(5) == 5

    @default_client_for.elected
    def bare() -> str:
        return coord.leadership().key.decode()

    assert bare().startswith(f"{bare.__module__}.{bare.__qualname__}/")

    cancelled = 0

    @coord.elected("bridged")
    async def work() -> str:
        nonlocal cancelled
        leadership = coord.leadership()
        assert isinstance(leadership, coord.SyncLeadership)
        if cancelled == 0:
            try:
                await asyncio.to_thread(default_client_for.delete, leadership.key)
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                cancelled += 1
                raise
        return "done"

    assert asyncio.run(asyncio.wait_for(work(), 60)) == "done"
    assert cancelled == 1
    with pytest.raises(TypeError):
        coord.AsyncClient(server.endpoint).elected("x")(lambda: None)


def test_sync_election_and_observer(server: Backend) -> None:
    with coord.connect(server.endpoint, timeout=5) as client:
        election = client.election("sync-e")
        with election.observe() as observer:
            assert observer.next(timeout=10) is None
            with pytest.raises(TimeoutError):
                observer.next(timeout=0.1)
            with election.campaign("me") as leadership:
                seen = observer.next(timeout=10)
                assert seen is not None and seen.value == b"me" and seen.epoch == leadership.epoch
                leadership.proclaim("me too")
                assert election.leader() == coord.Leader(leadership.key, b"me too", leadership.epoch, seen.lease)
            assert observer.next(timeout=10) is not None  # "me too"
            assert observer.next(timeout=10) is None  # resigned on leaving


def _acts(client: coord.Client) -> list[tuple[int, int]]:
    """Every value the key ``acts`` ever had, in order, as (epoch, pid)."""
    last = client.get("acts").kv
    assert last is not None
    history: list[tuple[int, int]] = []
    with client.watch("acts", start_revision=1) as watcher:
        for event in watcher:
            epoch, pid, _ = event.value.split()
            history.append((int(epoch), int(pid)))
            if event.revision >= last.mod_revision:
                return history
    raise AssertionError("watch ended early")


def test_leader_failover_when_the_leader_is_stopped_then_killed(
    server: Backend, workers: Workers, tmp_path: Path
) -> None:
    # Three processes campaign (TTL 2 s); while leader, each writes its epoch to "acts", fenced by its leadership.
    # Fault 1: SIGSTOP the leader (it keeps believing it leads); another process must lead after the TTL, and the
    # stopped one, once resumed, must not write again under its old epoch. Fault 2: SIGKILL the new leader.
    ttl = 2
    log = tmp_path / "acts.log"
    procs = {workers.start("elect", server.endpoint, "leader", str(ttl), str(log)).pid for _ in range(3)}
    with coord.connect(server.endpoint, timeout=5) as client:
        election = client.election("leader")

        def leader_acting(exclude: set[int]) -> coord.Leader:
            deadline = time.monotonic() + ttl + 30
            while time.monotonic() < deadline:
                leader = election.leader()
                acts = client.get("acts").value
                fresh = leader is not None and int(leader.value) not in exclude
                if leader is not None and fresh and acts is not None and int(acts.split()[0]) == leader.epoch:
                    return leader
                time.sleep(0.05)
            pytest.fail(f"no new leader acting in time\n{workers.logs()}")

        first = leader_acting(set())
        first_pid = int(first.value)
        assert first_pid in procs
        os.kill(first_pid, signal.SIGSTOP)
        second = leader_acting({first_pid})
        os.kill(first_pid, signal.SIGCONT)
        second_pid = int(second.value)
        os.kill(second_pid, signal.SIGKILL)
        third = leader_acting({second_pid})
        assert first.epoch < second.epoch < third.epoch

        history = _acts(client)
        epochs = [epoch for epoch, _ in history]
        assert epochs == sorted(epochs), "a write under an older leadership landed after a newer one"
        owners: dict[int, set[int]] = {}
        for epoch, pid in history:
            owners.setdefault(epoch, set()).add(pid)
        assert all(len(pids) == 1 for pids in owners.values())
        assert {first.epoch, second.epoch, third.epoch} <= set(owners)
