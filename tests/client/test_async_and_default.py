"""The asyncio API used directly, the module-level default client, and tracing spans."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext

import coord
from coord.client import _tracing
from tests.client.conftest import Backend


def test_async_client(backend: Backend) -> None:
    backend.require("kv")

    async def scenario() -> None:
        async with coord.AsyncClient([backend.endpoint], timeout=5) as client:
            put = await client.put("a", b"\x00\xff")
            got = await client.get(b"a")
            assert got.value == b"\x00\xff" and got.revision == put.revision
            results = await asyncio.gather(*(client.put(f"p/{i}", str(i)) for i in range(20)))
            assert len({r.revision for r in results}) == 20
            assert (await client.range("p/", prefix=True, count_only=True)).count == 20

    asyncio.run(scenario())


def test_async_watch_iterator(backend: Backend) -> None:
    backend.require("kv", "watch")

    async def scenario() -> list[bytes]:
        async with coord.AsyncClient(backend.endpoint, timeout=5) as client, await client.watch("w") as watcher:
            await client.put("w", "1")
            await client.put("w", "2")
            return [(await asyncio.wait_for(anext(watcher), 5)).value for _ in range(2)]

    assert asyncio.run(scenario()) == [b"1", b"2"]


@pytest.fixture
def clean_default() -> Iterator[None]:
    previous = coord.set_default_client(None)
    try:
        yield
    finally:
        mine = coord.set_default_client(previous)
        if mine is not None:
            mine.close()


def test_default_client_from_environment(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, clean_default: None
) -> None:
    backend.require("kv")
    monkeypatch.setenv("COORD_ENDPOINTS", f"127.0.0.1:1, {backend.endpoint}")
    client = coord.default_client()
    assert client is coord.default_client()
    assert client.endpoints == ["127.0.0.1:1", backend.endpoint]
    client.put("via-default", "v")
    assert client.get("via-default").value == b"v"


def test_default_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COORD_ENDPOINTS", raising=False)
    with coord.connect() as client:
        assert client.endpoints == ["127.0.0.1:2379"]


class _RecordingTracer(trace.Tracer):
    def __init__(self, names: list[str]) -> None:
        self.names = names

    def start_span(self, name: str, *args: Any, **kwargs: Any) -> Span:
        self.names.append(name)
        return NonRecordingSpan(SpanContext(0, 0, False))

    def start_as_current_span(self, name: str, *args: Any, **kwargs: Any) -> Any:
        self.names.append(name)
        return trace.use_span(NonRecordingSpan(SpanContext(0, 0, False)), end_on_exit=True)


def test_spans_are_named_per_operation(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    backend.require("kv", "lease")
    names: list[str] = []
    monkeypatch.setattr(_tracing, "_tracer", _RecordingTracer(names))
    with coord.connect(backend.endpoint, timeout=5) as client:
        client.put("t", "v")
        client.get("t")
        client.session(ttl=5).close()
    for expected in ("coord.client.put", "coord.client.range", "coord.client.lease_grant"):
        assert expected in names
    assert "coord.client.session_transition" in names
    assert all(n.startswith("coord.client.") for n in names)
