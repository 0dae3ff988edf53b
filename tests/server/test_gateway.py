"""The HTTP/JSON gateway: etcd's JSON rules, its streaming endpoints and its errors, on coord-server and compared with
real etcd 3.4's gateway.

* unit tests of the Go-compatible JSON decoding (no server);
* curl-like tests through coord's gateway: put, range, txn, watch (stream), lease grant and keepalive, lock,
  election, errors, CORS, the Authorization header as the auth token;
* a differential run: the same requests to etcd's gateway (on its client port) and coord's (on its HTTP port) give
  the same HTTP status and the same body once the header fields that legitimately differ (cluster_id, member_id,
  raft_term) are dropped.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from coord._proto.etcdserverpb import rpc_pb2
from coord.server.gateway import jsonpb
from coord.server.gateway.gojson import GoJSONError, ValueSplitter, parse_value
from coord.testing import ServerProcess, start_coord_server, start_etcd
from tests.conftest import require_etcd

# -- HTTP helpers (also used by test_gateway_fuzz and test_metrics) ----------------------------------------------------


def gateway_url(server: ServerProcess) -> str:
    """Where a server's gateway listens: coord's HTTP port, or etcd's client port."""
    return server.extra.get("http_url", server.url)


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


@dataclass
class Reply:
    status: int
    content_type: str
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


