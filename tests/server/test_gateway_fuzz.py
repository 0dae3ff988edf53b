"""Fuzzing coord-server's JSON gateway with hypothesis: malformed JSON, wrong types, oversized bodies and random paths.

Properties checked for every request:
* it gets a clear answer: 200, or an HTTP error whose body is etcd's ``{"error": m, "message": m, "code": N}`` with
  the HTTP status grpc-gateway maps N to (404/405 plain text for paths and methods the gateway does not serve);
* no answer is an unhandled exception (grpc.aio's ``Unexpected <class ...>`` message, code Unknown);
and at the end: the server process is alive, /health answers, and the data written before the fuzzing is intact.

The server runs with a small --max-request-bytes so oversized requests stay cheap. Requests that would block by
design (a lock held by someone else, an election observed forever) are not generated: the fuzzed unary paths are
those that answer at once, and streaming paths only get bodies whose first value is malformed.
"""

from __future__ import annotations

import base64
import json
import string
import urllib.parse
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coord.server.gateway import jsonpb
from coord.server.gateway.gojson import GoJSONError, ValueSplitter, parse_value
from coord.server.gateway.routes import ROUTES
from coord.server.gateway.streams import http_status
from coord.testing import ServerProcess, start_coord_server
from tests.server.test_gateway import Reply, b64, gateway_url, post_json, request

MAX_REQUEST_BYTES = 4096
GRPC_LIMIT = MAX_REQUEST_BYTES + 512 * 1024  # coord-server's gRPC receive limit, as etcd's
REQUEST_TIMEOUT = 15.0
FUZZ = settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# Unary endpoints that answer at once whatever the (valid) request: no waiting on locks, elections or leaders.
UNARY_PATHS = sorted(
    path
    for path, route in ROUTES.items()
    if not route.client_streaming
    and not route.server_streaming
    and path not in ("lock/lock", "election/campaign", "maintenance/transfer-leadership", "cluster/member/add")
)
STREAMING_PATHS = sorted(path for path, route in ROUTES.items() if route.client_streaming or route.server_streaming)
# Keys the fuzzing must not touch; the fuzzer's writes go elsewhere (see sendable).
SEED = {f"seed/{i}": f"value-{i}" for i in range(10)}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = start_coord_server(
        tmp_path_factory.mktemp("gateway-fuzz") / "coord", extra_args=["--max-request-bytes", str(MAX_REQUEST_BYTES)]
    )
    try:
        base = gateway_url(process)
        for key, value in SEED.items():
            post_json(base, "/v3/kv/put", {"key": b64(key), "value": b64(value)})
        yield process
        assert process.alive(), process.log()[-4000:]
        assert request(base, "/health", method="GET").json() == {"health": "true"}, process.log()[-4000:]
        listed = request(base, "/v3/kv/range", {"key": b64("seed/"), "range_end": b64("seed0")})
        assert listed.status == 200, (listed.body, process.log()[-8000:])
        listed = listed.json()
        got = {json_b64(kv["key"]): json_b64(kv["value"]) for kv in listed["kvs"]}
        assert got == SEED
    finally:
        process.stop()


def json_b64(text: str) -> str:
    return base64.b64decode(text).decode()


def assert_clear(reply: Reply, path: str) -> None:
    """The answer is 200 JSON, an etcd error body, or the gateway's plain 404/405; never an unhandled exception."""
    if reply.status in (404, 405) and reply.content_type.startswith("text/plain"):
        assert reply.body in (b"Not Found\n", b"Method Not Allowed\n", b"404 page not found\n")
        return
    assert reply.content_type.startswith("application/json"), (path, reply.status, reply.body[:200])
    body = reply.json()
    if reply.status == 200:
        assert isinstance(body, dict)
        return
    if "error" in body and isinstance(body["error"], dict):  # a streaming call's error object
        error = body["error"]
        assert reply.status == error["http_code"] == http_status_of(error["grpc_code"])
        message = error["message"]
    else:
        assert set(body) == {"error", "message", "code"}, body
        assert body["error"] == body["message"]
        assert reply.status == http_status_of(body["code"]), body
        message = body["message"]
    assert message, body
    assert not message.startswith("Unexpected "), (path, body)  # an exception escaped a servicer
    assert 400 <= reply.status < 600


def http_status_of(code: int) -> int:
    return http_status(next(c for c in grpc.StatusCode if c.value[0] == code))


# Endpoints where a valid request could disturb the seed data or the cluster: only invalid requests are sent there.
DESTRUCTIVE = {
    "kv/put",
    "kv/deleterange",
    "kv/txn",
    "auth/enable",
    "cluster/member/remove",
    "cluster/member/update",
    "maintenance/alarm",
}


def first_value_parses(body: bytes) -> bool:
    """Whether the body's first JSON value (the one a call acts on) is well-formed JSON, or the body has none."""
    splitter = ValueSplitter(len(body) + 1)
    values = [*splitter.feed(body), *filter(None, [splitter.finish()])]
    if not values:
        return True
    try:
        parse_value(values[0].decode("utf-8", "replace"))
    except GoJSONError:
        return False
    return True


def sendable(path: str, body: bytes) -> bool:
    """False for a request that is valid and could change the seed data (the fuzzing is about bad input)."""
    if path not in DESTRUCTIVE:
        return True
    values = ValueSplitter(len(body) + 1).feed(body + b" ")
    try:
        jsonpb.from_text(values[0].decode("utf-8", "replace") if values else "", ROUTES[path].request_type)
    except GoJSONError:
        return True
    return False


