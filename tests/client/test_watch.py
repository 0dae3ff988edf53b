"""Watch: iterator and callback forms, options, progress, compaction re-sync (single member; failover is in
test_failover.py)."""

from __future__ import annotations

import queue
from collections.abc import Iterator

import pytest

import coord
from coord import WatchEventType
from coord.errors import CompactedError, WatchCanceledError
from tests.client._proxy import PausableProxy
from tests.client.conftest import Backend


@pytest.fixture
def client(backend: Backend) -> Iterator[coord.Client]:
    backend.require("kv", "watch")
    with coord.connect(backend.endpoint, timeout=5) as c:
        yield c


def test_iterator_delivers_puts_and_deletes_in_order(client: coord.Client) -> None:
    with client.watch("w/", prefix=True, prev_kv=True) as watcher:
        client.put("w/a", "1")
        client.put("w/a", "2")
        client.put("other", "x")
        client.delete("w/a")
        events = [watcher.next(timeout=5) for _ in range(3)]
    assert [(e.type, e.key, e.value) for e in events] == [
        (WatchEventType.PUT, b"w/a", b"1"),
        (WatchEventType.PUT, b"w/a", b"2"),
        (WatchEventType.DELETE, b"w/a", b""),
    ]
    assert events[1].prev_kv is not None and events[1].prev_kv.value == b"1"
    assert events[0].revision < events[1].revision < events[2].revision
    assert not any(e.resynced for e in events)


def test_start_revision_replays_history(client: coord.Client) -> None:
    first = client.put("h", "1")
    client.put("h", "2")
    with client.watch("h", start_revision=first.revision) as watcher:
        assert [watcher.next(timeout=5).value for _ in range(2)] == [b"1", b"2"]


def test_filters(client: coord.Client) -> None:
    with client.watch("f", no_put=True) as watcher:
        client.put("f", "1")
        client.delete("f")
        event = watcher.next(timeout=5)
    assert event.type is WatchEventType.DELETE


def test_callback_form(client: coord.Client) -> None:
    seen: queue.Queue[coord.WatchEvent] = queue.Queue()
    watcher = client.add_watch_callback("cb", seen.put)
    try:
        client.put("cb", "1")
        client.put("cb", "2")
        assert [seen.get(timeout=5).value, seen.get(timeout=5).value] == [b"1", b"2"]
    finally:
        watcher.cancel()


def test_callback_may_call_the_client(client: coord.Client) -> None:
    # Sync callbacks run in a worker thread, so they can make blocking calls without deadlocking the loop.
    results: queue.Queue[bytes | None] = queue.Queue()
    watcher = client.add_watch_callback("src", lambda ev: results.put(client.get("src").value))
    try:
        client.put("src", "v")
        assert results.get(timeout=5) == b"v"
    finally:
        watcher.cancel()


def test_progress(client: coord.Client) -> None:
    with client.watch("idle", progress_notify=True) as watcher:
        put = client.put("elsewhere", "x")
        revision = watcher.request_progress(timeout=5)
        assert revision >= put.revision
        assert watcher.revision >= put.revision


def test_watch_from_compacted_revision_is_refused(client: coord.Client) -> None:
    first = client.put("c", "1")
    latest = client.put("c", "2")
    client.put("c", "3")
    client.compact(latest.revision)
    with pytest.raises(CompactedError):
        client.watch("c", start_revision=first.revision)


def test_compaction_while_disconnected_resyncs(backend: Backend) -> None:
    # Fault: the watcher's connection is cut and refused while the range changes and history is compacted.
    # Guarantee: on reconnect it re-reads the range and delivers the difference, flagged resynced, then goes on.
    backend.require("kv", "watch")
    proxy = PausableProxy(backend.endpoint)
    try:
        with coord.connect(backend.endpoint, timeout=5) as writer, coord.connect(proxy.endpoint, timeout=5) as reader:
            writer.put("c/keep", "0")
            writer.put("c/gone", "0")
            with reader.watch("c/", prefix=True) as watcher:
                writer.put("c/keep", "1")
                first = watcher.next(timeout=5)
                proxy.cut()
                writer.put("c/keep", "2")
                writer.delete("c/gone")
                writer.put("c/new", "3")
                latest = writer.put("c/keep", "4")
                writer.compact(latest.revision)
                proxy.restore()
                resynced = [watcher.next(timeout=10) for _ in range(3)]
                writer.put("c/after", "5")
                after = watcher.next(timeout=10)
    finally:
        proxy.close()
    assert first.value == b"1" and not first.resynced
    assert sorted((e.type.value, e.key, e.value) for e in resynced) == [
        ("DELETE", b"c/gone", b""),
        ("PUT", b"c/keep", b"4"),
        ("PUT", b"c/new", b"3"),
    ]
    assert all(e.resynced for e in resynced)
    assert after.key == b"c/after" and not after.resynced


def test_filtered_watch_cannot_resync(backend: Backend) -> None:
    backend.require("kv", "watch")
    proxy = PausableProxy(backend.endpoint)
    try:
        with coord.connect(backend.endpoint, timeout=5) as writer, coord.connect(proxy.endpoint, timeout=5) as reader:
            watcher = reader.watch("x", no_delete=True)
            proxy.cut()
            writer.put("x", "1")
            latest = writer.put("x", "2")
            writer.compact(latest.revision)
            proxy.restore()
            with pytest.raises(WatchCanceledError) as info:
                watcher.next(timeout=10)
            watcher.cancel()
    finally:
        proxy.close()
    assert info.value.compact_revision == latest.revision


def test_cancel_ends_iteration(client: coord.Client) -> None:
    watcher = client.watch("z")
    watcher.cancel()
    with pytest.raises(StopIteration):
        watcher.next(timeout=5)


def test_watch_from_a_future_revision(client: coord.Client) -> None:
    now = client.put("fut", "0").revision
    with client.watch("fut", start_revision=now + 2) as watcher:
        client.put("fut", "1")  # now + 1: before the start, not delivered
        client.put("fut", "2")  # now + 2
        event = watcher.next(timeout=5)
    assert (event.value, event.revision) == (b"2", now + 2)


def test_a_failing_callback_reports_to_on_error(client: coord.Client) -> None:
    errors: queue.Queue[BaseException] = queue.Queue()

    def explode(event: coord.WatchEvent) -> None:
        raise ValueError(event.value)

    watcher = client.add_watch_callback("boom", explode, on_error=errors.put)
    try:
        client.put("boom", "1")
        error = errors.get(timeout=5)
        assert isinstance(error, ValueError) and error.args == (b"1",)
    finally:
        watcher.cancel()
