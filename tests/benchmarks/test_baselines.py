"""The benchmark's reference rows: the do-nothing gRPC server answers what the generator checks, and --baselines adds
the right targets. Behaviour only: no figure is asserted."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from benchmarks import kv_put, noop_server
from benchmarks.kv import LoadSpec, run_load
from coord._proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from coord.testing import ServerProcess


@contextlib.contextmanager
def _noop_server(tmp_path: Path) -> Iterator[ServerProcess]:
    server = noop_server.start(tmp_path)
    try:
        yield server
    finally:
        server.stop()


def test_noop_server_answers_every_op_and_stops_cleanly(tmp_path: Path) -> None:
    with _noop_server(tmp_path) as server:
        with grpc.insecure_channel(server.endpoint) as channel:
            kv = rpc_pb2_grpc.KVStub(channel)
            first = kv.Put(rpc_pb2.PutRequest(key=b"a", value=b"1"), timeout=10)
            second = kv.Put(rpc_pb2.PutRequest(key=b"a", value=b"2"), timeout=10)
            assert second.header.revision > first.header.revision > 0
            got = kv.Range(rpc_pb2.RangeRequest(key=b"some/key"), timeout=10)
            assert [kv.key for kv in got.kvs] == [b"some/key"] and got.count == 1
            assert kv.Txn(rpc_pb2.TxnRequest(), timeout=10).succeeded
        # The generator's own checks pass against it: every op, no errors.
        for op in kv_put.OPS:
            spec = LoadSpec(server.endpoint, op, 2, 0.3, 200, 16, key_prefix=f"t/{op}", warmup_seconds=0.1)
            result = run_load(spec)
            assert result.errors == 0 and result.ok > 0, (op, result.first_error)
        server.stop()
        assert server.proc.returncode == 0, server.log()


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--members", "3", "--baselines"], ["coord", "etcd", kv_put.SOLO, kv_put.NOOP]),
        (["--baselines"], ["coord", "etcd", kv_put.NOOP]),  # one member: coord is already the solo figure
        (["--members", "3"], ["coord", "etcd"]),
        (["--members", "3", "--baselines", "--targets", "coord"], ["coord", kv_put.SOLO, kv_put.NOOP]),
    ],
)
def test_baselines_add_reference_targets(argv: list[str], expected: list[str]) -> None:
    args = kv_put.parse_args(["--endpoint-etcd", "127.0.0.1:1", *argv])
    assert args.all_targets == expected
