"""A member whose Raft loop fails (a disk error, a bug in the applier) must not linger as a zombie that answers
/health but refuses every request: it fails what is waiting with etcd's "server stopped", shuts down and exits
non-zero, so that a supervisor restarts it and clients fail over to another member."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest

from coord._proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from coord.server import main as server_main
from coord.server.config import from_args
from coord.server.mvcc import store
from coord.testing import free_port


def test_a_failed_raft_loop_stops_the_member_with_status_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_put = store.MvccWriter.put

    def failing_put(self: store.MvccWriter, key: bytes, value: bytes, lease: int) -> Any:
        if key == b"disk-error":
            raise OSError(5, "Input/output error")  # what a failing disk gives the commit thread
        return real_put(self, key, value, lease)

    monkeypatch.setattr(store.MvccWriter, "put", failing_put)
    client_url = f"http://127.0.0.1:{free_port()}"
    config = from_args(
        [
            "--data-dir", str(tmp_path / "member"),
            "--listen-client-urls", client_url,
            "--listen-client-http-urls", f"http://127.0.0.1:{free_port()}",
            "--listen-peer-urls", f"http://127.0.0.1:{free_port()}",
        ]
    )  # fmt: skip

    async def scenario() -> tuple[int, list[tuple[grpc.StatusCode, str]]]:
        serving = asyncio.create_task(server_main.serve(config))
        answers: list[tuple[grpc.StatusCode, str]] = []
        async with grpc.aio.insecure_channel(client_url.removeprefix("http://")) as channel:
            kv = rpc_pb2_grpc.KVStub(channel)
            await kv.Put(rpc_pb2.PutRequest(key=b"fine", value=b"v"), timeout=20, wait_for_ready=True)
            for key in (b"disk-error", b"after"):
                try:
                    await kv.Put(rpc_pb2.PutRequest(key=key, value=b"v"), timeout=10)
                except grpc.aio.AioRpcError as err:
                    answers.append((err.code(), err.details() or ""))
        return await asyncio.wait_for(serving, 30), answers

    status, answers = asyncio.run(scenario())
    assert status == 1
    assert answers[0] == (grpc.StatusCode.UNAVAILABLE, "etcdserver: server stopped")
    # The second put finds the member stopped ("server stopped"), its gRPC server shutting down (gRPC itself cancels a
    # call that arrives then: CANCELLED) or already gone (UNAVAILABLE); whichever, it is refused, never acknowledged.
    assert answers[1][0] in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED), answers
