"""Node.propose's and Node.read_barrier's own bookkeeping, on a node whose Raft loop is not running (so nothing is
ever applied): "request timed out" after request_timeout_s, and a caller that goes away before its proposal reaches
Raft."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from coord._proto.etcdserverpb import rpc_pb2
from coord.errors import REQUEST_TIMEOUT
from coord.server.node import Node, NodeOptions
from coord.server.rejection import Rejected
from coord.server.requests import Kind
from coord.server.storage import Backend


def _idle_node(tmp_path: Path, timeout_s: float) -> Node:
    node = Node(Backend(tmp_path, map_size=64 * 1024**2), member_id=1, options=NodeOptions(request_timeout_s=timeout_s))
    node.leader_id = 1  # a leader is known, so propose queues at once; no loop runs to apply anything
    node._leader_known.set()
    return node


def test_an_entry_not_applied_in_time_gets_request_timed_out(tmp_path: Path) -> None:
    node = _idle_node(tmp_path, timeout_s=0.2)

    async def scenario() -> None:
        with pytest.raises(Rejected) as refused:
            await node.propose(*node.encode(Kind.PUT, rpc_pb2.PutRequest(key=b"k", value=b"v")))
        assert refused.value.spec == REQUEST_TIMEOUT
        assert node.proposals_failed == 1
        assert not node._waiters  # nothing left for a later apply to answer
        # Its future is answered, so the loop skips the queued proposal: it had not reached Raft. (One that had may
        # still be applied after "request timed out", as etcd warns.)
        assert len(node._proposals) == 1 and node._proposals[0][2].done()

    asyncio.run(scenario())
    node.backend.close()


def test_a_caller_that_goes_away_leaves_no_waiter_and_its_queued_proposal_is_skipped(tmp_path: Path) -> None:
    node = _idle_node(tmp_path, timeout_s=30.0)

    async def scenario() -> None:
        call = asyncio.create_task(node.propose(*node.encode(Kind.PUT, rpc_pb2.PutRequest(key=b"k", value=b"v"))))
        for _ in range(100):  # bounded: until the proposal is queued
            if node._proposals:
                break
            await asyncio.sleep(0.01)
        assert len(node._proposals) == 1
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert not node._waiters
        assert node._proposals[0][2].cancelled()  # _step_inputs skips done proposals: it never reaches Raft
        assert node.proposals_failed == 0

    asyncio.run(scenario())
    node.backend.close()


def test_a_read_barrier_not_confirmed_in_time_gets_request_timed_out(tmp_path: Path) -> None:
    node = _idle_node(tmp_path, timeout_s=0.2)

    async def scenario() -> None:
        with pytest.raises(Rejected) as refused:
            await node.read_barrier()
        assert refused.value.spec == REQUEST_TIMEOUT

    asyncio.run(scenario())
    node.backend.close()
