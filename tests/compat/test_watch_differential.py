"""Differential watch tests: the same watch streams and writes against a fresh real etcd and the server under test
give the same responses.

Each side gets the same Watch streams (create, cancel and progress requests in the same order) and the same writes
(one at a time, each answered before the next). Responses are compared per stream and per watch id, in order, after
blanking header cluster_id, member_id and raft_term (header revision is compared). Watch ids are compared as they
are: server-chosen ids are numbered per stream from 0 by both servers. Fragmented responses are reassembled before
comparing (where etcd cuts a fragment depends on the header's byte size, which differs with the ids).

Where etcd itself is timing-dependent the harness waits for quiet instead of comparing a race:
- a watcher starting in the past is caught up by etcd's background sync (every 100 ms): writes made before that
  sync are sent in its history batch, writes after it one revision per response; so after such a create both sides
  are left to settle before the next write;
- etcd may send a watcher's last events before or after its cancel response (and drops them after): both sides
  settle before a cancel.
Progress responses (watch id -1) are compared as a sequence of their own.

Replay one seed: COORD_WATCH_SEED=N python -m pytest tests/compat/test_watch_differential.py
Harness self-check against a second real etcd: COORD_COMPAT_TARGET=etcd
"""

from __future__ import annotations

import difflib
import os
import queue
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import text_format

from coord._proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from coord.testing import ServerProcess
from tests.compat.conftest import started_pair
from tests.compat.differential import Outcome, Peer, call, describe, same
from tests.compat.kvgen import KvGen, prefix_range_end

WatchRequest = rpc_pb2.WatchRequest
Create = rpc_pb2.WatchCreateRequest
NOPUT, NODELETE = Create.NOPUT, Create.NODELETE

#: How long a stream must stay silent to count as settled (etcd syncs unsynced watchers every 100 ms).
QUIET_S = 0.3
SETTLE_TIMEOUT_S = 15.0


class WatchClient:
    """One Watch stream to one server; a thread collects every response in arrival order."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._requests: queue.Queue[WatchRequest | None] = queue.Queue()
        self.responses: list[rpc_pb2.WatchResponse] = []
        self.error: grpc.RpcError | None = None
        self._last_change = time.monotonic()
        self._creates = 0
        self._progress = 0
        self._lock = threading.Lock()
        self._call = rpc_pb2_grpc.WatchStub(channel).Watch(iter(self._requests.get, None), timeout=600)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for resp in self._call:
                with self._lock:
                    self.responses.append(resp)
                    self._last_change = time.monotonic()
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                self.error = exc

    def send(self, request: WatchRequest) -> None:
        with self._lock:
            self._last_change = time.monotonic()
            if request.HasField("create_request"):
                self._creates += 1
            elif request.HasField("progress_request"):
                self._progress += 1
        self._requests.put(request)

    def answered(self) -> bool:
        """Every create and progress request sent so far has been answered."""
        with self._lock:
            created = sum(1 for r in self.responses if r.created)
            progress = sum(1 for r in self.responses if r.watch_id == -1 and not r.created and not r.canceled)
            return created >= self._creates and progress >= self._progress

    def quiet_for(self) -> float:
        """Seconds since the last response (0 while a create or progress request is unanswered)."""
        if not self.answered():
            return 0.0
        with self._lock:
            return time.monotonic() - self._last_change

    def close(self) -> None:
        self._call.cancel()
        self._requests.put(None)
        self._thread.join(10)


class Sides:
    """The oracle (``a``, real etcd) and the server under test (``b``), driven in lock step."""

    def __init__(self, ref: ServerProcess, target: ServerProcess) -> None:
        self.a, self.b = Peer(ref.endpoint), Peer(target.endpoint)
        self.streams: list[tuple[WatchClient, WatchClient]] = []
        self.log: list[str] = []

    def close(self) -> None:
        for wa, wb in self.streams:
            wa.close()
            wb.close()
        self.a.close()
        self.b.close()

    def stream(self) -> int:
        self.streams.append((WatchClient(self.a.channel), WatchClient(self.b.channel)))
        return len(self.streams) - 1

    def watch(self, stream: int, request: WatchRequest) -> None:
        """Send a watch request on both sides and wait until both answered it, if it is one that gets an answer
        (a create or progress request), so that a write made next cannot overtake it."""
        self.log.append(f"stream {stream}: {text_format.MessageToString(request, as_one_line=True)}")
        wa, wb = self.streams[stream]
        wa.send(request)
        wb.send(request)
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while not (wa.answered() and wb.answered()):
            assert time.monotonic() < deadline, f"no answer to {request} (etcd: {wa.answered()})"
            time.sleep(0.002)

    def create(self, stream: int, **fields: Any) -> None:
        self.watch(stream, WatchRequest(create_request=Create(**fields)))

    def cancel(self, stream: int, watch_id: int) -> None:
        """Settle (etcd may send a watcher's last events after its cancel response), cancel, settle again (the
        answer, if any, carries the current revision)."""
        self.settle()
        self.watch(stream, WatchRequest(cancel_request=rpc_pb2.WatchCancelRequest(watch_id=watch_id)))
        self.settle()

    def progress(self, stream: int) -> None:
        self.watch(stream, WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))

    def write(self, method: str, request: Any) -> Outcome:
        """Send a KV request to both sides; their answers must agree. Returns the oracle's."""
        self.log.append(f"{method}: {text_format.MessageToString(request, as_one_line=True)[:300]}")
        ra, rb = call(self.a, method, request), call(self.b, method, request)
        assert same(method, request, ra, rb), describe(method, request, ra, rb)
        return ra

    def put(self, key: bytes, value: bytes = b"v") -> int:
        outcome = self.write("Put", rpc_pb2.PutRequest(key=key, value=value))
        assert outcome.response is not None
        return int(outcome.response.header.revision)  # type: ignore[attr-defined]

    def settle(self) -> None:
        """Wait until every stream on both sides has been silent for QUIET_S (bounded)."""
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        clients = [c for pair in self.streams for c in pair]
        while any(c.quiet_for() < QUIET_S for c in clients):
            assert time.monotonic() < deadline, "watch streams never went quiet"
            time.sleep(0.05)

    def compare(self) -> None:
        """Settle, then require the same responses per stream and watch id on both sides."""
        self.settle()
        for index, (wa, wb) in enumerate(self.streams):
            assert wa.error is None, f"etcd ended stream {index}: {wa.error}"
            assert wb.error is None, f"the target ended stream {index}: {wb.error}"
            ta, tb = render(wa.responses), render(wb.responses)
            if ta != tb:
                diff = "".join(difflib.unified_diff(ta.splitlines(True), tb.splitlines(True), "etcd", "target"))
                steps = "\n".join(self.log[-60:])
                pytest.fail(f"stream {index} differs:\n{diff[:12000]}\n--- last steps:\n{steps}")