def request(
    base: str,
    path: str,
    body: bytes | str | dict[str, Any] | None = b"",
    *,
    method: str = "POST",
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> Reply:
    """One HTTP request; a dict body is sent as JSON. Never raises for an HTTP error status."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(base + path, data=data if method != "GET" else None, method=method)
    for key, value in (headers or {}).items():
        req.add_header(key, value)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return Reply(resp.status, resp.headers.get("Content-Type", ""), resp.read(), dict(resp.headers))
    except urllib.error.HTTPError as err:
        return Reply(err.code, err.headers.get("Content-Type", ""), err.read(), dict(err.headers))


def post_json(base: str, path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    """POST and decode a 200 answer; fails the test on any other status."""
    reply = request(base, path, body, headers=headers)
    assert reply.status == 200, (path, reply.status, reply.body)
    return reply.json()


class Stream:
    """A streaming gateway call read line by line (each line one JSON object); every read is bounded by ``timeout``."""

    def __init__(self, base: str, path: str, body: bytes | str, timeout: float = 20.0) -> None:
        parts = urllib.parse.urlsplit(base)
        self.conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
        self.conn.request("POST", path, body=body.encode() if isinstance(body, str) else body)
        self.response = self.conn.getresponse()

    @property
    def status(self) -> int:
        return self.response.status

    def line(self) -> Any:
        raw = self.response.readline()
        if not raw:
            raise EOFError("the stream ended")
        return json.loads(raw)

    def rest(self) -> bytes:
        return self.response.read()

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def assert_error(reply: Reply, status: int, code: int, message: str | None = None) -> None:
    """An etcd 3.4 unary error: the HTTP status, and ``{"error": m, "message": m, "code": code}``."""
    assert reply.status == status, (reply.status, reply.body)
    assert reply.content_type.startswith("application/json")
    body = reply.json()
    assert set(body) == {"error", "message", "code"}
    assert body["code"] == code
    assert body["error"] == body["message"]
    if message is not None:
        assert body["message"] == message


# -- Go-compatible JSON decoding (no server) ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"key":', "unexpected EOF"),
        ('{"key":"Zm9v",}', "invalid character '}' looking for beginning of object key string"),
        ('{key:"Zm9v"}', "invalid character 'k' looking for beginning of object key string"),
        ('{"key" "Zm9v"}', "invalid character '\"' after object key"),
        ('{"key":"Zm9v" "a":1}', "invalid character '\"' after object key:value pair"),
        ('{"key":"Zm9v\\x"}', "invalid character 'x' in string escape code"),
        ("garbage", "invalid character 'g' looking for beginning of value"),
        ("[]", "json: cannot unmarshal array into Go value of type map[string]json.RawMessage"),
        ('"str"', "json: cannot unmarshal string into Go value of type map[string]json.RawMessage"),
        ('{"key":5}', "json: cannot unmarshal number into Go value of type []uint8"),
        ('{"key":"@@@"}', "illegal base64 data at input byte 0"),
        ('{"key":"Zm9"}', "illegal base64 data at input byte 0"),
        ('{"key":"Zm=x"}', "illegal base64 data at input byte 2"),
        ('{"key":"Zm9vY"}', "illegal base64 data at input byte 4"),
        ('{"key":["Zm9v"]}', "json: cannot unmarshal string into Go value of type uint8"),
        ('{"limit":"abc"}', "invalid character 'a' looking for beginning of value"),
        ('{"limit":1.5}', "json: cannot unmarshal number 1.5 into Go value of type int64"),
        ('{"limit":"1e2"}', "json: cannot unmarshal number 1e2 into Go value of type int64"),
        (
            '{"limit":9223372036854775808}',
            "json: cannot unmarshal number 9223372036854775808 into Go value of type int64",
        ),
        ('{"limit":true}', "json: cannot unmarshal bool into Go value of type int64"),
        ('{"keys_only":"true"}', "json: cannot unmarshal string into Go value of type bool"),
        ('{"sort_order":"BOGUS"}', 'unknown value "BOGUS" for enum etcdserverpb.RangeRequest_SortOrder'),
    ],
)
def test_range_request_errors_use_gos_messages(text: str, message: str) -> None:
    with pytest.raises(GoJSONError) as caught:
        jsonpb.from_text(text, rpc_pb2.RangeRequest)
    assert str(caught.value) == message


def test_request_decoding_accepts_etcds_forms() -> None:
    req = jsonpb.from_text(
        '{"key":"Zm9v","rangeEnd":"Zm9w","limit":"5","revision":3,"sortOrder":"DESCEND","sort_target":4,'
        '"keys_only":true,"unknown":{"x":[1]},"count_only":null}',
        rpc_pb2.RangeRequest,
    )
    assert (req.key, req.range_end, req.limit, req.revision) == (b"foo", b"fop", 5, 3)
    assert req.sort_order == rpc_pb2.RangeRequest.DESCEND and req.sort_target == rpc_pb2.RangeRequest.VALUE
    assert req.keys_only and not req.count_only
    # The lowerCamel name wins over the proto name; bytes may be an array of numbers; a null oneof message is unset.
    assert jsonpb.from_text('{"range_end":"YQ==","rangeEnd":"Yg=="}', rpc_pb2.RangeRequest).range_end == b"b"
    assert jsonpb.from_text('{"key":[102,111]}', rpc_pb2.RangeRequest).key == b"fo"
    assert jsonpb.from_text('{"create_request":null}', rpc_pb2.WatchRequest).WhichOneof("request_union") is None
    txn = jsonpb.from_text(
        '{"compare":[{"key":"YQ==","target":"VALUE","result":"NOT_EQUAL","value":""}],'
        '"success":[{"request_put":{"key":"YQ==","value":"Yg=="}}]}',
        rpc_pb2.TxnRequest,
    )
    assert txn.compare[0].WhichOneof("target_union") == "value"
    assert txn.success[0].request_put.value == b"b"


def test_response_encoding_follows_etcd() -> None:
    resp = rpc_pb2.RangeResponse(count=1)
    resp.header.revision = 7
    resp.kvs.add(key=b"foo", value=b"", create_revision=2, mod_revision=7, version=3)
    assert jsonpb.to_json(resp) == {
        "header": {"revision": "7"},
        "kvs": [{"key": "Zm9v", "create_revision": "2", "mod_revision": "7", "version": "3"}],
        "count": "1",
    }
    assert jsonpb.to_json(rpc_pb2.HashResponse(hash=4111939199)) == {"hash": 4111939199}
    event = rpc_pb2.WatchResponse(watch_id=-1)
    event.events.add(type=1).kv.key = b"k"
    assert jsonpb.to_json(event) == {"watch_id": "-1", "events": [{"type": "DELETE", "kv": {"key": "aw=="}}]}


def test_body_values_are_split_however_the_bytes_arrive() -> None:
    body = b' {"a":"x}\\"y"}\n[1,{"b":[2]}]"s\\"" 12 true{}nul'
    expected = [b'{"a":"x}\\"y"}', b'[1,{"b":[2]}]', b'"s\\""', b"12", b"true", b"{}"]
    for size in (1, 2, 3, 7, len(body)):
        splitter = ValueSplitter(1000)
        values: list[bytes] = []
        for i in range(0, len(body), size):
            values += splitter.feed(body[i : i + size])
        assert values == expected
        assert splitter.finish() == b"nul"
    assert parse_value('{"a":1,"a":2}')["a"].literal == "2"  # a repeated name keeps the last value, as in Go


# -- coord's gateway -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def coord(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_coord_server(
        tmp_path_factory.mktemp("gateway") / "coord", extra_args=["--max-request-bytes", "65536"]
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def base(coord: ServerProcess) -> str:
    return gateway_url(coord)


def test_curl_put_and_range(base: str) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    out = subprocess.run(
        [curl, "-sS", "-L", f"{base}/v3/kv/put", "-X", "POST", "-d", '{"key":"Zm9v","value":"YmFy"}'],
        capture_output=True,
        timeout=30,
        check=True,
    )
    header = json.loads(out.stdout)["header"]
    assert int(header["revision"]) >= 2
    got = post_json(base, "/v3/kv/range", {"key": b64("foo")})
    assert got["kvs"][0]["value"] == b64("bar") and got["count"] == "1"


def test_put_range_delete_with_prev_kv(base: str) -> None:
    first = post_json(base, "/v3/kv/put", {"key": b64("pk/a"), "value": b64("1")})
    second = post_json(base, "/v3/kv/put", {"key": b64("pk/a"), "value": b64("2"), "prev_kv": True})
    assert second["prev_kv"]["value"] == b64("1")
    assert int(second["header"]["revision"]) == int(first["header"]["revision"]) + 1
    post_json(base, "/v3/kv/put", {"key": b64("pk/b"), "value": b64("3")})
    listed = post_json(
        base, "/v3/kv/range", {"key": b64("pk/"), "range_end": b64("pk0"), "sort_order": "DESCEND", "keys_only": True}
    )
    assert [kv["key"] for kv in listed["kvs"]] == [b64("pk/b"), b64("pk/a")]
    assert all("value" not in kv for kv in listed["kvs"])
    deleted = post_json(base, "/v3/kv/deleterange", {"key": b64("pk/"), "range_end": b64("pk0"), "prev_kv": True})
    assert deleted["deleted"] == "2" and len(deleted["prev_kvs"]) == 2


def test_txn(base: str) -> None:
    txn = {
        "compare": [{"key": b64("tx"), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
        "success": [{"request_put": {"key": b64("tx"), "value": b64("new")}}],
        "failure": [{"request_range": {"key": b64("tx")}}],
    }
    first = post_json(base, "/v3/kv/txn", txn)
    assert first["succeeded"] is True and "response_put" in first["responses"][0]
    second = post_json(base, "/v3/kv/txn", txn)
    assert "succeeded" not in second  # false is a default: omitted, as etcd does
    assert second["responses"][0]["response_range"]["kvs"][0]["value"] == b64("new")


def test_watch_streams_events_until_the_client_leaves(base: str, coord: ServerProcess) -> None:
    start = int(post_json(base, "/v3/kv/put", {"key": b64("w/1"), "value": b64("a")})["header"]["revision"])
    body = json.dumps({"create_request": {"key": b64("w/"), "range_end": b64("w0"), "start_revision": str(start)}})
    with Stream(base, "/v3/watch", body) as stream:
        assert stream.status == 200
        created = stream.line()["result"]
        assert created["created"] is True
        history = stream.line()["result"]
        assert [e["kv"]["value"] for e in history["events"]] == [b64("a")]
        # The HTTP body ended long ago; the watch keeps delivering, as etcd's does.
        post_json(base, "/v3/kv/put", {"key": b64("w/2"), "value": b64("b")})
        post_json(base, "/v3/kv/deleterange", {"key": b64("w/1")})
        put = stream.line()["result"]["events"][0]
        assert "type" not in put and put["kv"]["key"] == b64("w/2")
        delete = stream.line()["result"]["events"][0]
        assert delete["type"] == "DELETE" and delete["kv"]["key"] == b64("w/1")
    # Closing the connection ends the call on the server (the open watch-stream gauge goes back to 0).
    wait_for_metric(base, "etcd_debugging_mvcc_watch_stream_total", 0.0)


def test_watch_with_several_requests_in_one_body(base: str) -> None:
    body = '{"create_request":{"key":"bXc="}} {"create_request":{"key":"bXc=","watch_id":"7"}} {"progress_request":{}}'
    with Stream(base, "/v3/watch", body) as stream:
        ids = [stream.line()["result"].get("watch_id", "0") for _ in range(3)]
    assert ids == ["0", "7", "-1"]


def test_lease_grant_keepalive_timetolive_revoke(base: str) -> None:
    granted = post_json(base, "/v3/lease/grant", {"TTL": 30})
    lease = granted["ID"]
    assert granted["TTL"] == "30"
    post_json(base, "/v3/kv/put", {"key": b64("leased"), "value": b64("v"), "lease": lease})
    with Stream(base, "/v3/lease/keepalive", json.dumps({"ID": lease}) + json.dumps({"ID": lease})) as stream:
        assert [stream.line()["result"]["TTL"] for _ in range(2)] == ["30", "30"]
        assert stream.rest() == b""  # the keep-alive stream ends with the body, as in etcd
    ttl = post_json(base, "/v3/kv/lease/timetolive", {"ID": lease, "keys": True})
    assert ttl["grantedTTL"] == "30" and 0 < int(ttl["TTL"]) <= 30 and ttl["keys"] == [b64("leased")]
    assert lease in [item["ID"] for item in post_json(base, "/v3/lease/leases", {}).get("leases", [])]
    post_json(base, "/v3/kv/lease/revoke", {"ID": lease})
    assert "kvs" not in post_json(base, "/v3/kv/range", {"key": b64("leased")})
    with Stream(base, "/v3/lease/keepalive", json.dumps({"ID": lease})) as stream:
        assert "TTL" not in stream.line()["result"]  # unknown lease: TTL 0, omitted
    assert_error(request(base, "/v3/lease/revoke", {"ID": lease}), 404, 5, "etcdserver: requested lease not found")


def test_lock_and_election(base: str) -> None:
    lease = post_json(base, "/v3/lease/grant", {"TTL": 30})["ID"]
    locked = post_json(base, "/v3/lock/lock", {"name": b64("gl"), "lease": lease})
    assert base64.b64decode(locked["key"]).startswith(b"gl/")
    post_json(base, "/v3/lock/unlock", {"key": locked["key"]})
    assert_error(request(base, "/v3/election/leader", {"name": b64("ge")}), 500, 2, "election: no leader")
    campaign = post_json(base, "/v3/election/campaign", {"name": b64("ge"), "lease": lease, "value": b64("me")})
    with Stream(base, "/v3/election/observe", json.dumps({"name": b64("ge")})) as stream:
        assert stream.line()["result"]["kv"]["value"] == b64("me")
        post_json(base, "/v3/election/proclaim", {"leader": campaign["leader"], "value": b64("again")})
        assert stream.line()["result"]["kv"]["value"] == b64("again")
    post_json(base, "/v3/election/resign", {"leader": campaign["leader"]})
    post_json(base, "/v3/lease/revoke", {"ID": lease})


def test_errors(base: str, coord: ServerProcess) -> None:
    assert_error(request(base, "/v3/kv/range", {}), 400, 3, "etcdserver: key is not provided")
    assert_error(request(base, "/v3/kv/range", b""), 400, 3, "etcdserver: key is not provided")
    assert_error(request(base, "/v3/kv/put", '{"key":'), 400, 3, "unexpected EOF")
    assert_error(request(base, "/v3/kv/range", {"key": b64("k"), "revision": "100000"}), 400, 11)
    post_json(base, "/v3/kv/put", {"key": b64("cmp"), "value": b64("1")})
    rev = int(post_json(base, "/v3/kv/put", {"key": b64("cmp"), "value": b64("2")})["header"]["revision"])
    post_json(base, "/v3/kv/compaction", {"revision": str(rev)})
    assert_error(
        request(base, "/v3/kv/range", {"key": b64("cmp"), "revision": str(rev - 1)}),
        400,
        11,
        "etcdserver: mvcc: required revision has been compacted",
    )
    assert_error(
        request(base, "/v3/kv/put", {"key": b64("x"), "lease": "12345"}),
        404,
        5,
        "etcdserver: requested lease not found",
    )
    assert_error(request(base, "/v3/kv/put", {"key": b64("big"), "value": b64(b"x" * 70_000)}), 400, 3)
    too_big = request(base, "/v3/kv/put", {"key": b64("big"), "value": b64(b"x" * 700_000)})
    assert_error(too_big, 429, 8)
    assert too_big.json()["message"].startswith("grpc: received message larger than max")
    for path in ("/v3/kv/nope", "/v3/", "/v3beta/kv"):
        reply = request(base, path, {})
        assert (reply.status, reply.body, reply.content_type) == (404, b"Not Found\n", "text/plain; charset=utf-8")
    assert request(base, "/nope", {}).body == b"404 page not found\n"
    # A write nested deeper than gRPC's deserializer allows is refused up front (the member could not decode it
    # from its log); the server keeps serving.
    deep: dict[str, Any] = {"success": [{"request_put": {"key": b64("deep"), "value": b64("v")}}]}
    for _ in range(120):
        deep = {"success": [{"request_txn": deep}]}
    assert_error(request(base, "/v3/kv/txn", deep), 400, 3, "coord: the request is nested too deeply")
    very_deep = '{"success":[{"request_txn":' * 3000
    assert_error(request(base, "/v3/kv/txn", very_deep), 400, 3, "invalid character '{' exceeded max depth")
    post_json(base, "/v3/kv/put", {"key": b64("after-deep"), "value": b64("ok")})
    reply = request(base, "/v3/kv/range", method="GET")
    assert (reply.status, reply.body) == (405, b"Method Not Allowed\n")
    assert coord.alive()


def test_v3beta_alias_and_cors(base: str) -> None:
    post_json(base, "/v3beta/kv/put", {"key": b64("beta"), "value": b64("b")})
    assert post_json(base, "/v3/kv/range", {"key": b64("beta")})["kvs"][0]["value"] == b64("b")
    reply = request(base, "/v3/kv/range", method="OPTIONS")
    assert reply.status == 200 and reply.body == b""
    assert reply.headers["Access-Control-Allow-Origin"] == "*"
    assert "authorization" in reply.headers["Access-Control-Allow-Headers"]


def wait_for_metric(base: str, name: str, value: float, timeout: float = 20.0) -> None:
    """Poll /metrics until the unlabelled sample ``name`` equals ``value``; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        for line in request(base, "/metrics", method="GET").body.decode().splitlines():
            if line.startswith(name + " "):
                last = float(line.split()[1])
        if last == value:
            return
        time.sleep(0.1)
    raise AssertionError(f"{name} is {last}, expected {value}")


# -- both servers: the Authorization header is the auth token ----------------------------------------------------------


@pytest.fixture(params=["coord", "etcd"])
def fresh(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerProcess]:
    if request.param == "etcd":
        require_etcd()
        server = start_etcd(tmp_path / "etcd")
    else:
        server = start_coord_server(tmp_path / "coord")
    try:
        yield server
    finally:
        server.stop()


def test_authorization_header_carries_the_token(fresh: ServerProcess) -> None:
    base = gateway_url(fresh)
    post_json(base, "/v3/auth/user/add", {"name": "root", "password": "pw"})
    post_json(base, "/v3/auth/user/grant", {"user": "root", "role": "root"})
    post_json(base, "/v3/auth/enable", {})
    put = {"key": b64("secured"), "value": b64("v")}
    assert_error(request(base, "/v3/kv/put", put), 400, 3, "etcdserver: user name is empty")
    assert_error(
        request(base, "/v3/kv/put", put, headers={"Authorization": "bogus"}), 401, 16, "etcdserver: invalid auth token"
    )
    assert_error(
        request(base, "/v3/auth/authenticate", {"name": "root", "password": "wrong"}),
        400,
        3,
        "etcdserver: authentication failed, invalid user ID or password",
    )
    token = post_json(base, "/v3/auth/authenticate", {"name": "root", "password": "pw"})["token"]
    post_json(base, "/v3/kv/put", put, headers={"Authorization": token})
    got = post_json(base, "/v3/kv/range", {"key": b64("secured")}, headers={"Authorization": token})
    assert got["kvs"][0]["value"] == b64("v")
    post_json(base, "/v3/auth/disable", {}, headers={"Authorization": token})


# -- differential: etcd's gateway and coord's answer alike ---------------------------------------------------------


def normalise(obj: Any) -> Any:
    """Drop what legitimately differs between two clusters: cluster_id, member_id and raft_term of headers."""
    if isinstance(obj, dict):
        return {k: normalise(v) for k, v in obj.items() if k not in ("cluster_id", "member_id", "raft_term")}
    if isinstance(obj, list):
        return [normalise(v) for v in obj]
    return obj


def observed(reply: Reply) -> tuple[int, str, Any]:
    kind = reply.content_type.split(";")[0]
    if kind == "application/json":
        return reply.status, kind, normalise(json.loads(reply.body))
    return reply.status, kind, reply.body.decode()


LEASE = "7587869380364009999"
DIFFERENTIAL_REQUESTS: list[tuple[str, str]] = [
    ("/v3/kv/put", '{"key":"Zm9v","value":"YmFy"}'),
    ("/v3/kv/put", '{"key":"Zm9v","value":"YmF6","prev_kv":true}'),
    ("/v3/kv/put", '{"key":"YS8x","value":""}'),
    ("/v3/kv/put", '{"key":"YS8y","value":"Mg=="}'),
    ("/v3/kv/range", '{"key":"Zm9v"}'),
    ("/v3/kv/range", '{"key":"YS8=","range_end":"YTA=","sortOrder":"DESCEND","limit":"1"}'),
    ("/v3/kv/range", '{"key":"AA==","range_end":"AA==","count_only":true}'),
    ("/v3/kv/range", '{"key":"YS8=","range_end":"YTA=","keys_only":true,"min_mod_revision":"4"}'),
    ("/v3/kv/range", '{"key":"Zm9v","revision":"100"}'),
    ("/v3/kv/range", "{}"),
    ("/v3/kv/range", ""),
    ("/v3/kv/range", "null"),
    ("/v3/kv/range", '{"key":"Zm9v"} trailing garbage'),
    ("/v3/kv/range", '{"key":'),
    ("/v3/kv/range", '{"key":5}'),
    ("/v3/kv/range", '{"key":"@@@"}'),
    ("/v3/kv/range", '{"key":"Zm9v","limit":1.5}'),
    ("/v3/kv/range", '{"key":"Zm9v","keys_only":"yes"}'),
    ("/v3/kv/range", '{"key":"Zm9v","sort_order":"BOGUS"}'),
    ("/v3/kv/range", '{"key":"Zm9v","sort_order":7}'),
    ("/v3/kv/range", "[]"),
    ("/v3/kv/range", '{"key":"Zm9v",}'),
    ("/v3/kv/txn", '{"compare":{}}'),
    ("/v3/kv/txn", '{"compare":[{"key":"Zm9v","target":true}]}'),
    (
        "/v3/kv/txn",
        '{"compare":[{"key":"Zm9v","target":"VALUE","result":"EQUAL","value":"YmF6"}],'
        '"success":[{"request_range":{"key":"Zm9v"}},{"request_put":{"key":"dA==","value":"dA=="}}],'
        '"failure":[{"request_delete_range":{"key":"Zm9v"}}]}',
    ),
    ("/v3/kv/txn", '{"success":[{"request_put":{"key":"dA=="}},{"request_put":{"key":"dA=="}}]}'),
    ("/v3/kv/deleterange", '{"key":"YS8=","range_end":"YTA=","prev_kv":true}'),
    ("/v3/kv/deleterange", '{"key":"bm9uZQ=="}'),
    ("/v3/kv/deleterange", "{}"),
    ("/v3/kv/compaction", '{"revision":"3"}'),
    ("/v3/kv/range", '{"key":"Zm9v","revision":"2"}'),
    ("/v3/kv/compaction", '{"revision":"2"}'),
    ("/v3/kv/compaction", '{"revision":"1000"}'),
    ("/v3/lease/grant", '{"TTL":"60","ID":"' + LEASE + '"}'),
    ("/v3/lease/grant", '{"TTL":"60","ID":"' + LEASE + '"}'),
    ("/v3/kv/put", '{"key":"bA==","value":"bA==","lease":"' + LEASE + '"}'),
    ("/v3/kv/put", '{"key":"bA==","lease":"12345"}'),
    ("/v3/kv/put", '{"key":"bA==","ignore_value":true,"value":"eA=="}'),
    ("/v3/kv/put", '{"key":"bm9uZQ==","ignore_lease":true}'),
    ("/v3/lease/leases", "{}"),
    ("/v3/kv/lease/leases", "{}"),
    ("/v3/lease/timetolive", '{"ID":"12345"}'),
    ("/v3/lock/lock", '{"name":"bGs=","lease":"' + LEASE + '"}'),
    ("/v3/lock/unlock", json.dumps({"key": b64(f"lk/{int(LEASE):x}")})),
    ("/v3/election/leader", '{"name":"ZWw="}'),
    ("/v3/election/proclaim", "{}"),
    ("/v3/lease/revoke", '{"ID":"' + LEASE + '"}'),
    ("/v3/kv/lease/revoke", '{"ID":"' + LEASE + '"}'),
    ("/v3/kv/range", '{"key":"bA=="}'),
    ("/v3/maintenance/hash", '{"revision":"x"}'),
    ("/v3/cluster/member/remove", '{"ID":"1"}'),
    ("/v3/cluster/member/promote", "{}"),
    ("/v3/maintenance/transfer-leadership", "{}"),
    ("/v3/maintenance/defragment", "{}"),
    ("/v3/auth/authenticate", '{"name":"x","password":"y"}'),
    ("/v3/auth/user/add", '{"name":5}'),
    ("/v3/auth/user/list", "{}"),
    ("/v3beta/kv/range", '{"key":"Zm9v"}'),
    ("/v3/kv/nope", "{}"),
    ("/v3/watch/x", "{}"),
    ("/nope", "{}"),
    ("/v3/watch", '{"create_request":'),
    ("/v3/watch", '{"create_request":{"key":5}}'),
]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    require_etcd()
    root = tmp_path_factory.mktemp("differential")
    etcd = start_etcd(root / "etcd", name="gw")
    try:
        coord = start_coord_server(root / "coord", name="gw")
        try:
            yield etcd, coord
        finally:
            coord.stop()
    finally:
        etcd.stop()


def test_differential_requests(pair: tuple[ServerProcess, ServerProcess]) -> None:
    etcd, coord = pair
    mismatches = []
    for path, body in DIFFERENTIAL_REQUESTS:
        want = observed(request(gateway_url(etcd), path, body))
        got = observed(request(gateway_url(coord), path, body))
        if path == "/v3/maintenance/hash":  # coord hashes its MVCC data, etcd its bolt pages: only the shape agrees
            assert isinstance(want[2].pop("hash"), int) and isinstance(got[2].pop("hash"), int)
        if want != got:
            mismatches.append(f"{path} {body}\n  etcd:  {want}\n  coord: {got}")
    assert not mismatches, "\n".join(mismatches)


def test_differential_streams(pair: tuple[ServerProcess, ServerProcess]) -> None:
    def run(server: ServerProcess) -> list[Any]:
        base = gateway_url(server)
        lines: list[Any] = []
        now = int(post_json(base, "/v3/kv/range", {"key": b64("st")})["header"]["revision"])
        create = {"key": b64("st"), "range_end": b64("su"), "start_revision": str(now + 1), "prev_kv": True}
        body = json.dumps({"create_request": create})
        with Stream(base, "/v3/watch", body) as stream:
            lines.append(stream.line())
            for value in ("1", "2"):
                post_json(base, "/v3/kv/put", {"key": b64("st"), "value": b64(value)})
                lines.append(stream.line())
            post_json(base, "/v3/kv/deleterange", {"key": b64("st")})
            lines.append(stream.line())
        lease = post_json(base, "/v3/lease/grant", {"TTL": 40, "ID": "77"})["ID"]
        with Stream(base, "/v3/lease/keepalive", f'{{"ID":"{lease}"}} {{"ID":"78"}} {{"ID": true}}') as stream:
            lines += [stream.line(), stream.line()]
            assert stream.rest() == b""
        post_json(base, "/v3/lease/revoke", {"ID": lease})
        return [normalise(line) for line in lines]

    etcd, coord = pair
    # Watch events carry absolute revisions; start both from the same revision.
    want, got = run(etcd), run(coord)
    for line in want + got:  # the created line's revision is each server's current one
        if line.get("result", {}).get("created"):
            line["result"]["header"].pop("revision", None)
    assert got == want


def test_differential_websocket_watch(pair: tuple[ServerProcess, ServerProcess]) -> None:
    """etcd's gateway also serves streams over websockets: one request or response JSON object per message."""

    async def run(server: ServerProcess) -> list[Any]:
        base = gateway_url(server)
        out: list[Any] = []
        async with aiohttp.ClientSession() as session, session.ws_connect(base + "/v3/watch") as ws:
            await ws.send_str(json.dumps({"create_request": {"key": b64("ws")}}))
            out.append(json.loads((await ws.receive(timeout=20)).data))
            async with session.post(base + "/v3/kv/put", json={"key": b64("ws"), "value": b64("1")}) as reply:
                assert reply.status == 200
            out.append(json.loads((await ws.receive(timeout=20)).data))
            await ws.send_str(json.dumps({"create_request": {"key": b64("ws2"), "watch_id": "5"}}))
            out.append(json.loads((await ws.receive(timeout=20)).data))
        async with aiohttp.ClientSession() as session, session.ws_connect(base + "/v3/lease/keepalive") as ws:
            await ws.send_str('{"ID":"99"}')
            out.append(json.loads((await ws.receive(timeout=20)).data))
        return [normalise(line) for line in out]

    etcd, coord = pair
    want, got = asyncio.run(run(etcd)), asyncio.run(run(coord))
    for line in want + got:  # absolute revisions differ with each server's history
        line["result"]["header"].pop("revision", None)
        for event in line["result"].get("events", []):
            event["kv"] = {k: v for k, v in event["kv"].items() if not k.endswith("revision")}
    assert got == want
    wait_for_metric(gateway_url(coord), "etcd_debugging_mvcc_watch_stream_total", 0.0)
