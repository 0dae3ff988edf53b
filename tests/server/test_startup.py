"""Start-up does not grow with the number of keys: opening a member never reads the key index."""

from __future__ import annotations

import asyncio
from pathlib import Path

from coord.server.mvcc import MvccWriter
from coord.server.node import Node
from coord.server.raft import ConfState, Message
from coord.server.storage import Backend
from coord.server.storage.raft_storage import RaftStorage


class _Forbidden:
    """Stands in for the key-index and revisions databases during start-up; any use fails the test."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"start-up touched the MVCC data ({name})")


class _NoPeers:
    def send(self, messages: list[Message]) -> None:
        assert not messages, "a single member has nobody to send to"


def test_opening_a_member_reads_no_mvcc_data(tmp_path: Path) -> None:
    backend = Backend(tmp_path, map_size=256 * 1024**2)
    with backend.write() as txn:
        RaftStorage(backend).bootstrap(txn, ConfState(voters=[1]))
        writer = MvccWriter(backend, txn)
        for i in range(20_000):
            writer.put(b"key/%06d" % i, b"v", 0)
        writer.finish()
    backend.close()

    reopened = Backend(tmp_path, map_size=256 * 1024**2)
    real_index, real_revisions = reopened.key_index, reopened.revisions
    reopened.key_index = _Forbidden()
    reopened.revisions = _Forbidden()

    async def start_and_stop() -> None:
        node = Node(reopened, member_id=1)
        await node.start(_NoPeers())
        await node.stop()

    asyncio.run(start_and_stop())
    reopened.key_index, reopened.revisions = real_index, real_revisions
    with reopened.read() as txn:
        assert txn.stat(reopened.key_index)["entries"] == 20_000
    reopened.close()