def reassemble(responses: list[rpc_pb2.WatchResponse]) -> list[rpc_pb2.WatchResponse]:
    """Responses per watch id with fragments merged into the response that completes them."""
    out: list[rpc_pb2.WatchResponse] = []
    pending: dict[int, rpc_pb2.WatchResponse] = {}
    for resp in responses:
        merged = rpc_pb2.WatchResponse()
        merged.CopyFrom(resp)
        head = pending.pop(resp.watch_id, None)
        if head is not None:
            events = [*head.events, *merged.events]
            del merged.events[:]
            merged.events.extend(events)
        if merged.fragment:
            merged.fragment = False
            pending[resp.watch_id] = merged
            continue
        out.append(merged)
    out.extend(pending.values())
    return out


def render(responses: list[rpc_pb2.WatchResponse]) -> str:
    """Normalised responses as text, grouped by watch id (in order of first appearance), each group in order."""
    groups: dict[int, list[str]] = {}
    for resp in reassemble(responses):
        resp.header.cluster_id = 0
        resp.header.member_id = 0
        resp.header.raft_term = 0
        events = list(resp.events)
        del resp.events[:]
        lines = [text_format.MessageToString(resp, as_one_line=True) + f" ({len(events)} events)"]
        lines += [f"    {text_format.MessageToString(e, as_one_line=True)}" for e in events]
        groups.setdefault(resp.watch_id, []).extend(lines)
    return "".join(f"watch {wid}:\n" + "".join(f"  {line}\n" for line in lines) for wid, lines in groups.items())


@pytest.fixture(scope="module")
def shared_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """One etcd and one server under test for all the scenarios of this module (each writes under its own keys and
    reads only revisions it made, so they do not see each other); started once to keep the suite fast."""
    with started_pair(tmp_path_factory.mktemp("watch-diff")) as pair:
        yield pair


@pytest.fixture
def sides(shared_servers: tuple[ServerProcess, ServerProcess]) -> Iterator[Sides]:
    s = Sides(*shared_servers)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def fresh_sides(ref_server: ServerProcess, target_server: ServerProcess) -> Iterator[Sides]:
    s = Sides(ref_server, target_server)
    try:
        yield s
    finally:
        s.close()


def txn_put(*keys: bytes, value: bytes = b"t") -> rpc_pb2.TxnRequest:
    return rpc_pb2.TxnRequest(
        success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=k, value=value)) for k in keys]
    )


# ---------------------------------------------------------------------------------------------------- scenarios


