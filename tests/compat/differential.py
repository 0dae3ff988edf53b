"""Send one request to two etcd v3 servers and compare the answers, normalised only where etcd itself is not exact.

Normalisation (and nothing else):
- ``header.cluster_id``, ``header.member_id`` and ``header.raft_term`` are zeroed, in the top-level header and in
  every inner txn response header. ``header.revision`` is compared.
- Sorting by a target other than KEY: etcd uses Go's ``sort.Sort``, which is not stable. Up to 12 elements it is an
  insertion sort (stable, so ties keep key order and both sides must agree exactly); above that, equal elements may
  come out in any order. So when the reference's ``count`` exceeds 12 (``count`` bounds the number of sorted
  elements), runs of equal sort values are compared as sets (ordered by key), and when the result was cut by
  ``limit`` (``more`` is true) the last run is compared by its sort values only, because which of the tied keys
  survive the cut is arbitrary. With ``keys_only`` and target VALUE the sort values are not visible: the keys are
  compared as a set, or by number only when cut.
- Errors are compared by gRPC status code and details (message) exactly.
Everything else (kvs, count, more, deleted, prev_kvs, succeeded, responses, compact results) must be byte-identical
after that normalisation (deterministic protobuf serialisation).
"""

from __future__ import annotations

import difflib
import itertools
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import text_format
from google.protobuf.message import Message

from coord._proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from coord._proto.mvccpb import kv_pb2

__all__ = [
    "CHANNEL_OPTIONS",
    "Outcome",
    "Peer",
    "call",
    "describe",
    "normalise",
    "render",
    "render_request",
]

#: gRPC channel options: responses of a 128-op txn over 64 KiB values exceed the default 4 MiB receive limit.
CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_receive_message_length", 256 * 1024 * 1024),
    ("grpc.max_send_message_length", 256 * 1024 * 1024),
]

#: Go's sort.Sort uses insertion sort (stable) for at most this many elements.
STABLE_SORT_MAX = 12