# -- strategies --------------------------------------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(["Zm9v", "AA==", "@@", "-1", "1e3", "9223372036854775808", "DESCEND", "PUT"]),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)


def field_names(path: str) -> list[str]:
    descriptor = ROUTES[path].request_type.DESCRIPTOR
    return [f.name for f in descriptor.fields] + [f.json_name for f in descriptor.fields]


@st.composite
def typed_bodies(draw: st.DrawFn) -> tuple[str, Any]:
    """A unary path and a JSON object using the request's real field names with values of random types."""
    path = draw(st.sampled_from(UNARY_PATHS))
    names = field_names(path) or ["x"]
    body = draw(st.dictionaries(st.sampled_from(names), json_values, max_size=5))
    return path, body


@st.composite
def broken_json(draw: st.DrawFn) -> str:
    """Valid JSON cut short or with a character spliced in."""
    text = json.dumps(draw(st.dictionaries(st.text(max_size=8), json_values, min_size=1, max_size=4)))
    cut = draw(st.integers(min_value=1, max_value=max(1, len(text) - 1)))
    if draw(st.booleans()):
        return text[:cut]
    return text[:cut] + draw(st.sampled_from([*",:{}[]\"'\\x", "\x00", "\n", "é", "NaN", "tru"])) + text[cut:]


# -- properties ------------------------------------------------------------------------------------------------------


@FUZZ
@given(path=st.sampled_from(UNARY_PATHS), body=st.binary(max_size=200))
def test_random_bytes(server: ServerProcess, path: str, body: bytes) -> None:
    if not sendable(path, body):
        return
    assert_clear(request(gateway_url(server), "/v3/" + path, body), path)


@FUZZ
@given(path=st.sampled_from(UNARY_PATHS + STREAMING_PATHS), text=broken_json())
def test_broken_json(server: ServerProcess, path: str, text: str) -> None:
    try:
        json.loads(text)
        return  # the splice happened to keep it valid
    except ValueError:
        pass
    if path in STREAMING_PATHS and first_value_parses(text.encode()):
        return  # a streaming call whose first request is well formed would wait for events, by design
    if not sendable(path, text.encode()):
        return
    assert_clear(request(gateway_url(server), "/v3/" + path, text.encode(), timeout=REQUEST_TIMEOUT), path)


@FUZZ
@given(case=typed_bodies())
def test_wrong_types(server: ServerProcess, case: tuple[str, Any]) -> None:
    path, body = case
    data = json.dumps(body).encode()
    if sendable(path, data):
        assert_clear(request(gateway_url(server), "/v3/" + path, data), path)


@FUZZ
@given(
    path=st.sampled_from(["kv/put", "kv/range", "kv/txn", "lease/grant", "watch", "lease/keepalive"]),
    beyond_grpc=st.booleans(),
    extra=st.integers(min_value=1, max_value=4 * MAX_REQUEST_BYTES),
    padding=st.integers(min_value=0, max_value=4 * MAX_REQUEST_BYTES),
)
def test_oversized_bodies(server: ServerProcess, path: str, beyond_grpc: bool, extra: int, padding: int) -> None:
    streaming = path in STREAMING_PATHS
    # Over --max-request-bytes (etcd's "request is too large" for writes), or over the gRPC message limit, which is
    # the only limit a watch or a keep-alive request has.
    size = (GRPC_LIMIT if beyond_grpc or streaming else MAX_REQUEST_BYTES) + extra
    value = "A" * (4 * ((size + 2) // 3))  # base64 of `size` bytes
    body = {
        "kv/put": {"key": b64("big/" + str(size)), "value": value},
        "kv/range": {"key": value},
        "kv/txn": {"success": [{"request_put": {"key": b64("big/txn"), "value": value}}]},
        "lease/grant": {"TTL": 5, "bogus": value},
        "watch": {"create_request": {"key": value}},
        "lease/keepalive": {"ID": "1", "pad": value},
    }[path]
    text = json.dumps(body) + " " * padding
    reply = request(gateway_url(server), "/v3/" + path, text.encode(), timeout=REQUEST_TIMEOUT)
    assert_clear(reply, path)
    if path in ("kv/put", "kv/txn", "watch") or (path == "kv/range" and beyond_grpc):
        assert reply.status in (400, 429), reply.body[:200]  # too large for etcd's limit or for gRPC's
        if beyond_grpc or streaming:
            assert reply.json()["code"] == 8, reply.body[:200]


@FUZZ
@given(
    prefix=st.sampled_from(["/v3/", "/v3beta/", "/v3alpha/", "/", "/v3/kv/", "/v2/keys/"]),
    tail=st.text(alphabet=string.ascii_letters + string.digits + "-_./%~", max_size=30),
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
)
def test_random_paths(server: ServerProcess, prefix: str, tail: str, method: str) -> None:
    path = prefix + urllib.parse.quote(tail, safe="/")
    route = path.removeprefix("/v3/").removeprefix("/v3beta/")
    if route in ROUTES or path in ("/health", "/version", "/metrics") or route.strip("/") in ROUTES:
        return  # a real endpoint, exercised elsewhere
    reply = request(gateway_url(server), path, b"{}", method=method)
    assert reply.status in (404, 405), (path, reply.status)
    assert_clear(reply, path)