def test_watch_key_range_prefix_from_key_and_all(sides: Sides) -> None:
    s = sides.stream()
    sides.create(s, key=b"a")
    sides.create(s, key=b"a", range_end=b"b")
    sides.create(s, key=b"a/", range_end=prefix_range_end(b"a/"))
    sides.create(s, key=b"b", range_end=b"\x00")
    sides.create(s, key=b"\x00", range_end=b"\x00")
    sides.create(s)  # empty key: etcd watches the key "\x00"
    sides.settle()
    for key in (b"a", b"a/1", b"ab", b"b", b"c", b"\x00", b"a/"):
        sides.put(key)
    sides.write("DeleteRange", rpc_pb2.DeleteRangeRequest(key=b"a", range_end=b"b"))
    sides.write("Txn", txn_put(b"a", b"a/2", b"z"))
    sides.compare()


def test_history_replay_with_deletes_and_multi_key_txns(sides: Sides) -> None:
    first = sides.put(b"h/a", b"1")
    sides.put(b"h/b", b"2")
    sides.write("Txn", txn_put(*(b"h/t%02d" % i for i in range(20))))
    sides.write("DeleteRange", rpc_pb2.DeleteRangeRequest(key=b"h/a"))
    sides.put(b"h/a", b"again")
    sides.write("DeleteRange", rpc_pb2.DeleteRangeRequest(key=b"h/", range_end=prefix_range_end(b"h/")))
    last = sides.put(b"h/z", b"end")
    s = sides.stream()
    for start in (first, first + 2, last - 1, last, last + 1, last + 5):
        sides.create(s, key=b"h/", range_end=prefix_range_end(b"h/"), start_revision=start)
        sides.settle()
    sides.create(s, key=b"h/a", start_revision=first, prev_kv=True)
    sides.settle()
    for i in range(7):
        sides.put(b"h/a" if i % 2 else b"h/q", b"%d" % i)
    sides.compare()


def test_prev_kv_and_filters(sides: Sides) -> None:
    start = sides.put(b"f/a", b"old")
    s = sides.stream()
    sides.create(s, key=b"f/", range_end=b"f0", prev_kv=True)
    sides.create(s, key=b"f/", range_end=b"f0", filters=[NOPUT])
    sides.create(s, key=b"f/", range_end=b"f0", filters=[NODELETE], prev_kv=True)
    sides.create(s, key=b"f/", range_end=b"f0", filters=[NOPUT, NODELETE])
    sides.settle()
    sides.put(b"f/a", b"new")
    sides.put(b"f/b", b"first")
    sides.write("DeleteRange", rpc_pb2.DeleteRangeRequest(key=b"f/", range_end=b"f0"))
    sides.put(b"f/a", b"reborn")
    # History replay with prev_kv and filters too.
    sides.create(s, key=b"f/", range_end=b"f0", start_revision=start, prev_kv=True)
    sides.settle()
    sides.create(s, key=b"f/", range_end=b"f0", start_revision=start, filters=[NOPUT], prev_kv=True)
    sides.settle()
    sides.compare()


def test_start_below_the_compact_revision_is_canceled(sides: Sides) -> None:
    first = sides.put(b"c/k", b"0")
    for i in range(1, 6):
        sides.put(b"c/k", b"%d" % i)
    sides.write("Compact", rpc_pb2.CompactionRequest(revision=first + 3))
    s = sides.stream()
    sides.create(s, key=b"c/k", start_revision=first + 1)
    sides.settle()
    sides.create(s, key=b"c/k", start_revision=first + 3)  # exactly the compact revision: allowed
    sides.settle()
    sides.create(s, key=b"c/k", start_revision=first + 2, watch_id=7)
    sides.settle()
    sides.create(s, key=b"c/k", start_revision=-1, watch_id=8)  # negative: below any compaction
    sides.settle()
    sides.create(s, key=b"c/k", start_revision=first + 2, watch_id=7)  # the canceled id 7 is still taken
    sides.cancel(s, 7)  # and is answered
    sides.settle()
    sides.put(b"c/k", b"after")
    sides.compare()


def test_progress_requests(sides: Sides) -> None:
    s, t = sides.stream(), sides.stream()
    sides.progress(s)  # no watchers on the stream yet
    sides.settle()
    sides.create(s, key=b"p/a")
    sides.create(t, key=b"p/b", progress_notify=True)
    sides.settle()
    sides.put(b"p/a")
    sides.put(b"other")
    sides.progress(s)
    sides.progress(t)
    sides.settle()
    sides.put(b"p/b")
    sides.progress(t)
    sides.compare()


