"""A grpc.aio server whose KV methods answer at once without storing anything: the cost floor of a Python server.

    python -m benchmarks.noop_server --port 23790

It serves etcd's KV service on 127.0.0.1 with the same grpcio, the same asyncio event loop and the same generated
protobuf code as coord-server, and does nothing else: no Raft, no storage, no fsync, no interceptors. Whatever a
benchmark row measures against it is what grpcio and protobuf alone cost on this machine, the ceiling any server
written on them can reach here. ``kv_put --baselines`` starts it beside the real targets.

Put answers with a header at a made-up revision; Range answers with one key-value pair for the requested key (so the
``range`` op's check passes); Txn answers ``succeeded=true``. It is a measuring instrument, not a server: it keeps
no state and must never be used as one.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc
import grpc.aio

from coord._proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from coord._proto.mvccpb import kv_pb2
from coord.testing import ServerProcess, free_port, wait_for_port

Context = grpc.aio.ServicerContext[object, object]


class NoopKV(rpc_pb2_grpc.KVServicer):
    """KV methods that build their reply and return: no state, no waiting."""

    def __init__(self) -> None:
        self._revisions = itertools.count(2)

    def _header(self) -> rpc_pb2.ResponseHeader:
        return rpc_pb2.ResponseHeader(cluster_id=1, member_id=1, revision=next(self._revisions), raft_term=1)

    async def Put(self, request: rpc_pb2.PutRequest, context: Context) -> rpc_pb2.PutResponse:
        return rpc_pb2.PutResponse(header=self._header())

    async def Range(self, request: rpc_pb2.RangeRequest, context: Context) -> rpc_pb2.RangeResponse:
        kv = kv_pb2.KeyValue(key=request.key, value=b"x", create_revision=1, mod_revision=1, version=1)
        return rpc_pb2.RangeResponse(header=self._header(), kvs=[kv], count=1)

    async def Txn(self, request: rpc_pb2.TxnRequest, context: Context) -> rpc_pb2.TxnResponse:
        return rpc_pb2.TxnResponse(header=self._header(), succeeded=True)


async def serve(port: int) -> None:
    """Serve on 127.0.0.1:``port`` until SIGINT or SIGTERM."""
    server = grpc.aio.server(options=[("grpc.max_concurrent_streams", 2**31 - 1)])
    rpc_pb2_grpc.add_KVServicer_to_server(NoopKV(), server)  # type: ignore[abstract]
    if server.add_insecure_port(f"127.0.0.1:{port}") != port:
        raise SystemExit(f"noop_server: cannot listen on 127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(grace=None)


def start(base: Path) -> ServerProcess:
    """Start this server in its own process on a free port of 127.0.0.1 (its log in ``base/noop.log``); returns once
    it listens. The caller stops it by PID (``ServerProcess.stop``)."""
    port = free_port()
    argv = [sys.executable, "-m", "benchmarks.noop_server", "--port", str(port)]
    log_path = base / "noop.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = ServerProcess("noop", proc, port, 0, base, log_path, argv=argv)
    try:
        wait_for_port(port, 30.0, proc)
    except BaseException:
        server.stop()
        raise
    return server


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.noop_server", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="port on 127.0.0.1 to serve on")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
