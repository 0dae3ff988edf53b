"""KV behaviour through the blocking Client (which runs the AsyncClient underneath), on etcd and coord-server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import coord
from coord import CreateRevision, Delete, Get, LeaseId, ModRevision, Put, SortOrder, SortTarget, Txn, Value, Version
from coord.errors import (
    CompactedError,
    DuplicateKeyError,
    EmptyKeyError,
    FutureRevisionError,
    KeyNotFoundError,
    ValueProvidedError,
)
from tests.client.conftest import Backend


@pytest.fixture
def client(backend: Backend) -> Iterator[coord.Client]:
    backend.require("kv")
    with coord.connect(backend.endpoint, timeout=5) as c:
        yield c


def test_put_get_revisions(client: coord.Client) -> None:
    first = client.put("foo", "bar")
    got = client.get("foo")
    assert got.value == b"bar"
    assert got.kv is not None
    assert (got.kv.create_revision, got.kv.mod_revision, got.kv.version) == (first.revision,) * 2 + (1,)
    second = client.put(b"foo", b"baz", prev_kv=True)
    assert second.revision == first.revision + 1
    assert second.prev_kv is not None and second.prev_kv.value == b"bar"
    kv = client.get("foo").kv
    assert kv is not None and (kv.version, kv.mod_revision, kv.create_revision) == (2, second.revision, first.revision)
    assert client.get("missing").kv is None
    assert client.get("missing").value is None
    assert client.get("foo", revision=first.revision).value == b"bar"


def test_range_options(client: coord.Client) -> None:
    for i, name in enumerate(["a/1", "a/2", "a/3", "b/1"]):
        client.put(name, str(3 - i))
    assert [kv.key for kv in client.range("a/", prefix=True).kvs] == [b"a/1", b"a/2", b"a/3"]
    assert [kv.key for kv in client.range("a/2", "b/").kvs] == [b"a/2", b"a/3"]
    assert [kv.key for kv in client.range("a/3", from_key=True).kvs] == [b"a/3", b"b/1"]
    assert client.range("", prefix=True).count == 4
    limited = client.range("a/", prefix=True, limit=2)
    assert len(limited.kvs) == 2 and limited.more and limited.count == 3
    desc = client.range("a/", prefix=True, sort_order=SortOrder.DESCEND, sort_target=SortTarget.VALUE)
    assert [kv.value for kv in desc.kvs] == [b"3", b"2", b"1"]
    keys_only = client.range("a/", prefix=True, keys_only=True)
    assert all(kv.value == b"" for kv in keys_only.kvs) and len(keys_only.kvs) == 3
    count_only = client.range("a/", prefix=True, count_only=True)
    assert count_only.kvs == () and count_only.count == 3
    a2 = client.get("a/2").kv
    assert a2 is not None
    newer = client.range("a/", prefix=True, min_mod_revision=a2.mod_revision)
    assert [kv.key for kv in newer.kvs] == [b"a/2", b"a/3"]
    older = client.range("a/", prefix=True, max_create_revision=a2.create_revision)
    assert [kv.key for kv in older.kvs] == [b"a/1", b"a/2"]
    assert client.get("a/1", serializable=True).value == b"3"
    with pytest.raises(ValueError):
        client.range("a/", "b/", prefix=True)


def test_delete(client: coord.Client) -> None:
    for name in ["d/1", "d/2", "e"]:
        client.put(name, "v")
    before = client.get("e").revision
    gone = client.delete("d/", prefix=True, prev_kv=True)
    assert gone.deleted == 2 and sorted(kv.key for kv in gone.prev_kvs) == [b"d/1", b"d/2"]
    assert gone.revision == before + 1
    assert client.range("d/", prefix=True).count == 0
    nothing = client.delete("nope")
    assert nothing.deleted == 0 and nothing.revision == gone.revision  # a no-op delete does not bump the revision


def test_txn_compare_builder(client: coord.Client) -> None:
    put = client.put("k", "v")
    result = client.txn(
        compare=[
            Value("k") == "v",
            Version("k") == 1,
            CreateRevision("k") == put.revision,
            ModRevision("k") < put.revision + 1,
            LeaseId("k") == 0,
            Value("k") != "w",
            Version("k") > 0,
        ],
        success=[Put("k", "w", prev_kv=True), Get("k"), Put("other", "x")],
        failure=[Get("k")],
    )
    assert result.succeeded
    assert result.revision == put.revision + 1
    put_result, get_result, _ = result.responses
    assert isinstance(put_result, coord.PutResult) and put_result.prev_kv is not None
    assert put_result.prev_kv.value == b"v"
    assert isinstance(get_result, coord.GetResult) and get_result.value == b"w"

    failed = client.txn([Value("k") == "v"], [Put("k", "never")], [Get("k"), Delete("other")])
    assert not failed.succeeded
    assert isinstance(failed.responses[0], coord.GetResult) and failed.responses[0].value == b"w"
    assert isinstance(failed.responses[1], coord.DeleteResult) and failed.responses[1].deleted == 1

    # A missing key: CreateRevision 0; a value compare is false.
    create = client.txn([CreateRevision("new") == 0], [Put("new", "1")], [])
    assert create.succeeded
    assert not client.txn([Value("absent") == ""], [], []).succeeded
    # Range compare: every key under the prefix.
    client.put("r/1", "same")
    client.put("r/2", "same")
    assert client.txn([Value("r/", prefix=True) == "same"], [], []).succeeded


def test_nested_txn_and_read_only_txn(client: coord.Client) -> None:
    client.put("n", "1")
    outer = client.txn([], [Txn([Value("n") == "1"], [Put("n", "2")], [])], [])
    inner = outer.responses[0]
    assert isinstance(inner, coord.TxnResult) and inner.succeeded
    read = client.txn([Version("n") > 0], [Get("n")], [])
    assert isinstance(read.responses[0], coord.GetResult) and read.responses[0].value == b"2"


def test_compare_operands_are_checked() -> None:
    with pytest.raises(TypeError):
        Version("k") == "1"  # noqa: B015
    with pytest.raises(TypeError):
        Value("k") == 1  # noqa: B015
    with pytest.raises(TypeError):
        hash(Value("k"))


def test_compact_and_history(client: coord.Client) -> None:
    first = client.put("h", "1")
    second = client.put("h", "2")
    client.put("h", "3")
    client.compact(second.revision)
    assert client.get("h", revision=second.revision).value == b"2"  # reading at the compact revision works
    with pytest.raises(CompactedError):
        client.get("h", revision=first.revision)
    with pytest.raises(CompactedError):
        client.compact(first.revision)
    with pytest.raises(FutureRevisionError):
        client.get("h", revision=second.revision + 100)


def test_typed_errors(client: coord.Client) -> None:
    with pytest.raises(EmptyKeyError) as info:
        client.put("", "v")
    assert info.value.details == "etcdserver: key is not provided"
    with pytest.raises(KeyNotFoundError):
        client.put("missing", "", ignore_value=True)
    client.put("present", "v")
    with pytest.raises(ValueProvidedError):
        client.put("present", "x", ignore_value=True)
    with pytest.raises(DuplicateKeyError):
        client.txn([], [Put("dup", "1"), Put("dup", "2")], [])
    kept = client.put("present", "", ignore_value=True)
    assert kept.revision > 0 and client.get("present").value == b"v"


def test_status(backend: Backend) -> None:
    backend.require("status")
    with coord.connect(backend.endpoint, timeout=5) as client:
        status = client.status()
        assert status.leader == status.member_id != 0
        assert status.raft_term >= 1 and status.db_size > 0 and status.version
