"""/metrics: the gRPC interceptor's counters and latencies, member-state callbacks, and what a running coord-server
exports (etcd's metric names)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import grpc.aio
import pytest
from prometheus_client.parser import text_string_to_metric_families

from coord._proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from coord.server.metrics import HAS_LEADER, LEASES, WATCH_STREAMS, Metrics
from coord.testing import ServerProcess, start_coord_server
from tests.server.test_gateway import b64, gateway_url, post_json, request


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition: (name, sorted labels) -> value."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, tuple(sorted(labels.items()))))


# -- the interceptor on a real grpc.aio server (in this process) ------------------------------------------------------


class _KV(rpc_pb2_grpc.KVServicer):
    async def Range(self, request: rpc_pb2.RangeRequest, context: Any) -> rpc_pb2.RangeResponse:
        if not request.key:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: key is not provided")
        if request.key == b"boom":
            raise RuntimeError("boom")
        return rpc_pb2.RangeResponse(count=1)


class _Watch(rpc_pb2_grpc.WatchServicer):
    def __init__(self) -> None:
        self.opened = asyncio.Event()

    async def Watch(self, request_iterator: Any, context: Any) -> None:  # type: ignore[override]
        self.opened.set()
        while True:
            request = await context.read()
            if not isinstance(request, rpc_pb2.WatchRequest):
                return
            await context.write(rpc_pb2.WatchResponse(created=True))


def test_interceptor_counts_calls_codes_and_open_streams() -> None:
    metrics = Metrics()
    other = Metrics()  # a second member in the same process keeps its own numbers

    async def scenario() -> str:
        server = grpc.aio.server(interceptors=[metrics.interceptor()])
        watch = _Watch()
        rpc_pb2_grpc.add_KVServicer_to_server(_KV(), server)
        rpc_pb2_grpc.add_WatchServicer_to_server(watch, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                kv = rpc_pb2_grpc.KVStub(channel)
                await kv.Range(rpc_pb2.RangeRequest(key=b"a"))
                await kv.Range(rpc_pb2.RangeRequest(key=b"b"))
                for key in (b"", b"boom"):
                    with pytest.raises(grpc.aio.AioRpcError):
                        await kv.Range(rpc_pb2.RangeRequest(key=key))
                with pytest.raises(grpc.aio.AioRpcError) as unknown:
                    await kv.Put(rpc_pb2.PutRequest(key=b"a"))  # the base servicer: UNIMPLEMENTED
                assert unknown.value.code() == grpc.StatusCode.UNIMPLEMENTED
                call = rpc_pb2_grpc.WatchStub(channel).Watch()
                await call.write(rpc_pb2.WatchRequest())
                await call.read()
                await asyncio.wait_for(watch.opened.wait(), 10)
                during = metrics.render()[0].decode()
                await call.done_writing()
                assert await call.read() is grpc.aio.EOF  # type: ignore[attr-defined]
            return during
        finally:
            await server.stop(None)

    during = asyncio.run(scenario())
    text = metrics.render()[0].decode()
    unary = {"grpc_type": "unary", "grpc_service": "etcdserverpb.KV"}
    assert value(text, "grpc_server_started_total", grpc_method="Range", **unary) == 4
    assert value(text, "grpc_server_handled_total", grpc_method="Range", grpc_code="OK", **unary) == 2
    assert value(text, "grpc_server_handled_total", grpc_method="Range", grpc_code="InvalidArgument", **unary) == 1
    assert value(text, "grpc_server_handled_total", grpc_method="Range", grpc_code="Unknown", **unary) == 1
    assert value(text, "grpc_server_handled_total", grpc_method="Put", grpc_code="Unimplemented", **unary) == 1
    assert value(text, "grpc_server_handling_seconds_count", grpc_method="Range", **unary) == 4
    bidi = {"grpc_type": "bidi_stream", "grpc_service": "etcdserverpb.Watch", "grpc_method": "Watch"}
    assert value(during, WATCH_STREAMS) == 1
    assert value(during, "grpc_server_handled_total", grpc_code="OK", **bidi) is None
    assert value(text, WATCH_STREAMS) == 0
    assert value(text, "grpc_server_handled_total", grpc_code="OK", **bidi) == 1
    assert value(other.render()[0].decode(), "grpc_server_started_total", grpc_method="Range", **unary) is None


def test_callbacks_are_read_at_scrape_time() -> None:
    metrics = Metrics()
    state = {"leases": 3}
    metrics.gauge_callback(LEASES, "Live leases.", lambda: state["leases"])
    metrics.gauge_callback("coord_test_labelled", "A labelled gauge.", lambda: 1, labels={"server_id": "abc"})
    metrics.counter_callback("coord_test_events_total", "A counter.", lambda: 7)
    metrics.gauge_callback("coord_test_broken", "Raises.", lambda: 1 / 0)
    body, content_type = metrics.render()
    text = body.decode()
    assert content_type.startswith("text/plain")
    assert value(text, LEASES) == 3
    assert value(text, "coord_test_labelled", server_id="abc") == 1
    assert value(text, "coord_test_events_total") == 7
    assert "coord_test_broken" not in text  # a failing callback is left out, the rest is served
    state["leases"] = 5
    metrics.gauge_callback(HAS_LEADER, "Replaced below.", lambda: 0)
    metrics.gauge_callback(HAS_LEADER, "Whether a leader exists.", lambda: 1)
    text = metrics.render()[0].decode()
    assert value(text, LEASES) == 5 and value(text, HAS_LEADER) == 1
    with pytest.raises(ValueError):
        metrics.counter_callback("coord_test_events", "A counter without _total.", lambda: 1)


# -- a running coord-server ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def coord(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_coord_server(tmp_path_factory.mktemp("metrics") / "coord")
    try:
        yield server
    finally:
        server.stop()


def scrape(server: ServerProcess) -> str:
    reply = request(gateway_url(server), "/metrics", method="GET")
    assert reply.status == 200 and reply.content_type.startswith("text/plain")
    return reply.body.decode()


def test_member_metrics(coord: ServerProcess) -> None:
    base = gateway_url(coord)
    before = scrape(coord)
    applied_before = value(before, "etcd_server_proposals_applied_total") or 0
    post_json(base, "/v3/kv/put", {"key": b64("m"), "value": b64("v")})
    lease = post_json(base, "/v3/lease/grant", {"TTL": 60})["ID"]
    with grpc.insecure_channel(coord.endpoint) as channel:
        rpc_pb2_grpc.KVStub(channel).Put(rpc_pb2.PutRequest(key=b"m2", value=b"v"))
        with pytest.raises(grpc.RpcError) as refused:
            rpc_pb2_grpc.KVStub(channel).Range(rpc_pb2.RangeRequest())
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value
    # grpc.aio sends an aborted call's status before the handler (and the interceptor) finishes: poll briefly.
    refused_range = {"grpc_type": "unary", "grpc_service": "etcdserverpb.KV", "grpc_method": "Range"}
    deadline = time.monotonic() + 20
    while (
        value(text := scrape(coord), "grpc_server_handled_total", grpc_code="InvalidArgument", **refused_range) is None
    ):
        assert time.monotonic() < deadline, "the refused Range was not counted"
        time.sleep(0.05)
    put = {"grpc_type": "unary", "grpc_service": "etcdserverpb.KV", "grpc_method": "Put"}
    assert value(text, "grpc_server_handled_total", grpc_code="OK", **put) == 2  # one by gRPC, one by the gateway
    assert value(text, "grpc_server_handled_total", grpc_code="InvalidArgument", **refused_range) == 1
    assert value(text, "etcd_server_has_leader") == 1
    assert value(text, "etcd_server_is_leader") == 1
    assert (value(text, "etcd_server_leader_changes_seen_total") or 0) >= 1
    assert value(text, "etcd_server_proposals_failed_total") == 0
    assert value(text, "etcd_server_proposals_pending") == 0  # every proposal made was applied
    assert (value(text, "etcd_server_proposals_applied_total") or 0) >= applied_before + 3
    assert (value(text, "etcd_server_proposals_committed_total") or 0) >= (
        value(text, "etcd_server_proposals_applied_total") or 0
    )
    assert (value(text, "coord_server_raft_term") or 0) >= 1
    assert (value(text, "etcd_mvcc_db_total_size_in_bytes") or 0) > 0
    assert value(text, "etcd_debugging_mvcc_db_total_size_in_bytes") == value(text, "etcd_mvcc_db_total_size_in_bytes")
    assert value(text, "etcd_debugging_mvcc_current_revision") == float(
        post_json(base, "/v3/kv/range", {"key": b64("m")})["header"]["revision"]
    )
    assert value(text, LEASES) == 1
    assert value(text, "etcd_server_version", server_version="3.4.0") == 1
    post_json(base, "/v3/lease/revoke", {"ID": lease})
    assert value(scrape(coord), LEASES) == 0


def test_watch_stream_gauge_follows_open_watches(coord: ServerProcess) -> None:
    release = threading.Event()

    def requests() -> Iterator[rpc_pb2.WatchRequest]:
        yield rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"wg"))
        yield rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"wg/", range_end=b"wg0"))
        release.wait(30)  # keep the request side open while the gauge is read

    with grpc.insecure_channel(coord.endpoint) as channel:
        responses = rpc_pb2_grpc.WatchStub(channel).Watch(requests())
        try:
            assert next(responses).created and next(responses).created
            text = scrape(coord)
            assert value(text, WATCH_STREAMS) == 1
            assert value(text, "etcd_debugging_mvcc_watcher_total") == 2
        finally:
            responses.cancel()
            release.set()
    deadline = time.monotonic() + 20
    while value(text := scrape(coord), WATCH_STREAMS) != 0 or value(text, "etcd_debugging_mvcc_watcher_total") != 0:
        assert time.monotonic() < deadline, "the watch gauges did not return to 0"
        time.sleep(0.1)
