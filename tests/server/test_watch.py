"""The Watch service of coord-server: history replay, live events, filters, cancel, progress, compaction, and a
slow consumer that must neither block writes nor lose, repeat or reorder events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TypeVar

import grpc
import pytest

from coord._proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from coord._proto.mvccpb import kv_pb2
from coord.testing import ServerProcess

T = TypeVar("T")
PUT, DELETE = kv_pb2.Event.PUT, kv_pb2.Event.DELETE


def run(coro_fn: Callable[[str], Awaitable[T]], server: ServerProcess) -> T:
    return asyncio.run(asyncio.wait_for(coro_fn(server.endpoint), timeout=120))  # type: ignore[arg-type]


class Stream:
    """One Watch stream: send requests, read responses with a deadline."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._requests: asyncio.Queue[rpc_pb2.WatchRequest | None] = asyncio.Queue()
        self._call = rpc_pb2_grpc.WatchStub(channel).Watch(self._iter())

    async def _iter(self) -> AsyncIterator[rpc_pb2.WatchRequest]:
        while (request := await self._requests.get()) is not None:
            yield request

    def create(self, key: bytes, **kw: object) -> None:
        self._requests.put_nowait(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=key, **kw)))  # type: ignore[arg-type]

    def cancel(self, watch_id: int) -> None:
        self._requests.put_nowait(rpc_pb2.WatchRequest(cancel_request=rpc_pb2.WatchCancelRequest(watch_id=watch_id)))

    def progress(self) -> None:
        self._requests.put_nowait(rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))

    async def next(self, timeout: float = 10) -> rpc_pb2.WatchResponse:
        response = await asyncio.wait_for(self._call.read(), timeout)
        assert isinstance(response, rpc_pb2.WatchResponse), response
        return response

    def close(self) -> None:
        self._requests.put_nowait(None)
        self._call.cancel()


def events_of(response: rpc_pb2.WatchResponse) -> list[tuple[int, bytes, bytes, int]]:
    return [(e.type, e.kv.key, e.kv.value, e.kv.mod_revision) for e in response.events]


@pytest.fixture
def server(coord_server: ServerProcess) -> Iterator[ServerProcess]:
    yield coord_server


def test_history_then_live_events_with_prev_kv_and_filters(server: ServerProcess) -> None:
    async def scenario(endpoint: str) -> None:
        async with grpc.aio.insecure_channel(endpoint) as channel:
            kv = rpc_pb2_grpc.KVStub(channel)
            await kv.Put(rpc_pb2.PutRequest(key=b"a", value=b"1"))  # 2
            await kv.Put(rpc_pb2.PutRequest(key=b"a", value=b"2"))  # 3
            await kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"a"))  # 4
            await kv.Put(rpc_pb2.PutRequest(key=b"b", value=b"3"))  # 5
            stream = Stream(channel)
            stream.create(b"a", range_end=b"c", start_revision=1, prev_kv=True)
            created = await stream.next()
            assert created.created and created.watch_id == 0 and created.header.revision == 5
            history = await stream.next()
            assert events_of(history) == [
                (PUT, b"a", b"1", 2),
                (PUT, b"a", b"2", 3),
                (DELETE, b"a", b"", 4),
                (PUT, b"b", b"3", 5),
            ]
            assert [e.prev_kv.value for e in history.events] == [b"", b"1", b"2", b""]
            stream.create(b"a", range_end=b"c", filters=[rpc_pb2.WatchCreateRequest.NOPUT])
            assert (await stream.next()).watch_id == 1
            await kv.Txn(
                rpc_pb2.TxnRequest(
                    success=[
                        rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"a", value=b"x")),
                        rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=b"b")),
                    ]
                )
            )  # 6: one revision, one response per watcher
            seen = {}
            for _ in range(2):
                r = await stream.next()
                seen[r.watch_id] = r
            assert events_of(seen[0]) == [(PUT, b"a", b"x", 6), (DELETE, b"b", b"", 6)]
            assert seen[0].header.revision == 6
            assert events_of(seen[1]) == [(DELETE, b"b", b"", 6)]  # NOPUT
            stream.cancel(1)
            canceled = await stream.next()
            assert canceled.canceled and canceled.watch_id == 1
            stream.close()

    run(scenario, server)


