"""Snapshots and defragment: the coord snapshot file, ``coord-server snapshot restore``, Maintenance.Snapshot and
Maintenance.Defragment.

In-process tests check the file format (checksum, refusal of damaged or foreign files), the reader gate and the
compact-copy swap of the LMDB environment. Process tests run coord-server on 127.0.0.1 (every process stopped by PID):
a snapshot streamed over gRPC restores into a new single member and a new 3-member cluster holding the same keys,
history, leases and HashKV; Defragment under a concurrent write load loses no acknowledged write and shrinks the file.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from coord._proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from coord.server.membership import load_members, stored_identity
from coord.server.mvcc import MvccReader, MvccWriter
from coord.server.restore import RestoreError, restore
from coord.server.snapshot_file import FORMAT_VERSION, SnapshotFileError, read_snapshot, write_snapshot
from coord.server.storage import Backend
from coord.server.storage.backend import STATE_DBS
from coord.server.storage.readgate import ReaderGate, ReadersBusyError
from coord.testing import ServerProcess, free_port, start_coord_server, wait_for_port
from tests.faults._cluster_ops import WriteLoad, hash_kv, status

MAP = 64 * 1024**2


# ---------------------------------------------------------------------------------------------- in-process: the file


def _fill(backend: Backend, keys: int, value: bytes = b"v") -> int:
    with backend.write() as txn:
        w = MvccWriter(backend, txn)
        for i in range(keys):
            w.put(b"k/%05d" % i, value, 0)
        return w.finish()


def _state(backend: Backend) -> dict[bytes, list[tuple[bytes, bytes]]]:
    with backend.read() as txn:
        out = {}
        for name, db in backend.state_dbs().items():
            with txn.cursor(db=db) as cursor:
                out[name] = list(cursor)
        return out


@pytest.fixture
def source(tmp_path: Path) -> Iterator[Backend]:
    b = Backend(tmp_path / "source", map_size=MAP)
    _fill(b, 300)
    with b.write() as txn:
        w = MvccWriter(b, txn)
        w.delete_range(b"k/00000", b"k/00010")
        w.finish()
    yield b
    b.close()


def test_snapshot_file_round_trip(source: Backend, tmp_path: Path) -> None:
    path, info = write_snapshot(source, tmp_path / "spool")
    assert info.format_version == FORMAT_VERSION and info.revision == 3 and info.size == path.stat().st_size
    # etcdctl snapshot save refuses a stream whose size is not 32 (the sha256) more than a multiple of 512.
    assert info.size % 512 == 32
    assert path.read_bytes().startswith(b"coord-snapshot/1 revision=3 ")
    assert read_snapshot(path) == info

    restored = restore(
        path,
        tmp_path / "restored",
        name="a",
        initial_cluster="a=http://127.0.0.1:1,b=http://127.0.0.1:2",
        initial_cluster_token="t",
        initial_advertise_peer_urls=["http://127.0.0.1:1"],
    )
    assert restored.snapshot == info
    copy = Backend(tmp_path / "restored", map_size=MAP)
    try:
        want, got = _state(source), _state(copy)
        for name in STATE_DBS:
            if name != b"members":
                assert got[name] == want[name], name
        with source.read() as txn:
            source_hash = MvccReader(source, txn).hash_kv(0)
        with copy.read() as txn:
            view = MvccReader(copy, txn)
            assert view.current_revision == 3
            assert [kv.key for kv in view.range(b"k/", b"k0", 0).kvs][:2] == [b"k/00010", b"k/00011"]
            assert view.hash_kv(0) == source_hash
            # The new cluster's member table and identity, not the source's (which had none).
            assert sorted(m.name for m in load_members(copy, txn).values()) == ["a", "b"]
        assert stored_identity(copy) == (restored.member_id, restored.cluster_id)
    finally:
        copy.close()


@pytest.mark.parametrize("offset", [5, 200, -40, -1])
def test_a_damaged_snapshot_is_refused(source: Backend, tmp_path: Path, offset: int) -> None:
    path, _ = write_snapshot(source, tmp_path / "spool")
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(SnapshotFileError, match=r"damaged|not a coord snapshot|format version"):
        read_snapshot(path)
    with pytest.raises(SnapshotFileError):
        restore(
            path,
            tmp_path / "restored",
            name="a",
            initial_cluster="",
            initial_cluster_token="t",
            initial_advertise_peer_urls=["http://127.0.0.1:1"],
        )
    assert not (tmp_path / "restored").exists()
    assert not (tmp_path / "restored.restoring").exists()


def test_truncated_foreign_and_future_files_are_refused(source: Backend, tmp_path: Path) -> None:
    path, _ = write_snapshot(source, tmp_path / "spool")
    truncated = tmp_path / "truncated"
    truncated.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(SnapshotFileError, match="damaged"):
        read_snapshot(truncated)
    bbolt = tmp_path / "etcd.db"
    bbolt.write_bytes(bytes(16) + b"\xed\xda\x0c\xed" + bytes(4096))
    with pytest.raises(SnapshotFileError, match="etcd snapshot"):
        read_snapshot(bbolt)
    future = tmp_path / "future"
    future.write_bytes(path.read_bytes().replace(b"coord-snapshot/1 ", b"coord-snapshot/9 ", 1))
    with pytest.raises(SnapshotFileError, match="version 9 is not supported"):
        read_snapshot(future)


def test_restore_refuses_an_existing_data_dir_and_inconsistent_flags(source: Backend, tmp_path: Path) -> None:
    path, _ = write_snapshot(source, tmp_path / "spool")
    (tmp_path / "exists").mkdir()
    with pytest.raises(RestoreError, match="exists"):
        restore(path, tmp_path / "exists", name="a", initial_cluster="", initial_cluster_token="t",
                initial_advertise_peer_urls=["http://127.0.0.1:1"])  # fmt: skip
    with pytest.raises(RestoreError, match="no member named 'c'"):
        restore(path, tmp_path / "new", name="c", initial_cluster="a=http://127.0.0.1:1", initial_cluster_token="t",
                initial_advertise_peer_urls=["http://127.0.0.1:1"])  # fmt: skip
    with pytest.raises(RestoreError, match="initial-advertise-peer-urls"):
        restore(path, tmp_path / "new", name="a", initial_cluster="a=http://127.0.0.1:1", initial_cluster_token="t",
                initial_advertise_peer_urls=["http://127.0.0.1:2"])  # fmt: skip
    assert not (tmp_path / "new").exists()


# ------------------------------------------------------------------------------- in-process: gate, copy and swap


def test_reader_gate_holds_thread_readers_and_waits_for_those_in_flight() -> None:
    """run_exclusive waits for a reader in flight on another thread, holds readers that come later on other threads
    until it is done, and lets readers on its own thread pass."""
    gate = ReaderGate()
    order: list[str] = []
    in_flight, release = threading.Event(), threading.Event()

    def long_reader() -> None:
        with gate.reading():
            in_flight.set()
            release.wait(10)
            order.append("long reader done")

    def late_reader() -> None:
        with gate.reading():
            order.append("late reader")

    def swap() -> str:
        order.append("swap")
        with gate.reading():
            order.append("own reader")
        return "swapped"

    async def scenario() -> None:
        first = threading.Thread(target=long_reader)
        first.start()
        assert in_flight.wait(10)
        exclusive = asyncio.create_task(gate.run_exclusive(swap, timeout=30))
        await asyncio.sleep(0.05)
        late = threading.Thread(target=late_reader)
        late.start()
        await asyncio.sleep(0.1)
        assert order == []  # the swap waits for the first reader; the late one waits for the swap
        release.set()
        assert await exclusive == "swapped"
        for thread in (first, late):
            await asyncio.to_thread(thread.join, 10)

    asyncio.run(scenario())
    assert order == ["long reader done", "swap", "own reader", "late reader"]


def test_reader_gate_gives_up_when_readers_do_not_finish() -> None:
    gate = ReaderGate()
    in_flight, release = threading.Event(), threading.Event()

    def stuck_reader() -> None:
        with gate.reading():
            in_flight.set()
            release.wait(10)

    worker = threading.Thread(target=stuck_reader)
    worker.start()
    try:
        assert in_flight.wait(10)
        ran: list[bool] = []
        with pytest.raises(ReadersBusyError):
            asyncio.run(gate.run_exclusive(lambda: ran.append(True), timeout=0.2))
        assert ran == []
    finally:
        release.set()
        worker.join(10)
    with gate.reading():  # the gate is open again
        pass


def test_compact_copy_swap_shrinks_the_file_and_keeps_the_data(tmp_path: Path) -> None:
    backend = Backend(tmp_path / "m", map_size=MAP)
    try:
        _fill(backend, 3000, b"x" * 1000)
        with backend.write() as txn:
            w = MvccWriter(backend, txn)
            w.delete_range(b"k/", b"k0")
            revision = w.finish()
        with backend.write() as txn:
            MvccWriter(backend, txn).compact(revision)
        _fill(backend, 5)
        before, state = backend.size(), _state(backend)
        copy = tmp_path / "copy.mdb"
        backend.compact_copy(copy)

        async def swap() -> None:
            await backend.gate.run_exclusive(lambda: backend.replace_data_file(copy), timeout=10)

        asyncio.run(swap())
        assert backend.size() < before / 4
        assert _state(backend) == state
        _fill(backend, 5, b"after")  # writable after the swap
        with backend.read() as txn:
            assert MvccReader(backend, txn).get(b"k/00004").value == b"after"  # type: ignore[union-attr]
    finally:
        backend.close()


# -------------------------------------------------------------------------------------- processes: coord-server


@dataclass
class Saved:
    """A snapshot saved from a coord-server with data, and what the source held when it was taken."""

    path: Path
    kvs: list[tuple[bytes, bytes, int, int, int, int]]
    historic: list[tuple[bytes, bytes]]
    historic_revision: int
    revision: int
    hash: int
    leases: list[int]


def _all_kvs(endpoint: str, revision: int = 0) -> tuple[list[tuple[bytes, bytes, int, int, int, int]], int]:
    with grpc.insecure_channel(endpoint) as ch:
        resp = rpc_pb2_grpc.KVStub(ch).Range(
            rpc_pb2.RangeRequest(key=b"\x00", range_end=b"\x00", revision=revision, serializable=True), timeout=10
        )
    rows = [(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease) for kv in resp.kvs]
    return rows, resp.header.revision


def _leases(endpoint: str) -> list[int]:
    with grpc.insecure_channel(endpoint) as ch:
        resp = rpc_pb2_grpc.LeaseStub(ch).LeaseLeases(rpc_pb2.LeaseLeasesRequest(), timeout=10)
    return sorted(s.ID for s in resp.leases)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Saved]:
    base = tmp_path_factory.mktemp("saved")
    server = start_coord_server(base / "source")
    try:
        with grpc.insecure_channel(server.endpoint) as ch:
            kv, lease = rpc_pb2_grpc.KVStub(ch), rpc_pb2_grpc.LeaseStub(ch)
            for i in range(200):
                kv.Put(rpc_pb2.PutRequest(key=b"key/%03d" % i, value=b"first-%d" % i), timeout=10)
            historic_revision = kv.Put(rpc_pb2.PutRequest(key=b"key/000", value=b"second"), timeout=10).header.revision
            kv.Compact(rpc_pb2.CompactionRequest(revision=50), timeout=10)
            kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"key/19", range_end=b"key/1:"), timeout=10)
            granted = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=3600), timeout=10)
            kv.Put(rpc_pb2.PutRequest(key=b"leased", value=b"v", lease=granted.ID), timeout=10)
            kv.Put(rpc_pb2.PutRequest(key=b"binary\x00\xff", value=bytes(range(256)) * 40), timeout=10)
            stream = list(rpc_pb2_grpc.MaintenanceStub(ch).Snapshot(rpc_pb2.SnapshotRequest(), timeout=30))
        path = base / "saved.snapshot"
        path.write_bytes(b"".join(r.blob for r in stream))
        # remaining_bytes counts down to 0 on the last response; the first one carries the header.
        assert [r.remaining_bytes for r in stream] == sorted((r.remaining_bytes for r in stream), reverse=True)
        assert stream[-1].remaining_bytes == 0
        assert stream[0].remaining_bytes + len(stream[0].blob) == path.stat().st_size
        kvs, revision = _all_kvs(server.endpoint)
        assert stream[0].header.revision == revision and stream[0].header.cluster_id != 0
        historic, _ = _all_kvs(server.endpoint, historic_revision - 1)
        yield Saved(
            path,
            kvs,
            [(k, v) for k, v, *_ in historic],
            historic_revision - 1,
            revision,
            hash_kv(server.endpoint),
            _leases(server.endpoint),
        )
    finally:
        server.stop()
        shutil.rmtree(base / "source", ignore_errors=True)


def _restore_cli(saved: Path, data_dir: Path, name: str, peer_urls: dict[str, str], token: str) -> None:
    initial = ",".join(f"{n}={url}" for n, url in peer_urls.items())
    argv = [sys.executable, "-m", "coord.server.main", "snapshot", "restore", str(saved), "--data-dir", str(data_dir),
            "--name", name, "--initial-cluster", initial, "--initial-cluster-token", token,
            "--initial-advertise-peer-urls", peer_urls[name]]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert f"into {data_dir}: member {name}" in proc.stdout


def _spawn_member(data_dir: Path, name: str, peer: int, flags: list[str]) -> ServerProcess:
    """Start coord-server on ``data_dir`` without waiting for it (the caller stops it by PID)."""
    client, http = free_port(), free_port()
    argv = [sys.executable, "-m", "coord.server.main", "--name", name, "--data-dir", str(data_dir),
            "--listen-client-urls", f"http://127.0.0.1:{client}", "--advertise-client-urls", f"http://127.0.0.1:{client}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--listen-client-http-urls", f"http://127.0.0.1:{http}", *flags]  # fmt: skip
    log_path = data_dir.parent / f"{name}.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return ServerProcess(name, proc, client, peer, data_dir, log_path, argv=argv)


def _check_member(member: ServerProcess, saved: Saved) -> None:
    kvs, revision = _all_kvs(member.endpoint)
    assert revision == saved.revision
    assert kvs == saved.kvs
    historic, _ = _all_kvs(member.endpoint, saved.historic_revision)
    assert [(k, v) for k, v, *_ in historic] == saved.historic  # history kept, compaction point kept
    assert hash_kv(member.endpoint) == saved.hash
    assert _leases(member.endpoint) == saved.leases


def test_snapshot_restores_into_a_new_single_member(saved: Saved, tmp_path: Path) -> None:
    peer = free_port()
    _restore_cli(saved.path, tmp_path / "m0", "m0", {"m0": f"http://127.0.0.1:{peer}"}, "restored-1")
    server = start_coord_server(tmp_path / "m0", peer_port=peer, name="m0",
                                extra_args=["--initial-cluster-token", "restored-1"])  # fmt: skip
    try:
        _check_member(server, saved)
        with grpc.insecure_channel(server.endpoint) as ch:
            put = rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=b"after", value=b"x"), timeout=10)
            assert put.header.revision == saved.revision + 1
            members = rpc_pb2_grpc.ClusterStub(ch).MemberList(rpc_pb2.MemberListRequest(), timeout=10).members
        assert [m.name for m in members] == ["m0"]  # the source's membership is gone
    finally:
        server.stop()


def test_snapshot_restores_into_a_new_three_member_cluster(saved: Saved, tmp_path: Path) -> None:
    names = ["m0", "m1", "m2"]
    peers = {n: free_port() for n in names}
    urls = {n: f"http://127.0.0.1:{p}" for n, p in peers.items()}
    token = f"restored-{free_port()}"
    for name in names:
        _restore_cli(saved.path, tmp_path / name, name, urls, token)
    initial = ",".join(f"{n}={u}" for n, u in urls.items())
    flags = ["--initial-cluster", initial, "--initial-cluster-token", token,
             "--heartbeat-interval", "50", "--election-timeout", "500"]  # fmt: skip
    members: list[ServerProcess] = []
    try:
        # All at once: a member of a multi-member cluster opens its client port only once a leader is elected.
        for name in names:
            members.append(_spawn_member(tmp_path / name, name, peers[name], flags))
        for member in members:
            wait_for_port(member.client_port, 60, member.proc)
        deadline = time.monotonic() + 30
        while True:
            try:
                leaders = {status(m.endpoint).leader for m in members}
            except grpc.RpcError:
                leaders = set()
            if len(leaders) == 1 and 0 not in leaders:
                break
            assert time.monotonic() < deadline, f"no agreed leader in the restored cluster (saw {leaders})"
            time.sleep(0.1)
        for member in members:
            _check_member(member, saved)
        with grpc.insecure_channel(members[1].endpoint) as ch:
            rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=b"after", value=b"x"), timeout=10)
        deadline = time.monotonic() + 30
        while len({(_all_kvs(m.endpoint)[1], hash_kv(m.endpoint)) for m in members}) != 1:
            assert time.monotonic() < deadline, "the restored members did not converge after a write"
            time.sleep(0.1)
        assert _all_kvs(members[2].endpoint)[1] == saved.revision + 1
        with grpc.insecure_channel(members[0].endpoint) as ch:
            listed = rpc_pb2_grpc.ClusterStub(ch).MemberList(rpc_pb2.MemberListRequest(), timeout=10).members
        assert sorted(m.name for m in listed) == names
    finally:
        for member in members:
            member.stop()


def test_snapshot_status_reports_the_header(saved: Saved) -> None:
    argv = [sys.executable, "-m", "coord.server.main", "snapshot", "status", str(saved.path), "-w", "json"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["revision"] == saved.revision and report["compactRevision"] == 50
    assert report["totalSize"] == saved.path.stat().st_size and report["formatVersion"] == 1


def test_restore_refuses_a_corrupted_snapshot_with_a_clear_error(saved: Saved, tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.snapshot"
    data = bytearray(saved.path.read_bytes())
    data[len(data) // 2] ^= 0x40
    damaged.write_bytes(bytes(data))
    argv = [sys.executable, "-m", "coord.server.main", "snapshot", "restore", str(damaged),
            "--data-dir", str(tmp_path / "m0")]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"Error: {damaged}: damaged snapshot file (sha256 mismatch")
    assert not (tmp_path / "m0").exists()


class _Snapshots:
    """A thread that takes snapshots over gRPC until stopped (at most ``limit``) and checks every file."""

    def __init__(self, endpoint: str, directory: Path, limit: int = 50) -> None:
        self.taken = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(endpoint, directory, limit), daemon=True)
        self._thread.start()

    def _run(self, endpoint: str, directory: Path, limit: int) -> None:
        directory.mkdir()
        with grpc.insecure_channel(endpoint) as ch:
            stub = rpc_pb2_grpc.MaintenanceStub(ch)
            for i in range(limit):
                if self._stop.is_set():
                    return
                path = directory / f"{i}.snapshot"
                try:
                    path.write_bytes(b"".join(r.blob for r in stub.Snapshot(rpc_pb2.SnapshotRequest(), timeout=30)))
                    read_snapshot(path)
                except (grpc.RpcError, SnapshotFileError) as exc:
                    self.errors.append(repr(exc))
                path.unlink(missing_ok=True)
                self.taken += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)


def test_defragment_under_write_load_keeps_every_acknowledged_write(tmp_path: Path) -> None:
    """Defragment swaps the data file while 4 writers put keys and snapshots are being copied (read transactions on
    worker threads): every acknowledged write survives, every snapshot is sound, the member keeps serving, and after
    deleting and compacting most data the file shrinks."""
    server = start_coord_server(tmp_path / "m", extra_args=["--snapshot-count", "200"])
    try:
        with grpc.insecure_channel(server.endpoint) as ch:
            kv, maintenance = rpc_pb2_grpc.KVStub(ch), rpc_pb2_grpc.MaintenanceStub(ch)
            for i in range(300):
                kv.Put(rpc_pb2.PutRequest(key=b"big/%04d" % i, value=b"x" * 20_000), timeout=10)
            deleted = kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"big/", range_end=b"big0"), timeout=10)
            kv.Compact(rpc_pb2.CompactionRequest(revision=deleted.header.revision, physical=True), timeout=10)
            before = maintenance.Status(rpc_pb2.StatusRequest(), timeout=10).dbSize
            load = WriteLoad([server.endpoint], threads=4, max_writes=4000).start()
            snapshots = _Snapshots(server.endpoint, tmp_path / "snapshots")
            try:
                deadline = time.monotonic() + 30
                while load.count() < 50 and time.monotonic() < deadline:
                    time.sleep(0.02)
                for _ in range(3):
                    maintenance.Defragment(rpc_pb2.DefragmentRequest(), timeout=60)
                    count = load.count()
                    deadline = time.monotonic() + 30
                    while load.count() < count + 20 and time.monotonic() < deadline:
                        time.sleep(0.02)
            finally:
                load.stop()
                snapshots.stop()
            after = maintenance.Status(rpc_pb2.StatusRequest(), timeout=10).dbSize
            listed = kv.Range(rpc_pb2.RangeRequest(key=b"load/", range_end=b"load0", keys_only=True), timeout=10)
            stored = {r.key for r in listed.kvs}
        assert len(load.acked) > 50
        assert load.acked <= stored, f"{len(load.acked - stored)} acknowledged writes lost"
        assert after < before / 2, (before, after)
        assert snapshots.taken > 0 and snapshots.errors == []
    finally:
        server.stop()
    restarted = start_coord_server(tmp_path / "m")  # the swapped file is what survives a restart
    try:
        keys = {row[0] for row in _all_kvs(restarted.endpoint)[0]}
        assert load.acked <= keys
    finally:
        restarted.stop()