class Peer:
    """Sync gRPC stubs for one server."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.channel = grpc.insecure_channel(endpoint, options=CHANNEL_OPTIONS)
        self.kv = rpc_pb2_grpc.KVStub(self.channel)
        self.maintenance = rpc_pb2_grpc.MaintenanceStub(self.channel)
        self.cluster = rpc_pb2_grpc.ClusterStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Peer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class Outcome:
    """A response, or an error as (status code name, details)."""

    response: Message | None
    code: str = "OK"
    details: str = ""

    @property
    def ok(self) -> bool:
        return self.response is not None


def call(peer: Peer, method: str, request: Message, timeout: float = 30.0) -> Outcome:
    """Invoke KV.<method> (or Maintenance.<method> for Status/HashKV) and capture the outcome."""
    service: Any = peer.maintenance if method in ("Status", "HashKV", "Hash") else peer.kv
    try:
        return Outcome(getattr(service, method)(request, timeout=timeout))
    except grpc.RpcError as err:
        code = err.code() if hasattr(err, "code") else None
        details = err.details() if hasattr(err, "details") else str(err)
        return Outcome(None, code.name if code is not None else "UNKNOWN", details or "")


# ---------------------------------------------------------------------------- normalisation


def _blank_header(header: rpc_pb2.ResponseHeader) -> None:
    header.cluster_id = 0
    header.member_id = 0
    header.raft_term = 0


def _sort_value(kv: kv_pb2.KeyValue, target: int) -> int | bytes:
    if target == rpc_pb2.RangeRequest.VERSION:
        return int(kv.version)
    if target == rpc_pb2.RangeRequest.CREATE:
        return int(kv.create_revision)
    if target == rpc_pb2.RangeRequest.MOD:
        return int(kv.mod_revision)
    if target == rpc_pb2.RangeRequest.VALUE:
        return bytes(kv.value)
    return bytes(kv.key)


def _only_sort_field(kv: kv_pb2.KeyValue, target: int) -> kv_pb2.KeyValue:
    out = kv_pb2.KeyValue()
    if target == rpc_pb2.RangeRequest.VERSION:
        out.version = kv.version
    elif target == rpc_pb2.RangeRequest.CREATE:
        out.create_revision = kv.create_revision
    elif target == rpc_pb2.RangeRequest.MOD:
        out.mod_revision = kv.mod_revision
    elif target == rpc_pb2.RangeRequest.VALUE:
        out.value = kv.value
    return out


def _normalise_range(request: rpc_pb2.RangeRequest, response: rpc_pb2.RangeResponse, ref_count: int) -> None:
    target = request.sort_target
    if target == rpc_pb2.RangeRequest.KEY or ref_count <= STABLE_SORT_MAX or not response.kvs:
        return
    kvs = [kv_pb2.KeyValue.FromString(kv.SerializeToString()) for kv in response.kvs]
    out: list[kv_pb2.KeyValue] = []
    if target == rpc_pb2.RangeRequest.VALUE and request.keys_only:
        out = [kv_pb2.KeyValue() for _ in kvs] if response.more else sorted(kvs, key=lambda kv: bytes(kv.key))
    else:
        groups = [list(g) for _, g in itertools.groupby(kvs, key=lambda kv: _sort_value(kv, target))]
        for i, group in enumerate(groups):
            if response.more and i == len(groups) - 1:
                out.extend(_only_sort_field(kv, target) for kv in group)
            else:
                out.extend(sorted(group, key=lambda kv: bytes(kv.key)))
    del response.kvs[:]
    response.kvs.extend(out)


def _normalise_txn(request: rpc_pb2.TxnRequest, response: rpc_pb2.TxnResponse, ref: rpc_pb2.TxnResponse) -> None:
    ops = request.success if response.succeeded else request.failure
    ref_ops = list(ref.responses) if ref.succeeded == response.succeeded else []
    for i, (op, rop) in enumerate(zip(ops, response.responses, strict=False)):
        which = rop.WhichOneof("response")
        if which is None:
            continue
        inner = getattr(rop, which)
        _blank_header(inner.header)
        ref_inner = (
            getattr(ref_ops[i], which) if i < len(ref_ops) and ref_ops[i].WhichOneof("response") == which else inner
        )
        if which == "response_range" and op.WhichOneof("request") == "request_range":
            _normalise_range(op.request_range, inner, ref_inner.count)
        elif which == "response_txn" and op.WhichOneof("request") == "request_txn":
            _normalise_txn(op.request_txn, inner, ref_inner)


def normalise(method: str, request: Message, response: Message, reference: Message | None = None) -> Message:
    """A normalised copy of ``response``. ``reference`` (the oracle's answer) decides whether sorting was unstable."""
    out = type(response)()
    out.CopyFrom(response)
    ref = reference if reference is not None and type(reference) is type(response) else response
    if out.HasField("header"):
        _blank_header(getattr(out, "header"))  # noqa: B009 - Message has no static header attribute
    if method == "Range":
        assert isinstance(request, rpc_pb2.RangeRequest) and isinstance(out, rpc_pb2.RangeResponse)
        assert isinstance(ref, rpc_pb2.RangeResponse)
        _normalise_range(request, out, ref.count)
    elif method == "Txn":
        assert isinstance(request, rpc_pb2.TxnRequest) and isinstance(out, rpc_pb2.TxnResponse)
        assert isinstance(ref, rpc_pb2.TxnResponse)
        _normalise_txn(request, out, ref)
    return out


# ---------------------------------------------------------------------------- comparison and rendering


def render(method: str, request: Message, outcome: Outcome, reference: Outcome | None = None) -> str:
    """Text of a normalised outcome (the exact thing compared, as text)."""
    if outcome.response is None:
        return f"ERROR {outcome.code}: {outcome.details!r}\n"
    ref = reference.response if reference is not None else None
    msg = normalise(method, request, outcome.response, ref)
    return text_format.MessageToString(msg, as_utf8=False) or "<empty response>\n"


def same(method: str, request: Message, a: Outcome, b: Outcome) -> bool:
    """True when the two outcomes are equal after normalisation (``a`` is the reference)."""
    if a.response is None or b.response is None:
        return (a.code, a.details, a.response is None) == (b.code, b.details, b.response is None)
    na = normalise(method, request, a.response, a.response)
    nb = normalise(method, request, b.response, a.response)
    return na.SerializeToString(deterministic=True) == nb.SerializeToString(deterministic=True)


def render_request(method: str, request: Message, limit: int = 6000) -> str:
    """The request as text, with huge values shortened."""
    text = text_format.MessageToString(request, as_utf8=False)
    if len(text) > limit:
        text = text[:limit] + f"\n... ({len(text) - limit} more characters)\n"
    return f"{method} {text}"


def describe(
    method: str, request: Message, a: Outcome, b: Outcome, a_name: str = "etcd", b_name: str = "target"
) -> str:
    """Request, both normalised outcomes and a unified diff, for failure messages."""
    ta = render(method, request, a, a)
    tb = render(method, request, b, a)
    diff = "".join(difflib.unified_diff(ta.splitlines(True), tb.splitlines(True), a_name, b_name))
    return (
        f"request: {render_request(method, request)}\n"
        f"--- {a_name} (normalised):\n{_clip(ta)}\n--- {b_name} (normalised):\n{_clip(tb)}\n--- diff:\n{_clip(diff)}"
    )


def _clip(text: str, limit: int = 8000) -> str:
    return text if len(text) <= limit else text[:limit] + f"\n... ({len(text) - limit} more characters)\n"