def test_duplicate_id_progress_and_compaction(server: ServerProcess) -> None:
    async def scenario(endpoint: str) -> None:
        async with grpc.aio.insecure_channel(endpoint) as channel:
            kv = rpc_pb2_grpc.KVStub(channel)
            for i in range(5):
                await kv.Put(rpc_pb2.PutRequest(key=b"k", value=b"%d" % i))  # 2..6
            stream = Stream(channel)
            stream.create(b"k", watch_id=7)
            assert (await stream.next()).watch_id == 7
            stream.create(b"k", watch_id=7)
            dup = await stream.next()
            assert dup.created and dup.canceled and dup.watch_id == -1
            stream.progress()
            progress = await stream.next()
            assert progress.watch_id == -1 and progress.header.revision == 6 and not progress.events
            await kv.Compact(rpc_pb2.CompactionRequest(revision=5))
            stream.create(b"k", start_revision=3)
            created = await stream.next()
            assert created.created
            compacted = await stream.next()
            assert compacted.canceled and compacted.compact_revision == 5 and compacted.watch_id == created.watch_id
            # Exactly at the compact revision still works.
            stream.create(b"k", start_revision=5)
            created = await stream.next()
            replay = await stream.next()
            assert replay.watch_id == created.watch_id
            assert [e.kv.mod_revision for e in replay.events] == [5, 6]
            stream.close()

    run(scenario, server)


def test_slow_consumer_blocks_nothing_and_loses_nothing(server: ServerProcess) -> None:
    """Fault: a watcher that does not read while 10,000 events are written. Guarantee: writes proceed, a fast
    watcher keeps up, and the slow one later receives every event exactly once, in revision order."""
    txns, puts_per_txn, writers = 1000, 10, 16

    async def scenario(endpoint: str) -> None:
        async with grpc.aio.insecure_channel(endpoint) as slow_channel, grpc.aio.insecure_channel(endpoint) as channel:
            slow, fast = Stream(slow_channel), Stream(channel)
            slow.create(b"load/", range_end=b"load0")
            fast.create(b"load/", range_end=b"load0")
            start = (await slow.next()).header.revision
            await fast.next()
            kv = rpc_pb2_grpc.KVStub(channel)
            fast_events: list[tuple[int, bytes]] = []

            async def read_fast() -> None:
                while len(fast_events) < txns * puts_per_txn:
                    fast_events.extend((e.kv.mod_revision, e.kv.key) for e in (await fast.next(30)).events)

            async def writer(w: int) -> None:
                for t in range(w, txns, writers):
                    ops = [
                        rpc_pb2.RequestOp(
                            request_put=rpc_pb2.PutRequest(key=b"load/%04d/%d" % (t, i), value=b"v" * 1024)
                        )
                        for i in range(puts_per_txn)
                    ]
                    await kv.Txn(rpc_pb2.TxnRequest(success=ops), timeout=30)

            fast_reader = asyncio.create_task(read_fast())
            await asyncio.gather(*(writer(w) for w in range(writers)))  # completes although `slow` reads nothing
            await fast_reader
            slow_events: list[tuple[int, bytes]] = []
            for _ in range(txns * puts_per_txn):  # bounded: at most one response per event
                if len(slow_events) >= txns * puts_per_txn:
                    break
                slow_events.extend((e.kv.mod_revision, e.kv.key) for e in (await slow.next(30)).events)
            slow.close()
            fast.close()
        expected_revisions = list(range(start + 1, start + 1 + txns))
        for events in (fast_events, slow_events):
            assert len(events) == txns * puts_per_txn
            assert len(set(events)) == len(events), "an event was delivered twice"
            assert events == sorted(events), "events out of order"
            assert sorted({rev for rev, _ in events}) == expected_revisions

    run(scenario, server)


@pytest.mark.parametrize("kind", ["coord", "etcd"])
def test_half_closed_watch_keeps_delivering(kind: str, request: pytest.FixtureRequest) -> None:
    """A client that half-closes its watch stream after creating a watcher still gets the events, as from etcd."""
    target: ServerProcess = request.getfixturevalue("coord_server" if kind == "coord" else "etcd")
    with grpc.insecure_channel(target.endpoint) as ch:
        create = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"hc"))
        responses = rpc_pb2_grpc.WatchStub(ch).Watch(iter([create]), timeout=20)
        assert next(responses).created
        rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=b"hc", value=b"1"), timeout=10)
        event = next(responses)
        assert [(e.kv.key, e.kv.value) for e in event.events] == [(b"hc", b"1")]
        responses.cancel()