def test_fragmented_large_txn(sides: Sides) -> None:
    s = sides.stream()
    sides.create(s, key=b"g/", range_end=b"g0", fragment=True, watch_id=1)
    sides.create(s, key=b"g/", range_end=b"g0", watch_id=2)
    sides.settle()
    first = sides.put(b"g/start")
    value = b"x" * 100_000
    # 14 values of 100 kB: 1.4 MB per revision, under the request limit (so the txn is accepted) and under etcd's
    # 1.5 MiB fragment limit; replaying both revisions in one response goes over it, so that one is fragmented.
    sides.write("Txn", txn_put(*(b"g/%02d" % i for i in range(14)), value=value))
    sides.write("Txn", txn_put(*(b"g/%02d" % i for i in range(14)), value=value))
    sides.create(s, key=b"g/", range_end=b"g0", fragment=True, start_revision=first + 1, watch_id=3)
    sides.settle()
    sides.compare()
    assert any(r.fragment for r in sides.streams[s][1].responses if r.watch_id == 3), "no fragment was sent"


def test_cancel_unknown_duplicate_id_future_revision_and_empty_range(sides: Sides) -> None:
    s = sides.stream()
    sides.cancel(s, 42)  # unknown: no answer
    sides.create(s, key=b"d/a", watch_id=5)
    sides.create(s, key=b"d/b", watch_id=5)  # duplicate
    sides.create(s, key=b"d/a")  # server-chosen
    sides.create(s, key=b"d/b", watch_id=1)
    sides.create(s, key=b"d/a")  # server-chosen: skips ids in use
    head = sides.put(b"d/x")
    sides.create(s, key=b"d/a", start_revision=head + 3)  # in the future: events from that revision on
    sides.create(s, key=b"d/b", range_end=b"d/a")  # range_end < key
    sides.create(s, key=b"d/a", range_end=b"d/a")  # range_end == key
    sides.settle()
    for i in range(5):
        sides.put(b"d/a", b"%d" % i)
    sides.cancel(s, 5)
    sides.cancel(s, 5)  # already canceled
    sides.put(b"d/a", b"after-cancel")
    sides.compare()


# ---------------------------------------------------------------------------------------------------- random


def _seed() -> int:
    return int(os.environ.get("COORD_WATCH_SEED", "7"))


def random_watch_create(gen: KvGen, rng: random.Random, stream_ids: set[int]) -> tuple[Create, bool]:
    """A create request and whether it starts in the past (then the sides must settle before the next write)."""
    key, end, _ = gen.key_range()
    create = Create(key=key, range_end=end)
    r = rng.random()
    if r < 0.5:
        start = 0
    else:
        start, _ = gen.revision()
    create.start_revision = start
    create.prev_kv = rng.random() < 0.3
    create.fragment = rng.random() < 0.1
    create.progress_notify = rng.random() < 0.1
    if rng.random() < 0.2:
        create.filters.append(rng.choice((NOPUT, NODELETE)))
    if rng.random() < 0.25:
        create.watch_id = rng.choice([*stream_ids, 1, 2, 3, 10, 11]) if stream_ids else rng.randint(1, 4)
    past = start != 0 and start <= gen.rev
    return create, past


def test_random_watch_streams(fresh_sides: Sides) -> None:
    """A seeded stream of writes (from the KV differential generator, reads left out) interleaved with watch
    creates (every key shape, past/current/future/compacted/negative start revisions, prev_kv, filters, fragment,
    client-chosen and duplicate ids), cancels and progress requests on three streams."""
    sides = fresh_sides
    seed = _seed()
    rng = random.Random(seed)
    gen = KvGen(seed)
    streams = [sides.stream() for _ in range(3)]
    ids: dict[int, set[int]] = {s: set() for s in streams}
    settles, budget = 0, 15  # past-start creates and cancels each wait for quiet: keep them bounded
    deadline = time.monotonic() + 120
    for _ in range(300):
        if time.monotonic() > deadline:  # bounded in time too; what ran is still compared below
            break
        r = rng.random()
        stream = rng.choice(streams)
        if r < 0.12:
            create, past = random_watch_create(gen, rng, ids[stream])
            if past and settles >= budget:
                create.start_revision = 0
                past = False
            sides.watch(stream, WatchRequest(create_request=create))
            if create.watch_id:
                ids[stream].add(create.watch_id)
            if past:
                settles += 1
                sides.settle()
        elif r < 0.15 and settles < budget:
            settles += 1
            sides.cancel(stream, rng.choice([*ids[stream], 0, 1, 2, 99]))
        elif r < 0.17:
            sides.progress(stream)
        else:
            op = gen.next_op()
            if op.method == "Range":
                continue
            gen.observe(op, sides.write(op.method, op.request).response)
    sides.compare()
