"""Watch fragmentation against real etcd: a watcher created with ``fragment`` gets a response's events split over
several responses once it reaches --max-request-bytes plus etcd's 512 KiB of gRPC overhead, both live and when
catching up from history.

Both servers run with the same small --max-request-bytes, and one revision deletes enough large keys (with prev_kv)
to pass the limit. Where exactly a split falls depends on the encoded header, whose cluster and member ids differ
between the two servers, so the comparison is: the same events in the same order once the fragments are put
together, and on both servers each fragment packed as etcd packs it (under the limit, and the next event would not
have fitted), the last response of a split not marked ``fragment``.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from coord._proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from coord._proto.mvccpb import kv_pb2
from coord.server.mvcc.watchable import fragments
from coord.testing import ServerProcess
from tests.compat.conftest import started_pair

MAX_REQUEST_BYTES = 4096  # on both servers
LIMIT = MAX_REQUEST_BYTES + 512 * 1024  # where etcd starts splitting a watch response
KEYS = 150
VALUE = b"v" * 3800  # 150 deletes with prev_kv: about 570 KB of events in one revision


@pytest.fixture
def pair(fast_dir: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    with started_pair(fast_dir, ("--max-request-bytes", str(MAX_REQUEST_BYTES))) as servers:
        yield servers


class _Stream:
    """One Watch stream; a thread collects the responses."""

    def __init__(self, channel: grpc.Channel, create: rpc_pb2.WatchCreateRequest) -> None:
        self._requests: queue.Queue[rpc_pb2.WatchRequest | None] = queue.Queue()
        self._requests.put(rpc_pb2.WatchRequest(create_request=create))
        self.responses: queue.Queue[rpc_pb2.WatchResponse] = queue.Queue()
        self._call = rpc_pb2_grpc.WatchStub(channel).Watch(iter(self._requests.get, None), timeout=60)
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()
        created = self.responses.get(timeout=15)
        assert created.created, created

    def _collect(self) -> None:
        try:
            for response in self._call:
                self.responses.put(response)
        except grpc.RpcError:
            pass

    def take_revision(self, revision: int) -> list[rpc_pb2.WatchResponse]:
        """Every response up to the last fragment of ``revision`` (responses of earlier revisions included)."""
        out: list[rpc_pb2.WatchResponse] = []
        while True:
            response = self.responses.get(timeout=15)
            out.append(response)
            if response.events and response.events[-1].kv.mod_revision >= revision and not response.fragment:
                return out

    def close(self) -> None:
        self._requests.put(None)
        self._call.cancel()
        self._thread.join(timeout=10)


def _delete_revision(server: ServerProcess) -> int:
    """Put KEYS keys one by one, then delete them all in one revision; that revision."""
    with server.grpc_channel() as channel:
        kv = rpc_pb2_grpc.KVStub(channel)
        for i in range(KEYS):
            kv.Put(rpc_pb2.PutRequest(key=b"frag/%03d" % i, value=VALUE), timeout=10)
        deleted = kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"frag/", range_end=b"frag0"), timeout=10)
        assert deleted.deleted == KEYS
        return int(deleted.header.revision)


def _shape(responses: list[rpc_pb2.WatchResponse]) -> list[tuple[int, str, bytes, bool]]:
    """(mod revision, type, key, has prev_kv) of every event, in order: what the two servers must agree on."""
    return [
        (e.kv.mod_revision, kv_pb2.Event.EventType.Name(e.type), e.kv.key, e.HasField("prev_kv"))
        for r in responses
        for e in r.events
    ]


def _check_packing(responses: list[rpc_pb2.WatchResponse]) -> int:
    """Each revision's responses are split as etcd splits them; returns how many responses were fragments."""
    marked = 0
    for i, response in enumerate(responses):
        if not response.fragment:
            continue
        marked += 1
        assert response.ByteSize() < LIMIT or len(response.events) == 1, response.ByteSize()
        nxt = responses[i + 1]
        assert nxt.events
        fuller = rpc_pb2.WatchResponse()
        fuller.CopyFrom(response)
        fuller.events.append(nxt.events[0])
        assert fuller.ByteSize() >= LIMIT, "a fragment was cut before it was full"
    return marked


def _watch(server: ServerProcess, start_revision: int, until: int) -> list[rpc_pb2.WatchResponse]:
    create = rpc_pb2.WatchCreateRequest(
        key=b"frag/", range_end=b"frag0", prev_kv=True, fragment=True, start_revision=start_revision
    )
    with server.grpc_channel() as channel:
        stream = _Stream(channel, create)
        try:
            return stream.take_revision(until)
        finally:
            stream.close()


def test_live_and_history_fragments_match_etcd(pair: tuple[ServerProcess, ServerProcess]) -> None:
    results = {}
    for side, server in zip(("etcd", "target"), pair, strict=True):
        create = rpc_pb2.WatchCreateRequest(key=b"frag/", range_end=b"frag0", prev_kv=True, fragment=True)
        with server.grpc_channel() as channel:
            live = _Stream(channel, create)
            try:
                revision = _delete_revision(server)
                live_responses = live.take_revision(revision)
            finally:
                live.close()
        history = _watch(server, 1, revision)
        results[side] = (live_responses, history)
    for which in (0, 1):  # live, then from history
        ref, got = results["etcd"][which], results["target"][which]
        assert _shape(got) == _shape(ref)
        assert len(_shape(got)) == 2 * KEYS
        assert _check_packing(ref) >= 1, "the oracle did not fragment: the test does not test anything"
        assert _check_packing(got) >= 1
        assert not got[-1].fragment


def test_small_or_single_event_responses_are_not_split() -> None:
    header = rpc_pb2.ResponseHeader(cluster_id=1, member_id=2, revision=9, raft_term=3)
    one_big = rpc_pb2.WatchResponse(header=header, watch_id=1)
    one_big.events.add().kv.value = b"x" * (LIMIT * 2)
    assert fragments(one_big, LIMIT) == [one_big]
    small = rpc_pb2.WatchResponse(header=header, watch_id=1)
    for i in range(3):
        small.events.add().kv.key = b"k%d" % i
    assert fragments(small, LIMIT) == [small]
    # Two events that each exceed the limit go one per fragment, in order.
    two_big = rpc_pb2.WatchResponse(header=header, watch_id=1)
    for i in range(2):
        event = two_big.events.add()
        event.kv.key, event.kv.value = b"k%d" % i, b"x" * LIMIT
    parts = fragments(two_big, LIMIT)
    assert [len(p.events) for p in parts] == [1, 1] and [p.fragment for p in parts] == [True, False]
    assert [p.events[0].kv.key for p in parts] == [b"k0", b"k1"]
    assert all(p.header == header and p.watch_id == 1 for p in parts)
