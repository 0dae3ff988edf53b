"""The work queue on etcd and on coord-server.

Guarantees checked: strict priorities, FIFO within a priority, payloads returned as they were put; delayed items
invisible until due; nack redelivers and dead-letters after ``max_deliveries``; the items of a consumer whose lease is
gone (revoked, as on expiry) return to the queue, its late ack is refused and changes nothing; concurrent consumers
never share an item; producers and consumers SIGKILLed mid-item lose nothing: every confirmed item is processed at
least once and acknowledged exactly once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import coord
from coord.recipes.queue import ClaimLost, Queue, QueueEmpty, SyncQueue, queue
from tests.client.conftest import Backend
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]


def test_priorities_fifo_payload_types_and_delays(backend: Backend) -> None:
    with coord.connect(backend.endpoint, timeout=5) as client:
        jobs = queue(client, "prio")
        assert isinstance(jobs, SyncQueue)
        jobs.put("low", priority=10)
        jobs.put("first", priority=-5)
        jobs.put(b"\x00bytes", priority=1)
        jobs.put({"n": 1}, priority=1)
        jobs.put([1, 2], priority=1)
        jobs.put("default")
        assert jobs.stats().ready == 6
        values = []
        for _ in range(6):
            with jobs.get(timeout=5) as item:
                values.append(item.value)
        assert values == ["first", "default", b"\x00bytes", {"n": 1}, [1, 2], "low"]
        with pytest.raises(QueueEmpty):
            jobs.get(timeout=0)
        stats = jobs.stats()
        assert (stats.ready, stats.delayed, stats.in_flight) == (0, 0, 0)

        # Delayed items: invisible until due; a waiting get wakes when they are due, without anyone putting.
        # (Once due, an item takes its place by put order, so put order and due order agree here.)
        jobs.put("now")
        jobs.put("soon-1", delay=0.3)
        jobs.put("soon-2", delay=0.6)
        jobs.put("far", delay=300)
        assert jobs.stats().delayed == 3
        with jobs.get(timeout=5) as item:
            assert item.value == "now"
        got = []
        for _ in range(2):
            with jobs.get(timeout=30) as item:
                got.append(item.value)
        assert got == ["soon-1", "soon-2"]
        with pytest.raises(QueueEmpty):
            jobs.get(timeout=0.3)  # "far" is not due for minutes
        assert jobs.stats().delayed == 1

        with pytest.raises(TypeError):
            jobs.put(object())
        with pytest.raises(ValueError):
            jobs.put("x", priority=2**31)
        with pytest.raises(ValueError):
            jobs.put("x", delay=-1)
        with pytest.raises(ValueError):
            SyncQueue(client, "a/b")
        jobs.close()


def test_nack_redelivers_then_dead_letters(backend: Backend) -> None:
    async def scenario() -> None:
        async with coord.AsyncClient(backend.endpoint, timeout=5) as client:
            jobs = Queue(client, "flaky", max_deliveries=3)
            await jobs.put({"job": 7})
            item = await jobs.get(timeout=5)
            assert item.deliveries == 1
            assert await item.nack(error="first failure") is False
            with pytest.raises(RuntimeError):
                await item.ack()  # already nacked
            item = await jobs.get(timeout=5)
            assert (item.deliveries, item.error) == (2, "first failure")
            await item.nack(delay=0.3)  # a retry with back-off
            with pytest.raises(ValueError):
                async with await jobs.get(timeout=30) as item:
                    assert item.deliveries == 3
                    raise ValueError("third failure")  # the context manager nacks: the last allowed delivery
            assert (await jobs.stats()).ready == 0
            dead = jobs.dead_letters
            assert (await dead.stats()).ready == 1
            letter = await dead.get(timeout=5)
            assert letter.value == {"job": 7}
            assert letter.error == "ValueError: third failure"
            await letter.ack()
            await dead.close()
            await jobs.close()

    asyncio.run(scenario())


def test_items_of_a_lost_or_closed_consumer_return_to_the_queue(backend: Backend) -> None:
    async def scenario() -> None:
        async with (
            coord.AsyncClient(backend.endpoint, timeout=5) as a,
            coord.AsyncClient(backend.endpoint, timeout=5) as b,
        ):
            dying = Queue(a, "vis", visibility_timeout=2)
            healthy = Queue(b, "vis", visibility_timeout=2)
            await dying.put("payload")
            held = await dying.get(timeout=5)
            waiting = asyncio.create_task(healthy.get(timeout=60))  # blocks: the only item is claimed
            await asyncio.sleep(0.3)
            assert not waiting.done()
            await b.revoke(dying.lease_id)  # as if its lease expired: the claim vanishes
            again = await asyncio.wait_for(waiting, 60)
            assert (again.value, again.deliveries, again.id) == ("payload", 2, held.id)
            with pytest.raises(ClaimLost):
                await held.ack(ops=[coord.Put("result", "from the lost consumer")])
            assert (await a.get("result")).kv is None  # the refused ack applied nothing
            await again.ack()
            assert (await healthy.stats()).in_flight == 0
            # A new claim by the once-lost consumer gets a fresh lease.
            await healthy.put("next")
            item = await dying.get(timeout=5)
            assert dying.lease_id != 0
            await item.ack()
            await healthy.close()
            # Closing a consumer returns its unacknowledged items at once (well before the visibility timeout).
            slow = Queue(b, "vis", visibility_timeout=60)
            await slow.put("x")
            unacked = await slow.get(timeout=5)
            await slow.close()
            again = await dying.get(timeout=30)
            assert again.value == "x" and again.id == unacked.id
            await again.ack()
            await dying.close()

    asyncio.run(scenario())


def test_concurrent_consumers_never_share_an_item(backend: Backend) -> None:
    total = 24
    acked: list[str] = []
    holding: set[str] = set()
    overlaps: list[str] = []

    async def consumer() -> None:
        async with coord.AsyncClient(backend.endpoint, timeout=5) as client:
            jobs = Queue(client, "shared", visibility_timeout=10)
            try:
                while len(acked) < total:
                    try:
                        item = await jobs.get(timeout=1)
                    except QueueEmpty:
                        continue
                    if item.value in holding:
                        overlaps.append(item.value)
                    holding.add(item.value)
                    await asyncio.sleep(0.01)
                    holding.discard(item.value)
                    await item.ack()
                    acked.append(item.value)
            finally:
                await jobs.close()

    async def producer() -> None:
        async with coord.AsyncClient(backend.endpoint, timeout=5) as client:
            jobs = Queue(client, "shared")
            for i in range(total):
                await jobs.put(f"item-{i}")

    async def scenario() -> None:
        await asyncio.wait_for(asyncio.gather(producer(), *(consumer() for _ in range(4))), 90)

    asyncio.run(scenario())
    assert not overlaps
    assert sorted(acked) == sorted(f"item-{i}" for i in range(total))


class _Worker:
    """A worker subprocess whose output lines go to a file the test can poll."""

    def __init__(self, tmp: Path, label: str, *args: str) -> None:
        self.out = tmp / f"{label}.out"
        with open(self.out, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.recipes._queue_workers", *args],
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def lines(self, prefix: str) -> list[str]:
        text = self.out.read_text(errors="replace")
        return [line.split(" ", 1)[1] for line in text.splitlines() if line.startswith(prefix + " ")]

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)


@pytest.fixture
def queue_workers(tmp_path: Path) -> Iterator[Callable[..., _Worker]]:
    started: list[_Worker] = []

    def start(label: str, *args: str) -> _Worker:
        worker = _Worker(tmp_path, label, *args)
        started.append(worker)
        return worker

    try:
        yield start
    finally:
        for worker in started:
            worker.kill()


def test_crashing_producers_and_consumers_lose_nothing(backend: Backend, queue_workers: Callable[..., _Worker]) -> None:
    """Fault: SIGKILL of a producer mid-stream, of two consumers holding an item, and of a consumer mid-stream.
    Guarantee: every item whose put returned is processed at least once and acknowledged exactly once."""
    ep, name, workers = backend.endpoint, "crash", queue_workers
    # Everyone starts at once; the victims are killed as soon as they reach the point of interest.
    steady = workers("steady-producer", "produce", ep, name, "A", "15", "0")
    doomed = workers("doomed-producer", "produce", ep, name, "B", "2000", "0.02")  # killed long before the end
    hung = [workers(f"hung-{i}", "consume", ep, name, f"hung-{i}", "hang") for i in range(2)]
    crashy = workers("crashy", "consume", ep, name, "crashy", "work")
    survivors = [workers(f"survivor-{i}", "consume", ep, name, f"survivor-{i}", "work") for i in range(2)]
    for worker in hung:
        wait_until(lambda w=worker: bool(w.lines("claimed")), 60, "a hanging consumer to claim an item")
        worker.kill()  # dies holding its item
    wait_until(lambda: len(crashy.lines("acked")) >= 3, 60, "a consumer to ack items")
    crashy.kill()  # probably mid-item
    wait_until(lambda: len(doomed.lines("put")) >= 10, 60, "the doomed producer to put items")
    doomed.kill()
    wait_until(lambda: len(steady.lines("put")) == 15, 60, "the steady producer to finish")

    confirmed = set(steady.lines("put")) | set(doomed.lines("put"))
    with coord.connect(ep, timeout=5) as client:

        def all_done() -> bool:
            done = {kv.key.decode()[len("done/") :] for kv in client.range("done/", prefix=True, keys_only=True).kvs}
            return confirmed <= done

        wait_until(all_done, 90, "every confirmed item to be acknowledged")
        done = client.range("done/", prefix=True).kvs
        # Exactly-once acknowledgement: each done/ key was written by one successful ack (version 1).
        assert all(kv.version == 1 for kv in done)
        processed = [v for w in (crashy, *survivors) for v in w.lines("processing")]
        assert confirmed <= set(processed)
        jobs = SyncQueue(client, name)
        wait_until(lambda: jobs.stats().ready + jobs.stats().in_flight == 0, 60, "the queue to drain")
        # At most the one item the doomed producer was putting when killed is beyond the confirmed ones.
        assert len({kv.key for kv in done}) - len(confirmed) <= 1
    for worker in survivors:
        worker.kill()
