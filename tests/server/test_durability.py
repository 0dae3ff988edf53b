"""Crash safety: no acknowledged write is lost, and revisions continue with no gap and no reuse.

Fault: SIGKILL of coord-server in the middle of a concurrent write load (no chance to flush anything).
Guarantee: every write acknowledged before the kill is present after restart with its value and revision; the
revisions of all stored writes form one contiguous sequence; new writes continue right after it.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc

from coord._proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from coord.testing import start_coord_server

WRITERS = 24
MAX_PUTS_PER_WRITER = 3000
LOAD_SECONDS = 1.5


async def _load(endpoint: str, stop_at: float) -> dict[bytes, tuple[bytes, int]]:
    """Concurrent unique-key puts until ``stop_at`` or the server dies; returns the acknowledged ones."""
    acked: dict[bytes, tuple[bytes, int]] = {}
    async with grpc.aio.insecure_channel(endpoint) as channel:
        kv = rpc_pb2_grpc.KVStub(channel)

        async def writer(w: int) -> None:
            for i in range(MAX_PUTS_PER_WRITER):
                if time.monotonic() > stop_at:
                    return
                key, value = b"w%02d/%06d" % (w, i), b"value-%d-%d" % (w, i)
                try:
                    resp = await kv.Put(rpc_pb2.PutRequest(key=key, value=value), timeout=5)
                except grpc.aio.AioRpcError:
                    return  # the server is gone: this write was not acknowledged
                acked[key] = (value, resp.header.revision)

        await asyncio.gather(*(writer(w) for w in range(WRITERS)))
    return acked


def test_sigkill_under_write_load_loses_no_acknowledged_write(tmp_path: Path) -> None:
    data_dir = tmp_path / "member"
    server = start_coord_server(data_dir)
    try:
        loop = asyncio.new_event_loop()
        load = loop.create_task(_load(server.endpoint, time.monotonic() + 30))
        loop.run_until_complete(asyncio.sleep(LOAD_SECONDS))
        server.kill()  # SIGKILL by PID while writers are mid-flight
        acked = loop.run_until_complete(load)
        loop.close()
    finally:
        server.stop()
    assert len(acked) > 100, "the load did not get going before the kill"
    revisions = [rev for _, rev in acked.values()]
    assert len(set(revisions)) == len(revisions), "two acknowledged writes share a revision"

    restarted = start_coord_server(data_dir)
    try:
        with grpc.insecure_channel(restarted.endpoint) as channel:
            kv = rpc_pb2_grpc.KVStub(channel)
            everything = kv.Range(rpc_pb2.RangeRequest(key=b"\x00", range_end=b"\x00"), timeout=10)
            stored = {kv_.key: (kv_.value, kv_.mod_revision) for kv_ in everything.kvs}
            for key, (value, revision) in acked.items():
                assert stored.get(key) == (value, revision), f"acknowledged write {key!r} lost or changed"
            # Each put went to a unique key, so stored mod revisions must be exactly 2..current: no gap, no reuse.
            current = everything.header.revision
            assert sorted(rev for _, rev in stored.values()) == list(range(2, current + 1))
            after = kv.Put(rpc_pb2.PutRequest(key=b"after-restart", value=b"x"), timeout=10)
            assert after.header.revision == current + 1
    finally:
        restarted.stop()
