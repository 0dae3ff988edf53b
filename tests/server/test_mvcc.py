"""The MVCC store on LMDB: revisions, historic reads, tombstones, key order, compaction and hashing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coord._proto.etcdserverpb import rpc_pb2
from coord._proto.mvccpb import kv_pb2
from coord.errors import COMPACTED, FUTURE_REV, MALFORMED_REQUEST
from coord.server.applier import Applier
from coord.server.mvcc import MvccError, MvccReader, MvccWriter
from coord.server.rejection import Rejected
from coord.server.requests import Kind, encode
from coord.server.storage import Backend
from coord.server.storage.log import LogEntry


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[Backend]:
    b = Backend(tmp_path, map_size=64 * 1024**2)
    yield b
    b.close()


def write(backend: Backend, *changes: tuple[str, bytes, bytes | None]) -> int:
    """Apply one write txn: ("put", key, value) or ("del", key, end); returns the store revision after it."""
    with backend.write() as txn:
        w = MvccWriter(backend, txn)
        for op, key, arg in changes:
            if op == "put":
                assert arg is not None
                w.put(key, arg, 0)
            else:
                w.delete_range(key, arg)
        return w.finish()


def read(
    backend: Backend, key: bytes, end: bytes | None = None, rev: int = 0
) -> list[tuple[bytes, bytes, int, int, int]]:
    with backend.read() as txn:
        kvs = MvccReader(backend, txn).range(key, end, rev).kvs
    return [(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version) for kv in kvs]


def test_revisions_follow_etcd(backend: Backend) -> None:
    assert write(backend, ("put", b"foo", b"a")) == 2
    assert write(backend, ("put", b"foo", b"b")) == 3
    assert read(backend, b"foo") == [(b"foo", b"b", 2, 3, 2)]
    # Deleting a missing key changes nothing, so the revision stays.
    assert write(backend, ("del", b"nope", None)) == 3
    assert write(backend, ("del", b"foo", None)) == 4
    assert read(backend, b"foo") == []
    # Re-creating starts a new generation.
    assert write(backend, ("put", b"foo", b"c")) == 5
    assert read(backend, b"foo") == [(b"foo", b"c", 5, 5, 1)]
    # Every change of one txn shares one revision.
    assert write(backend, ("put", b"x", b"1"), ("put", b"y", b"2"), ("del", b"foo", None)) == 6
    assert read(backend, b"\x00", b"") == [(b"x", b"1", 6, 6, 1), (b"y", b"2", 6, 6, 1)]


def test_historic_reads_see_each_revision(backend: Backend) -> None:
    write(backend, ("put", b"a", b"1"))  # 2
    write(backend, ("put", b"b", b"1"))  # 3
    write(backend, ("put", b"a", b"2"))  # 4
    write(backend, ("del", b"b", None))  # 5
    assert read(backend, b"a", b"c", rev=1) == []
    assert read(backend, b"a", b"c", rev=2) == [(b"a", b"1", 2, 2, 1)]
    assert read(backend, b"a", b"c", rev=3) == [(b"a", b"1", 2, 2, 1), (b"b", b"1", 3, 3, 1)]
    assert read(backend, b"a", b"c", rev=4) == [(b"a", b"2", 2, 4, 2), (b"b", b"1", 3, 3, 1)]
    assert read(backend, b"a", b"c", rev=5) == [(b"a", b"2", 2, 4, 2)]
    with pytest.raises(MvccError) as err:
        read(backend, b"a", b"c", rev=6)
    assert err.value.spec is FUTURE_REV


def test_keys_with_nul_bytes_keep_byte_order(backend: Backend) -> None:
    keys = [b"a", b"a\x00", b"a\x00\x00", b"a\x00\x01", b"a\x01", b"a\xff", b"ab", b"\x00", b"\x00\x00", b"\xff\xff"]
    for k in keys:
        write(backend, ("put", k, k))
    assert [kv[0] for kv in read(backend, b"\x00", b"")] == sorted(keys)
    assert [kv[0] for kv in read(backend, b"a", b"b")] == sorted(k for k in keys if b"a" <= k < b"b")
    assert [kv[0] for kv in read(backend, b"a\x00", b"a\x01")] == [b"a\x00", b"a\x00\x00", b"a\x00\x01"]
    assert read(backend, b"a\x00") == [(b"a\x00", b"a\x00", 3, 3, 1)]


@settings(max_examples=60, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.booleans(), st.binary(min_size=1, max_size=3), st.binary(max_size=3)), min_size=1, max_size=25
    ),
    lo=st.binary(min_size=1, max_size=2),
    hi=st.binary(max_size=2),
)
def test_ranges_match_a_model_at_every_revision(tmp_path_factory: pytest.TempPathFactory, ops, lo, hi) -> None:  # type: ignore[no-untyped-def]
    backend = Backend(tmp_path_factory.mktemp("model"), map_size=16 * 1024**2)
    try:
        model: dict[bytes, bytes] = {}
        history = {1: {}}
        for is_put, key, value in ops:
            if is_put:
                model[key] = value
                rev = write(backend, ("put", key, value))
            else:
                model.pop(key, None)
                rev = write(backend, ("del", key, None))
            history[rev] = dict(model)
        for rev, state in history.items():
            want = sorted((k, v) for k, v in state.items() if lo <= k and (not hi or k < hi))
            got = [(k, v) for k, v, *_ in read(backend, lo, hi, rev=rev)]
            assert got == want
    finally:
        backend.close()


def test_compaction_removes_history_from_disk(backend: Backend) -> None:
    for i in range(5):
        write(backend, ("put", b"k", b"%d" % i))  # revisions 2..6
    write(backend, ("put", b"gone", b"x"))  # 7
    write(backend, ("del", b"gone", None))  # 8
    with backend.write() as txn:
        MvccWriter(backend, txn).compact(7)
    # Reading at exactly the compact revision works; below it is refused.
    assert read(backend, b"k", rev=7) == [(b"k", b"4", 2, 6, 5)]
    assert read(backend, b"gone", rev=7) == [(b"gone", b"x", 7, 7, 1)]
    with pytest.raises(MvccError) as err:
        read(backend, b"k", rev=6)
    assert err.value.spec is COMPACTED
    with backend.read() as txn:
        stored_revisions = [bytes(k) for k, _ in txn.cursor(db=backend.revisions)]
        stored_versions = txn.stat(backend.key_index)["entries"]
    # Only k@6, gone@7 and the tombstone gone@8 remain.
    assert len(stored_revisions) == 3
    assert stored_versions == 3
    with backend.write() as txn:
        MvccWriter(backend, txn).compact(8)
    with backend.read() as txn:
        assert txn.stat(backend.key_index)["entries"] == 1  # the tombstone and what it buried are gone
    with pytest.raises(MvccError) as err, backend.write() as txn:
        MvccWriter(backend, txn).compact(8)
    assert err.value.spec is COMPACTED
    with pytest.raises(MvccError) as err, backend.write() as txn:
        MvccWriter(backend, txn).compact(9)
    assert err.value.spec is FUTURE_REV


def test_history_keeps_every_state_of_a_key_changed_twice_in_one_revision(backend: Backend, tmp_path: Path) -> None:
    # A txn may put a key and then delete it with a from-key range: etcd's history (and so a replaying watch) has both
    # sub-revisions, the PUT then the DELETE, each with the key's state before the revision as its previous version.
    write(backend, ("put", b"k", b"old"))  # 2
    assert write(backend, ("put", b"k", b"new"), ("put", b"other", b"o"), ("del", b"k", b"")) == 3
    with backend.read() as txn:
        groups, following = MvccReader(backend, txn).history(3, 3, 100)
    assert following == 4
    ((revision, events),) = groups
    assert revision == 3
    described = [(e.type, e.kv.key, e.kv.value, e.kv.version, e.prev_kv.value if e.prev_kv else None) for e in events]
    assert described == [
        (kv_pb2.Event.PUT, b"k", b"new", 2, b"old"),
        (kv_pb2.Event.PUT, b"other", b"o", 1, None),
        (kv_pb2.Event.DELETE, b"k", b"", 0, b"old"),
        (kv_pb2.Event.DELETE, b"other", b"", 0, None),
    ]
    assert read(backend, b"k", rev=2) == [(b"k", b"old", 2, 2, 1)] and read(backend, b"k") == []
    # HashKV covers the overwritten state: it differs from the same revision without it, and another store with the
    # same history (another member) agrees.
    twin = Backend(tmp_path / "twin", map_size=64 * 1024**2)
    try:
        write(twin, ("put", b"k", b"old"))
        write(twin, ("put", b"k", b"new"), ("put", b"other", b"o"), ("del", b"k", b""))
        without = Backend(tmp_path / "without", map_size=64 * 1024**2)
        try:
            write(without, ("put", b"k", b"old"))
            write(without, ("put", b"other", b"o"), ("del", b"k", b""))
            with backend.read() as a, twin.read() as b, without.read() as c:
                mine = MvccReader(backend, a).hash_kv(0)
                assert mine == MvccReader(twin, b).hash_kv(0)
                assert mine != MvccReader(without, c).hash_kv(0)
        finally:
            without.close()
    finally:
        twin.close()
    write(backend, ("put", b"later", b"x"))  # 4
    with backend.write() as txn:
        MvccWriter(backend, txn).compact(4)  # drops the overwritten state with the rest of revision 3
    with backend.read() as txn:
        stored = [bytes(k) for k, _ in txn.cursor(db=backend.revisions)]
    assert stored == [(4).to_bytes(8, "big") + (0).to_bytes(8, "big")]


def test_hash_is_a_function_of_history(tmp_path: Path) -> None:
    def build(name: str, compact: int | None) -> tuple[int, int]:
        b = Backend(tmp_path / name, map_size=16 * 1024**2)
        for i in range(10):
            write(b, ("put", b"k%d" % (i % 3), b"v%d" % i))
        if compact:
            with b.write() as txn:
                MvccWriter(b, txn).compact(compact)
        with b.read() as txn:
            h = MvccReader(b, txn).hash_kv(0)
            h_at_5 = MvccReader(b, txn).hash_kv(8)
        b.close()
        return h[0], h_at_5[0]

    a, b, c = build("a", None), build("b", None), build("c", 5)
    assert a == b
    assert c != a  # compaction changes what is kept, and the hash says so
    with pytest.raises(MvccError):
        build_future = Backend(tmp_path / "d", map_size=16 * 1024**2)
        try:
            with build_future.read() as txn:
                MvccReader(build_future, txn).hash_kv(5)
        finally:
            build_future.close()


def test_an_undecodable_entry_is_refused_not_fatal(tmp_path: Path) -> None:
    """A log entry whose request cannot be decoded is answered with a refusal and marked applied (deterministic on
    every member); the store is unchanged and the next entry applies normally."""
    backend = Backend(tmp_path, map_size=64 * 1024**2)
    applier = Applier(backend, min_lease_ttl=2)
    garbage = bytes([Kind.PUT]) + (7).to_bytes(8, "big") + b"\xff\xff\xff"
    with backend.write() as txn:
        bad = applier.apply(txn, LogEntry(5, 1, 0, garbage))
        good = applier.apply(txn, LogEntry(6, 1, 0, encode(Kind.PUT, 8, rpc_pb2.PutRequest(key=b"k", value=b"v"))))
    assert bad.request_id == 7
    assert isinstance(bad.result, Rejected) and bad.result.spec is MALFORMED_REQUEST
    assert bad.events == []
    assert isinstance(good.result, rpc_pb2.PutResponse) and good.revision == 2
    with backend.read() as txn:
        assert applier.applied_index(txn) == 6
    backend.close()
