"""Real etcdctl's ``snapshot save`` and ``defrag`` against the server under test behave as against real etcd, and a
snapshot that etcdctl saved from coord-server restores with ``coord-server snapshot restore``.

Parity checks run the same commands against a fresh real etcd and the server under test and compare exit codes and
output (paths and endpoints differ by design and are replaced). What cannot be compared byte for byte, the snapshot
file, is checked for the properties etcdctl relies on: it is complete (no ``.part`` left) and its size is 32 bytes
(the sha256) more than a multiple of 512.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from coord._proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from coord.testing import ServerProcess, free_port, start_coord_server
from tests.compat.conftest import COMPAT_TARGET
from tests.compat.test_etcdctl import Result, c, run_etcdctl


def _same(ref: Result, target: Result, ref_text: str, target_text: str) -> None:
    """Exit codes equal; stdout and the last stderr line equal once ``*_text`` (a path or endpoint) is replaced."""
    assert target.rc == ref.rc, (ref, target)
    assert target.stdout.replace(target_text, "X") == ref.stdout.replace(ref_text, "X")
    ref_err = ref.stderr.strip().splitlines()[-1:] if ref.rc else []
    target_err = target.stderr.strip().splitlines()[-1:] if target.rc else []
    assert [line.replace(target_text, "X") for line in target_err] == [line.replace(ref_text, "X") for line in ref_err]


def _fill(server: ServerProcess, keys: int, value_bytes: int) -> int:
    with grpc.insecure_channel(server.endpoint) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        revision = 0
        for i in range(keys):
            put = kv.Put(rpc_pb2.PutRequest(key=b"big/%04d" % i, value=b"v" * value_bytes), timeout=10)
            revision = put.header.revision
        return revision


def _db_size(server: ServerProcess) -> int:
    out = run_etcdctl(server, c("endpoint", "status", "-w", "json"))
    assert out.rc == 0, out.stderr
    return int(json.loads(out.stdout)[0]["Status"]["dbSize"])


def test_snapshot_save_behaves_as_against_etcd(ref_server: ServerProcess, target_server: ServerProcess,
                                               fast_dir: Path) -> None:  # fmt: skip
    for server in (ref_server, target_server):
        _fill(server, 20, 100)
    for name in ("ref", "target"):
        (fast_dir / name).mkdir()
    ref_file, target_file = fast_dir / "ref" / "backup.db", fast_dir / "target" / "backup.db"
    ref = run_etcdctl(ref_server, c("snapshot", "save", str(ref_file)))
    target = run_etcdctl(target_server, c("snapshot", "save", str(target_file)))
    _same(ref, target, str(ref_file), str(target_file))
    assert target.rc == 0 and target.stdout == f"Snapshot saved at {target_file}\n"
    for path in (ref_file, target_file):
        assert path.stat().st_size % 512 == 32
        assert not path.with_name(path.name + ".part").exists()
    # Into a directory that does not exist: the same refusal, before anything is fetched.
    ref = run_etcdctl(ref_server, c("snapshot", "save", str(fast_dir / "nodir" / "x.db")))
    target = run_etcdctl(target_server, c("snapshot", "save", str(fast_dir / "nodir" / "x.db")))
    _same(ref, target, ref_server.endpoint, target_server.endpoint)
    assert target.rc != 0 and "no such file or directory" in target.stderr


def test_defrag_behaves_as_against_etcd_and_shrinks_the_file(ref_server: ServerProcess,
                                                             target_server: ServerProcess) -> None:  # fmt: skip
    """Deleting most data, compacting and defragmenting makes dbSize drop on both servers; defrag prints the same
    line; the data left is intact."""
    sizes = {}
    for side, server in (("ref", ref_server), ("target", target_server)):
        revision = _fill(server, 300, 20_000)
        with grpc.insecure_channel(server.endpoint) as ch:
            kv = rpc_pb2_grpc.KVStub(ch)
            kv.Put(rpc_pb2.PutRequest(key=b"kept", value=b"still here"), timeout=10)
            deleted = kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"big/", range_end=b"big0"), timeout=10)
            assert deleted.deleted == 300 and deleted.header.revision > revision
        assert run_etcdctl(server, c("compact", str(deleted.header.revision), "--physical")).rc == 0
        sizes[side] = [_db_size(server)]
    ref = run_etcdctl(ref_server, c("defrag"))
    target = run_etcdctl(target_server, c("defrag"))
    _same(ref, target, ref_server.endpoint, target_server.endpoint)
    assert target.stdout == f"Finished defragmenting etcd member[{target_server.endpoint}]\n"
    for side, server in (("ref", ref_server), ("target", target_server)):
        sizes[side].append(_db_size(server))
        get = run_etcdctl(server, c("get", "--prefix", ""))
        assert get.rc == 0 and get.stdout == "kept\nstill here\n"
        assert run_etcdctl(server, c("put", "after", "defrag")).rc == 0
    for side, (before, after) in sizes.items():
        assert after < before / 2, f"{side}: dbSize {before} -> {after}"


def _hash(result: Result) -> int:
    return int(json.loads(result.stdout)[0]["HashKV"]["hash"])


def _coord_only() -> None:
    if COMPAT_TARGET != "coord":
        pytest.skip("restoring a snapshot with coord-server needs coord-server as the server under test")


def _restore(snapshot: Path, data_dir: Path, peer: int) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "coord.server.main", "snapshot", "restore", str(snapshot), "--name", "restored",
            "--data-dir", str(data_dir), "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"restored=http://127.0.0.1:{peer}",
            "--initial-cluster-token", "compat-restore"]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def test_etcdctl_snapshot_of_coord_server_restores_with_coord_server(target_server: ServerProcess,
                                                                      fast_dir: Path) -> None:  # fmt: skip
    _coord_only()
    assert run_etcdctl(target_server, c("put", "greeting", "hello world")).rc == 0
    _fill(target_server, 50, 300)
    lease = run_etcdctl(target_server, c("lease", "grant", "600"))
    lease_id = lease.stdout.split()[1]
    assert run_etcdctl(target_server, c("put", "leased", "x", f"--lease={lease_id}")).rc == 0
    snapshot = fast_dir / "coord.db"
    assert run_etcdctl(target_server, c("snapshot", "save", str(snapshot))).rc == 0
    before = run_etcdctl(target_server, c("get", "--prefix", "", "-w", "json"))
    hash_before = run_etcdctl(target_server, c("endpoint", "hashkv", "-w", "json"))

    peer = free_port()
    restored = _restore(snapshot, fast_dir / "restored", peer)
    assert restored.returncode == 0, restored.stderr
    server = start_coord_server(fast_dir / "restored", peer_port=peer, name="restored",
                                extra_args=["--initial-cluster-token", "compat-restore"])  # fmt: skip
    try:
        after = run_etcdctl(server, c("get", "--prefix", "", "-w", "json"))
        kvs_before, kvs_after = json.loads(before.stdout), json.loads(after.stdout)
        assert kvs_after["kvs"] == kvs_before["kvs"]
        assert kvs_after["header"]["revision"] == kvs_before["header"]["revision"]
        hash_after = run_etcdctl(server, c("endpoint", "hashkv", "-w", "json"))
        assert _hash(hash_after) == _hash(hash_before)
        assert run_etcdctl(server, c("lease", "list")).stdout.splitlines()[1:] == [lease_id]
        members = run_etcdctl(server, c("member", "list")).stdout.splitlines()
        assert len(members) == 1 and ", restored, " in members[0]
    finally:
        server.stop()


def test_coord_restore_refuses_an_etcd_snapshot_clearly(ref_server: ServerProcess, fast_dir: Path) -> None:
    snapshot = fast_dir / "etcd.db"
    assert run_etcdctl(ref_server, c("snapshot", "save", str(snapshot))).rc == 0
    proc = _restore(snapshot, fast_dir / "restored", free_port())
    assert proc.returncode == 1
    assert proc.stderr == f"Error: {snapshot}: not a coord snapshot file (it looks like an etcd snapshot: restore it " \
        "with etcdctl snapshot restore)\n"  # fmt: skip
    assert not (fast_dir / "restored").exists()
