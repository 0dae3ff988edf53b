"""The etcd3gw client (PyPI ``etcd3gw``, a client of etcd's JSON gateway) against coord-server's gateway and against
real etcd's: put, get, delete, prefixes, transactions, watch, leases and locks behave the same on both.

etcd3gw finds the API path from GET /version (3.4 and later: ``/v3/``) and talks to ``http://host:port``; coord's
gateway listens on its HTTP port, etcd's on its client port.
"""

from __future__ import annotations

import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import etcd3gw
import pytest

from coord.testing import ServerProcess, start_coord_server, start_etcd
from tests.conftest import require_etcd


@pytest.fixture(scope="module", params=["coord", "etcd"])
def client(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    data_dir: Path = tmp_path_factory.mktemp(f"etcd3gw-{request.param}") / "data"
    if request.param == "etcd":
        require_etcd()
        server: ServerProcess = start_etcd(data_dir)
        url = server.url
    else:
        server = start_coord_server(data_dir)
        url = server.extra["http_url"]
    try:
        parts = urllib.parse.urlsplit(url)
        yield etcd3gw.client(host=parts.hostname, port=parts.port, timeout=30)
    finally:
        server.stop()


def test_discovers_the_v3_api(client: Any) -> None:
    assert client.api_path == "/v3/"
    assert client.status()["version"].startswith("3.4")
    assert len(client.members()) == 1


def test_put_get_delete(client: Any) -> None:
    assert client.put("gw/a", "1") is True
    assert client.put("gw/b", b"\x00\xff") is True
    assert client.get("gw/a") == [b"1"]
    assert client.get("gw/b") == [b"\x00\xff"]
    assert client.get("gw/missing") == []
    assert sorted(value for value, _ in client.get_prefix("gw/")) == [b"\x00\xff", b"1"]
    assert client.delete("gw/a") is True
    assert client.delete("gw/a") is False
    assert client.delete_prefix("gw/") is True
    assert client.get_prefix("gw/") == []


def test_create_and_replace_are_transactions(client: Any) -> None:
    assert client.create("cr/x", "1") is True
    assert client.create("cr/x", "2") is False
    assert client.replace("cr/x", "1", "3") is True
    assert client.replace("cr/x", "1", "4") is False
    assert client.get("cr/x") == [b"3"]


def test_watch(client: Any) -> None:
    events, cancel = client.watch("wk")
    seen: list[Any] = []

    def consume() -> None:
        for event in events:
            seen.append(event)
            if len(seen) == 2:
                return

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    try:
        client.put("wk", "v1")
        client.delete("wk")
        consumer.join(timeout=20)
    finally:
        cancel()
    assert [(e.get("type", "PUT"), e["kv"]["key"]) for e in seen] == [("PUT", b"wk"), ("DELETE", b"wk")]
    assert seen[0]["kv"]["value"] == b"v1"


def test_watch_once(client: Any) -> None:
    # (etcd3gw's watch_prefix* send a range end etcd itself does not match; only single-key watches are checked.)
    result: list[Any] = []
    waiter = threading.Thread(target=lambda: result.append(client.watch_once("wp/1", timeout=20)), daemon=True)
    waiter.start()
    deadline = time.monotonic() + 20
    while waiter.is_alive() and not result and time.monotonic() < deadline:
        client.put("wp/1", "x")  # until the watcher is in place; each put is an event it may see
        waiter.join(timeout=0.2)
    waiter.join(timeout=20)
    assert result and result[0]["kv"]["key"] == b"wp/1"


def test_leases(client: Any) -> None:
    lease = client.lease(ttl=30)
    client.put("lk/1", "v", lease=lease)
    assert 0 < lease.ttl() <= 30
    assert lease.refresh() == 30
    assert lease.keys() == [b"lk/1"]
    assert lease.revoke() is True
    assert client.get("lk/1") == []
    assert lease.ttl() == -1


def test_locks(client: Any) -> None:
    first = client.lock("gwlock", ttl=30)
    second = client.lock("gwlock", ttl=30)
    assert first.acquire() is True
    assert first.is_acquired() is True
    assert second.acquire() is False  # etcd3gw's lock is a create-if-absent transaction: no waiting
    assert first.refresh() == 30
    assert first.release() is True
    assert second.acquire() is True
    assert second.release() is True
    with client.lock("gwlock", ttl=30) as held:
        assert held.is_acquired() is True
