"""Fuzzing coord-server over gRPC with hypothesis: random requests built from the protobuf descriptors, with every field
at the edges of its type, and raw bytes that may not decode at all.

Properties checked for every call:
* it answers: OK, or a status with a clear message. UNKNOWN only where etcd answers UNKNOWN too (the Lock and
  Election services report every error that way; a password given for a no-password user); INTERNAL only for a
  request whose bytes do not decode, with etcd's (grpc-go's) ``grpc: error unmarshalling request: ...``; UNAVAILABLE
  only with etcd's retryable messages; never grpc.aio's ``Unexpected <class ...>`` (an exception escaped a servicer);
* a response decodes as the method's response type;
and at the end: the server process is alive (an exception escaping the applier stops a member), /health answers, the
data written before the fuzzing is intact, and the server log shows no traceback.

Requests that are valid and would change the seed data or the cluster (a delete over the seed keys, adding a member,
raising NOSPACE, creating the root user) are not sent: the fuzzing is about bad input. Requests that wait by design
(a lock someone holds, an election observed forever) are not generated either; a Lock or Campaign that succeeds is
released at once.

Three targets: one server with auth disabled (AuthEnable is fuzzed there only while no root user can exist); one with
auth enabled, called with a root token, a user's token, a bad token and none; and a 3-member cluster, called through
every member (followers forward to the leader), whose members must end with the same HashKV.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message
from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import strategies as st

from coord._proto.authpb import auth_pb2
from coord._proto.etcdserverpb import rpc_pb2
from coord._proto.v3electionpb import v3election_pb2
from coord._proto.v3lockpb import v3lock_pb2
from coord.server.applier import Applier
from coord.server.mvcc import KEY_TOO_LONG
from coord.server.rejection import Rejected
from coord.server.requests import Kind, encode
from coord.server.storage import Backend
from coord.server.storage.log import LogEntry
from coord.testing import Cluster, ServerProcess, start_coord_server

MAX_REQUEST_BYTES = 8192
GRPC_LIMIT = MAX_REQUEST_BYTES + 512 * 1024  # coord-server's gRPC receive limit, as etcd's
CALL_TIMEOUT = 20.0
SEED = {b"seed/%d" % i: b"value-%d" % i for i in range(10)}
EXTRA_ARGS = ["--max-request-bytes", str(MAX_REQUEST_BYTES), "--bcrypt-cost", "4"]
ROOT, USER, ROLE, PASSWORD = "root", "fuzz-user", "fuzz-role", "fuzz-password"


def fuzz(examples: int) -> Any:
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )


# -- the methods, from the service descriptors ------------------------------------------------------------------------


@dataclass(frozen=True)
class Method:
    service: str
    name: str
    request: Descriptor
    response: Descriptor
    client_streaming: bool
    server_streaming: bool

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"

    @property
    def key(self) -> str:
        return f"{self.service.split('.')[-1]}.{self.name}"

    @property
    def streaming(self) -> bool:
        return self.client_streaming or self.server_streaming


def message_class(descriptor: Descriptor) -> type[Message]:
    return message_factory.GetMessageClass(descriptor)  # type: ignore[no-any-return]


METHODS = {
    f"{service.name}.{method.name}": Method(
        service.full_name,
        method.name,
        method.input_type,
        method.output_type,
        method.client_streaming,
        method.server_streaming,
    )
    for file in (rpc_pb2.DESCRIPTOR, v3lock_pb2.DESCRIPTOR, v3election_pb2.DESCRIPTOR)
    for service in file.services_by_name.values()
    for method in service.methods
}
UNARY = sorted(k for k, m in METHODS.items() if not m.streaming)
STREAMING = sorted(k for k, m in METHODS.items() if m.streaming)
RECIPE_SERVICES = ("v3lockpb.Lock", "v3electionpb.Election")
# Sent to the 3-member cluster: what goes through the log or is forwarded to the leader.
CLUSTER_METHODS = sorted(
    k
    for k in UNARY
    if k.split(".")[0] in ("KV", "Lease", "Lock", "Election")
    or k in ("Maintenance.Alarm", "Maintenance.HashKV", "Maintenance.MoveLeader", "Maintenance.Status")
    or k in ("Auth.AuthEnable", "Auth.RoleAdd", "Auth.RoleGrantPermission", "Auth.UserAdd", "Auth.UserGrantRole")
    or k in ("Cluster.MemberAdd", "Cluster.MemberPromote", "Cluster.MemberRemove", "Cluster.MemberUpdate")
)


# -- values at the edges of their types -------------------------------------------------------------------------------

I64 = (-(2**63), 2**63 - 1)
U64 = (0, 2**64 - 1)
I32 = (-(2**31), 2**31 - 1)
U32 = (0, 2**32 - 1)


def ints(bounds: tuple[int, int], *edges: int) -> st.SearchStrategy[int]:
    lo, hi = bounds
    special = sorted({lo, hi, lo + 1, hi - 1, *(e for e in (-1, 0, 1, 2, *edges) if lo <= e <= hi)})
    return st.one_of(st.sampled_from(special), st.integers(max(lo, -3), min(hi, 40)), st.integers(lo, hi))


def enums(enum: EnumDescriptor) -> st.SearchStrategy[int]:
    """Known values, and the unknown and negative ones an open enum may carry."""
    return st.sampled_from([v.number for v in enum.values] + [-1, -(2**31), 2**31 - 1, 7, 99])


KEYS = st.one_of(
    st.sampled_from([b"", b"\x00", b"\x00\x00", b"\xff", b"\xff" * 8, b"fuzz", b"fuzz/", b"fuzz0", b"seed/", b"seed0"]),
    st.sampled_from([b"seed/1", b"a" * 501, b"a" * 502, b"\x00" * 251, b"\x00" * 300, b"k" * 2000]),
    st.binary(max_size=12).map(lambda b: b"fuzz/" + b),
    st.binary(max_size=6),
)
BYTES = st.one_of(KEYS, KEYS, KEYS, st.sampled_from([b"v" * (MAX_REQUEST_BYTES + 1), b"\x00" * 4000]))
TEXTS = st.one_of(
    st.sampled_from(["", "u", USER, ROLE, ROOT, "r\x00", "\u00e9", "x" * 401, "x" * 3000]),
    st.text(max_size=8),
)
PEER = "PEER"  # replaced by a member's own peer URL before sending
URLS = st.lists(
    st.one_of(
        st.sampled_from(["", "foo", "http://", "http://h", "http://h:", "http://127.0.0.1:1/path", "http://h:1/"]),
        st.sampled_from(["unix://h:1", "ftp://h:1", "http://[::1", "http://h:99999", "http://h:-1", "http://h:x"]),
        st.sampled_from(["http://h:1\x00", " http://h:1 ", PEER]),
        st.text(max_size=10),
    ),
    max_size=3,
)
MANY_OPS = st.sampled_from([128, 129, 200])
MAX_DEPTH = 6


def scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    t = field.type
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t == FieldDescriptor.TYPE_ENUM:
        return enums(field.enum_type)
    if t in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_SFIXED64):
        return ints(I64, 2**31, 9_000_000_000, 9_000_000_001)
    if t in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return ints(U64, 2**63, 2**63 - 1)
    if t in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SFIXED32):
        return ints(I32)
    if t in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return ints(U32)
    if t == FieldDescriptor.TYPE_BYTES:
        return BYTES
    if t == FieldDescriptor.TYPE_STRING:
        return TEXTS
    raise AssertionError(f"no strategy for {field.full_name} (type {t})")


@st.composite
def messages(draw: st.DrawFn, descriptor: Descriptor, depth: int = 0) -> Message:
    """A message of ``descriptor`` with random fields set (each field, or one member of each oneof, or none);
    nested messages (txn ops, compares, nested txns, permissions, leader keys) are built the same way."""
    msg = message_class(descriptor)()
    if depth >= MAX_DEPTH:
        return msg
    chosen = {oneof.name: draw(st.sampled_from([None, *oneof.fields])) for oneof in descriptor.oneofs}
    for f in descriptor.fields:
        if f.containing_oneof is not None:
            if chosen[f.containing_oneof.name] is not f:
                continue
        elif not draw(st.booleans()):
            continue
        is_message = f.type == FieldDescriptor.TYPE_MESSAGE
        if f.is_repeated and f.name.endswith("URLs"):
            getattr(msg, f.name).extend(draw(URLS))
        elif f.is_repeated and is_message:
            items = getattr(msg, f.name)
            if f.name in ("compare", "success", "failure") and draw(st.integers(0, 15)) == 0:
                item = draw(messages(f.message_type, MAX_DEPTH - 1))  # many ops, past --max-txn-ops
                for _ in range(draw(MANY_OPS)):
                    items.add().CopyFrom(item)
            else:
                for _ in range(draw(st.integers(0, 3))):
                    items.add().CopyFrom(draw(messages(f.message_type, depth + 1)))
        elif f.is_repeated:
            getattr(msg, f.name).extend(draw(st.lists(scalar(f), max_size=3)))
        elif is_message:
            getattr(msg, f.name).CopyFrom(draw(messages(f.message_type, depth + 1)))
        else:
            setattr(msg, f.name, draw(scalar(f)))
    return msg


@st.composite
def mutated(draw: st.DrawFn, method: Method) -> bytes:
    """Bytes near a valid request: a random request cut short, with a byte flipped, or with junk spliced in."""
    data = draw(messages(method.request)).SerializeToString()
    if not data:
        return draw(st.binary(min_size=1, max_size=16))
    at = draw(st.integers(0, len(data) - 1))
    how = draw(st.sampled_from(["cut", "flip", "splice", "tag"]))
    if how == "cut":
        return data[:at]
    if how == "flip":
        return data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]
    if how == "tag":  # a wrong wire type, a truncated field, an unknown field, a group
        junk = draw(st.sampled_from([b"\x08", b"\x0a\x7f", b"\xf8\xff\xff\xff\x0f\x01", b"\x0b", b"\x0c", b"\x07"]))
        return data[:at] + junk + data[at:]
    return data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]


def decodes(method: Method, body: bytes) -> Message | None:
    try:
        return message_class(method.request).FromString(body)
    except DecodeError:
        return None


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def unknown_field(blob: bytes) -> bytes:
    """``blob`` as a length-delimited field with a number no etcd message uses."""
    return varint(1000 << 3 | 2) + varint(len(blob)) + blob


# -- the targets, and what must not be sent to them -------------------------------------------------------------------


@dataclass
class Target:
    """Servers under fuzzing: one channel per member; ``tokens`` are the credentials calls may carry."""

    processes: list[ServerProcess]
    channels: list[grpc.Channel]
    member_ids: set[int]
    peer_urls: set[str]
    tokens: list[str | None] = field(default_factory=lambda: [None])
    admin_token: str | None = None  # for the filters' own reads and the final checks

    @property
    def auth(self) -> bool:
        return self.admin_token is not None


def covers_seed(key: bytes, range_end: bytes) -> bool:
    if not range_end:
        return key in SEED
    return any(key <= s and (range_end == b"\x00" or s < range_end) for s in SEED)


def txn_writes_seed(txn: rpc_pb2.TxnRequest) -> bool:
    for op in (*txn.success, *txn.failure):
        kind = op.WhichOneof("request")
        if kind == "request_put" and op.request_put.key in SEED:
            return True
        delete = op.request_delete_range
        if kind == "request_delete_range" and covers_seed(delete.key, delete.range_end):
            return True
        if kind == "request_txn" and txn_writes_seed(op.request_txn):
            return True
    return False


def etcd_accepts_url(url: str) -> bool:
    """etcd's types.NewURLs (after trimming): the URL parses, has scheme http(s) or unix(s), a host:port, no path.
    Only lists with a URL it refuses are sent as MemberAdd (any other one would add a member)."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return False
    return parts.scheme in ("http", "https", "unix", "unixs") and not parts.path and ":" in parts.netloc


def unsafe(method: Method, msg: Any, target: Target, token: str | None = None) -> str | None:
    """Why ``msg`` must not be sent (it is valid and would change the seed data, the cluster or the credentials the
    fuzzing uses), or None."""
    name, root = method.key, token == target.admin_token
    if name == "KV.Put" and msg.key in SEED:
        return "writes a seed key"
    if name == "KV.DeleteRange" and covers_seed(msg.key, msg.range_end):
        return "deletes seed keys"
    if name == "KV.Txn" and txn_writes_seed(msg):
        return "writes seed keys"
    if name == "Maintenance.Alarm" and msg.action == msg.ACTIVATE and msg.alarm in (rpc_pb2.NOSPACE, rpc_pb2.CORRUPT):
        return "raises a real alarm"
    if name == "Maintenance.MoveLeader" and msg.targetID in target.member_ids and len(target.member_ids) > 1:
        return "moves the leader"
    if name in ("Cluster.MemberRemove", "Cluster.MemberUpdate") and msg.ID in target.member_ids:
        return "changes a member"
    urls = list(msg.peerURLs) if name == "Cluster.MemberAdd" else []
    if urls and all(etcd_accepts_url(u) for u in urls) and not set(urls) & target.peer_urls:
        return "adds a member"
    if name == "Auth.UserAdd" and msg.name == ROOT and not target.auth:
        return "creates the root user (auth could then be enabled)"
    if name == "Auth.UserGrantRole" and msg.role == ROOT:
        return "grants the root role"
    user_changes = ("Auth.UserChangePassword", "Auth.UserDelete", "Auth.UserRevokeRole")
    if target.auth and name in user_changes and msg.name in (ROOT, USER):
        return "changes a user the fuzzing calls as"
    if target.auth and name in ("Auth.RoleDelete", "Auth.RoleRevokePermission") and msg.role == ROLE:
        return "changes the role the fuzzing calls with"
    if target.auth and name == "Auth.AuthDisable" and root:
        return "disables auth"
    if name == "Lock.Unlock" and msg.key in SEED:
        return "deletes a seed key"
    if name in ("Election.Proclaim", "Election.Resign") and msg.leader.key in SEED:
        return "writes a seed key"
    if name in ("Lock.Lock", "Election.Campaign") and queue_is_busy(target, msg.name):
        return "would wait for an earlier holder"
    return None


def queue_is_busy(target: Target, name: bytes) -> bool:
    """Whether a key exists under ``name/`` (a Lock or Campaign there would wait for its deletion)."""
    prefix = name + b"/"
    request = rpc_pb2.RangeRequest(key=prefix, range_end=prefix[:-1] + b"0", count_only=True)
    outcome = call_unary(target.channels[0], METHODS["KV.Range"], request.SerializeToString(), target.admin_token)
    if outcome.code != grpc.StatusCode.OK:
        return True  # (a key too long to look up, say): do not risk waiting
    return rpc_pb2.RangeResponse.FromString(outcome.responses[0]).count > 0


def prepare(method: Method, msg: Any, target: Target) -> Message:
    """Fill in placeholders (a member's own peer URL) before sending."""
    if method.key == "Cluster.MemberAdd" and PEER in msg.peerURLs:
        urls = [sorted(target.peer_urls)[0] if u == PEER else u for u in msg.peerURLs]
        del msg.peerURLs[:]
        msg.peerURLs.extend(urls)
    return msg  # type: ignore[no-any-return]


# -- calls and the properties -----------------------------------------------------------------------------------------

RETRYABLE = {
    "etcdserver: request timed out",
    "etcdserver: leader changed",
    "etcdserver: no leader",
    "etcdserver: too many requests",
}
# UNKNOWN answers etcd gives too (its auth package's untranslated error).
ETCD_UNKNOWN = {"auth: authentication failed, password was given for no password user"}
UNDECODABLE_UNARY = "grpc: error unmarshalling request: "
UNDECODABLE_STREAM = "grpc: failed to unmarshal the received message "


@dataclass
class Outcome:
    code: grpc.StatusCode
    details: str
    responses: list[bytes]

    def __str__(self) -> str:
        return f"{self.code.name} {self.details!r} ({len(self.responses)} responses)"


def metadata(token: str | None) -> list[tuple[str, str]] | None:
    return [("token", token)] if token else None


def call_unary(channel: grpc.Channel, method: Method, body: bytes, token: str | None = None) -> Outcome:
    try:
        response = channel.unary_unary(method.path)(body, timeout=CALL_TIMEOUT, metadata=metadata(token))
    except grpc.RpcError as err:
        return Outcome(err.code(), err.details() or "", [])
    return Outcome(grpc.StatusCode.OK, "", [response])


def first_responses(call: Any, count: int | None) -> Outcome:
    """Up to ``count`` responses (all when None) of a streaming call, then cancel it."""
    responses: list[bytes] = []
    try:
        for response in call:
            responses.append(response)
            if count is not None and len(responses) >= count:
                break
    except grpc.RpcError as err:
        return Outcome(err.code(), err.details() or "", responses)
    finally:
        call.cancel()
    return Outcome(grpc.StatusCode.OK, "", responses)


PROGRESS = rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()).SerializeToString()


def is_progress(raw: bytes) -> bool:
    resp = rpc_pb2.WatchResponse.FromString(raw)
    return resp.watch_id == -1 and not (resp.created or resp.canceled or resp.events)


def watch(channel: grpc.Channel, first: bytes, token: str | None = None) -> Outcome:
    """Send ``first`` then a progress request on one Watch stream, read until the progress answer (which comes once
    the first request was handled), then cancel the call."""
    path = METHODS["Watch.Watch"].path
    call = channel.stream_stream(path)(iter([first, PROGRESS]), timeout=CALL_TIMEOUT, metadata=metadata(token))
    responses: list[bytes] = []
    try:
        for response in call:
            responses.append(response)
            if is_progress(response) or len(responses) > 10_000:
                break
    except grpc.RpcError as err:
        return Outcome(err.code(), err.details() or "", responses)
    finally:
        call.cancel()
    assert responses and is_progress(responses[-1]), f"the Watch stream ended without answering: {responses[-3:]}"
    return Outcome(grpc.StatusCode.OK, "", responses)


def send_raw(channel: grpc.Channel, method: Method, body: bytes, token: str | None = None) -> Outcome:
    """Send ``body`` as the (first) request of ``method``; a stream is read until its first answer."""
    if not method.streaming:
        return call_unary(channel, method, body, token)
    if method.key == "Watch.Watch":
        return watch(channel, body, token)
    if method.client_streaming:
        call = channel.stream_stream(method.path)(iter([body]), timeout=CALL_TIMEOUT, metadata=metadata(token))
        return first_responses(call, 1)
    return first_responses(
        channel.unary_stream(method.path)(body, timeout=CALL_TIMEOUT, metadata=metadata(token)), None
    )


def assert_clear(method: Method, outcome: Outcome, decodable: bool = True) -> None:
    """The answer is OK with decodable responses, or an error etcd could give (see the module docstring)."""
    code, details = outcome.code, outcome.details
    assert not details.startswith("Unexpected "), f"{method.key}: an exception escaped: {outcome}"
    for raw in outcome.responses:
        message_class(method.response).FromString(raw)
    if code == grpc.StatusCode.OK:
        return
    assert details, f"{method.key}: an error without a message: {outcome}"
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and details.startswith("SERVER: Received message larger than max"):
        return  # gRPC refuses a message over the receive limit before anything decodes it, as grpc-go does for etcd
    if not decodable:
        prefix = UNDECODABLE_STREAM if method.streaming else UNDECODABLE_UNARY
        assert code == grpc.StatusCode.INTERNAL and details.startswith(prefix), f"{method.key}: {outcome}"
        return
    assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.DEADLINE_EXCEEDED), f"{method.key}: {outcome}"
    if code == grpc.StatusCode.UNAVAILABLE:
        assert details in RETRYABLE, f"{method.key}: {outcome}"
    if code == grpc.StatusCode.UNKNOWN:
        assert method.service in RECIPE_SERVICES or details in ETCD_UNKNOWN, f"{method.key}: {outcome}"


def send(target: Target, method: Method, msg: Message, via: int = 0, token: str | None = None) -> Outcome:
    """Send a well-formed request and check the answer; release what a successful Lock or Campaign took."""
    channel = target.channels[via % len(target.channels)]
    outcome = call_unary(channel, method, msg.SerializeToString(), token)
    note(f"{method.key} as {token} -> {outcome}")
    assert_clear(method, outcome)
    if outcome.code == grpc.StatusCode.OK and method.key == "Lock.Lock":
        unlock = v3lock_pb2.UnlockRequest(key=v3lock_pb2.LockResponse.FromString(outcome.responses[0]).key)
        release = call_unary(channel, METHODS["Lock.Unlock"], unlock.SerializeToString(), token)
        assert release.code == grpc.StatusCode.OK, release
    if outcome.code == grpc.StatusCode.OK and method.key == "Election.Campaign":
        leader = v3election_pb2.CampaignResponse.FromString(outcome.responses[0]).leader
        resign = v3election_pb2.ResignRequest(leader=leader).SerializeToString()
        release = call_unary(channel, METHODS["Election.Resign"], resign, token)
        assert release.code == grpc.StatusCode.OK, release
    return outcome


def check_target(target: Target) -> None:
    """Every member alive and healthy, holding the seed data; no traceback in any log."""
    for process in target.processes:
        assert process.alive(), process.log()[-6000:]
        with urllib.request.urlopen(process.extra["http_url"] + "/health", timeout=CALL_TIMEOUT) as reply:
            assert b'"health":"true"' in reply.read().replace(b" ", b"")
    request = rpc_pb2.RangeRequest(key=b"seed/", range_end=b"seed0").SerializeToString()
    for channel in target.channels:
        outcome = call_unary(channel, METHODS["KV.Range"], request, target.admin_token)
        assert outcome.code == grpc.StatusCode.OK, outcome
        kvs = rpc_pb2.RangeResponse.FromString(outcome.responses[0]).kvs
        assert {kv.key: kv.value for kv in kvs if kv.key in SEED} == SEED  # fuzzed keys may sit between them
    for process in target.processes:
        log = process.log()
        assert "Traceback" not in log, log[max(0, log.index("Traceback") - 2000) :][:8000]


# -- fixtures ---------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def scratch_dir(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[Path]:
    """A data directory on tmpfs when possible (fsync is free there), removed afterwards."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        base = Path(tempfile.mkdtemp(prefix=f"coord-{name}-", dir=shm))
        try:
            yield base
        finally:
            shutil.rmtree(base, ignore_errors=True)
    else:
        yield tmp_path_factory.mktemp(name)


def unary(channel: grpc.Channel, name: str, request: Message, token: str | None = None) -> bytes:
    """A call that must succeed; its response bytes."""
    outcome = call_unary(channel, METHODS[name], request.SerializeToString(), token)
    assert outcome.code == grpc.StatusCode.OK, f"{name}: {outcome}"
    return outcome.responses[0]


def seeded(processes: list[ServerProcess], channels: list[grpc.Channel], **extra: Any) -> Target:
    """Write the seed data (through the last channel: a follower in a cluster) and describe the target."""
    for key, value in SEED.items():
        unary(channels[-1], "KV.Put", rpc_pb2.PutRequest(key=key, value=value), extra.get("admin_token"))
    members = rpc_pb2.MemberListResponse.FromString(
        unary(channels[0], "Cluster.MemberList", rpc_pb2.MemberListRequest())
    )
    ids, urls = {m.ID for m in members.members}, {u for m in members.members for u in m.peerURLs}
    return Target(processes, channels, ids, urls, **extra)


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    with scratch_dir(tmp_path_factory, "grpc-fuzz") as base:
        process = start_coord_server(base / "coord", extra_args=EXTRA_ARGS)
        try:
            with grpc.insecure_channel(process.endpoint) as channel:
                target = seeded([process], [channel])
                yield target
                check_target(target)
        finally:
            process.stop()


def enable_auth(channel: grpc.Channel) -> tuple[str, str]:
    """Root, and a user who may read and write fuzz/ and read seed/; auth enabled. Returns (root, user) tokens."""
    unary(channel, "Auth.UserAdd", rpc_pb2.AuthUserAddRequest(name=ROOT, password=PASSWORD))
    unary(channel, "Auth.UserGrantRole", rpc_pb2.AuthUserGrantRoleRequest(user=ROOT, role=ROOT))
    unary(channel, "Auth.UserAdd", rpc_pb2.AuthUserAddRequest(name=USER, password=PASSWORD))
    unary(channel, "Auth.RoleAdd", rpc_pb2.AuthRoleAddRequest(name=ROLE))
    for perm in (
        auth_pb2.Permission(permType=auth_pb2.Permission.READWRITE, key=b"fuzz/", range_end=b"fuzz0"),
        auth_pb2.Permission(permType=auth_pb2.Permission.READ, key=b"seed/", range_end=b"seed0"),
    ):
        unary(channel, "Auth.RoleGrantPermission", rpc_pb2.AuthRoleGrantPermissionRequest(name=ROLE, perm=perm))
    unary(channel, "Auth.UserGrantRole", rpc_pb2.AuthUserGrantRoleRequest(user=USER, role=ROLE))
    unary(channel, "Auth.AuthEnable", rpc_pb2.AuthEnableRequest())
    tokens = []
    for name in (ROOT, USER):
        raw = unary(channel, "Auth.Authenticate", rpc_pb2.AuthenticateRequest(name=name, password=PASSWORD))
        tokens.append(rpc_pb2.AuthenticateResponse.FromString(raw).token)
    return tokens[0], tokens[1]


@pytest.fixture(scope="module")
def with_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    with scratch_dir(tmp_path_factory, "grpc-fuzz-auth") as base:
        process = start_coord_server(base / "coord", extra_args=EXTRA_ARGS)
        try:
            with grpc.insecure_channel(process.endpoint) as channel:
                root, user = enable_auth(channel)
                # Seeded as root: the user may read the seed but not write it.
                target = seeded([process], [channel], tokens=[root, user, "no.such-token", None], admin_token=root)
                yield target
                check_target(target)
                status = unary(channel, "Auth.AuthStatus", rpc_pb2.AuthStatusRequest(), root)
                assert rpc_pb2.AuthStatusResponse.FromString(status).enabled
        finally:
            process.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    with scratch_dir(tmp_path_factory, "grpc-fuzz-cluster") as base:
        members = Cluster("coord", base, 3, extra_args=EXTRA_ARGS)
        try:
            leader = members.wait_leader()
            ordered = [leader, *(m for m in members.members if m is not leader)]
            with contextlib.ExitStack() as stack:
                channels = [stack.enter_context(grpc.insecure_channel(m.endpoint)) for m in ordered]
                target = seeded(ordered, channels)
                yield target
                check_target(target)
                assert_same_hash(target)
        finally:
            members.stop()


def assert_same_hash(target: Target) -> None:
    """Every member reports the same HashKV at the leader's current revision (polling while one catches up)."""
    status = rpc_pb2.StatusResponse.FromString(unary(target.channels[0], "Maintenance.Status", rpc_pb2.StatusRequest()))
    request = rpc_pb2.HashKVRequest(revision=status.header.revision).SerializeToString()
    deadline = time.monotonic() + 30
    while True:
        outcomes = [call_unary(channel, METHODS["Maintenance.HashKV"], request) for channel in target.channels]
        hashes = {rpc_pb2.HashKVResponse.FromString(o.responses[0]).hash if o.responses else str(o) for o in outcomes}
        if len(hashes) == 1 and isinstance(next(iter(hashes)), int):
            return
        assert time.monotonic() < deadline, f"members disagree at revision {status.header.revision}: {hashes}"
        time.sleep(0.2)


# -- fuzzing ----------------------------------------------------------------------------------------------------------


@fuzz(600)
@given(data=st.data(), name=st.sampled_from(UNARY))
def test_requests(single: Target, data: st.DataObject, name: str) -> None:
    method = METHODS[name]
    msg = prepare(method, data.draw(messages(method.request), label="request"), single)
    assume(unsafe(method, msg, single) is None)
    send(single, method, msg)


@fuzz(500)
@given(data=st.data(), name=st.sampled_from(UNARY + STREAMING))
def test_raw_bytes(single: Target, data: st.DataObject, name: str) -> None:
    method = METHODS[name]
    body = data.draw(st.one_of(st.binary(max_size=48), mutated(method)), label="body")
    msg = decodes(method, body)
    if msg is not None:
        assume(unsafe(method, msg, single) is None)
        assume(name != "Election.Observe")  # a well-formed one waits for a leader forever
    outcome = send_raw(single.channels[0], method, body)
    note(f"{name} {body!r} -> {outcome}")
    assert_clear(method, outcome, decodable=msg is not None)


@fuzz(120)
@given(data=st.data())
def test_watch_requests(single: Target, data: st.DataObject) -> None:
    request = data.draw(messages(rpc_pb2.WatchRequest.DESCRIPTOR), label="request")
    outcome = watch(single.channels[0], request.SerializeToString())
    note(str(outcome))
    assert_clear(METHODS["Watch.Watch"], outcome)


@fuzz(60)
@given(data=st.data())
def test_lease_keep_alive_requests(single: Target, data: st.DataObject) -> None:
    request = data.draw(messages(rpc_pb2.LeaseKeepAliveRequest.DESCRIPTOR), label="request")
    outcome = send_raw(single.channels[0], METHODS["Lease.LeaseKeepAlive"], request.SerializeToString())
    note(str(outcome))
    assert_clear(METHODS["Lease.LeaseKeepAlive"], outcome)
    assert outcome.code == grpc.StatusCode.OK and len(outcome.responses) == 1, outcome


@fuzz(6)
@given(
    name=st.sampled_from(["KV.Put", "KV.Range", "KV.Txn", "Lease.LeaseGrant", "Watch.Watch"]),
    extra=st.integers(1, 4096),
)
def test_beyond_the_grpc_limit(single: Target, name: str, extra: int) -> None:
    blob = b"x" * (GRPC_LIMIT + extra)
    msg: Message = {
        "KV.Put": rpc_pb2.PutRequest(key=b"fuzz/big", value=blob),
        "KV.Range": rpc_pb2.RangeRequest(key=blob),
        "KV.Txn": rpc_pb2.TxnRequest(compare=[rpc_pb2.Compare(key=b"fuzz/big", value=blob)]),
        "Lease.LeaseGrant": rpc_pb2.LeaseGrantRequest(TTL=5),
        "Watch.Watch": rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=blob)),
    }[name]
    body = msg.SerializeToString() + (unknown_field(blob) if name == "Lease.LeaseGrant" else b"")
    outcome = send_raw(single.channels[0], METHODS[name], body)
    assert_clear(METHODS[name], outcome)
    assert outcome.code == grpc.StatusCode.RESOURCE_EXHAUSTED, outcome


@fuzz(500)
@given(data=st.data(), name=st.sampled_from(UNARY), caller=st.integers(0, 3))
def test_requests_with_auth(with_auth: Target, data: st.DataObject, name: str, caller: int) -> None:
    method, token = METHODS[name], with_auth.tokens[caller]
    msg = prepare(method, data.draw(messages(method.request), label="request"), with_auth)
    assume(unsafe(method, msg, with_auth, token) is None)
    send(with_auth, method, msg, token=token)


@fuzz(80)
@given(data=st.data(), caller=st.integers(0, 3))
def test_watch_requests_with_auth(with_auth: Target, data: st.DataObject, caller: int) -> None:
    request = data.draw(messages(rpc_pb2.WatchRequest.DESCRIPTOR), label="request")
    token = with_auth.tokens[caller]
    outcome = watch(with_auth.channels[0], request.SerializeToString(), token)
    note(f"as {token}: {outcome}")
    assert_clear(METHODS["Watch.Watch"], outcome)


@fuzz(160)
@given(data=st.data(), name=st.sampled_from(CLUSTER_METHODS), via=st.integers(0, 2))
def test_cluster_requests(cluster: Target, data: st.DataObject, name: str, via: int) -> None:
    method = METHODS[name]
    msg = prepare(method, data.draw(messages(method.request), label="request"), cluster)
    assume(unsafe(method, msg, cluster) is None)
    send(cluster, method, msg, via=via)


@fuzz(80)
@given(data=st.data(), name=st.sampled_from(CLUSTER_METHODS), via=st.integers(0, 2))
def test_cluster_raw_bytes(cluster: Target, data: st.DataObject, name: str, via: int) -> None:
    method = METHODS[name]
    body = data.draw(mutated(method), label="body")
    msg = decodes(method, body)
    if msg is not None:
        assume(unsafe(method, msg, cluster) is None)
    outcome = call_unary(cluster.channels[via], method, body)
    note(f"{name} {body!r} -> {outcome}")
    assert_clear(method, outcome, decodable=msg is not None)


@pytest.mark.slow
@fuzz(10_000)
@given(data=st.data(), name=st.sampled_from(UNARY + STREAMING))
def test_many_requests(single: Target, data: st.DataObject, name: str) -> None:
    """A longer run of the same properties (well-formed requests and raw bytes mixed)."""
    method = METHODS[name]
    if method.streaming or data.draw(st.booleans(), label="raw"):
        body = data.draw(st.one_of(st.binary(max_size=64), mutated(method)), label="body")
        msg = decodes(method, body)
        assume(msg is None or (unsafe(method, msg, single) is None and name != "Election.Observe"))
        assert_clear(method, send_raw(single.channels[0], method, body), decodable=msg is not None)
        return
    msg = prepare(method, data.draw(messages(method.request), label="request"), single)
    assume(unsafe(method, msg, single) is None)
    send(single, method, msg)


# -- regressions: what the fuzzing found ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "urls", [[], ["http://127.0.0.1:1/path"], ["http://h:1/"], ["ftp://h:1"], ["http://h:x"], ["foo"], ["http://h"]]
)
def test_member_add_refuses_bad_peer_urls(single: Target, urls: list[str]) -> None:
    """etcd's answer to peer URLs its types.NewURLs refuses. A URL with a path used to be accepted, adding a member
    that could never start, which cost a one-member cluster its quorum."""
    outcome = call_unary(
        single.channels[0], METHODS["Cluster.MemberAdd"], rpc_pb2.MemberAddRequest(peerURLs=urls).SerializeToString()
    )
    assert (outcome.code, outcome.details) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "etcdserver: given member URLs are invalid",
    )
    members = rpc_pb2.MemberListResponse.FromString(
        unary(single.channels[0], "Cluster.MemberList", rpc_pb2.MemberListRequest())
    )
    assert {m.ID for m in members.members} == single.member_ids


@pytest.mark.parametrize(
    "name",
    [
        "KV.Range",
        "KV.Put",
        "Auth.UserAdd",
        "Lock.Lock",
        "Maintenance.Snapshot",
        "Election.Observe",
        "Watch.Watch",
        "Lease.LeaseKeepAlive",
    ],
)
def test_undecodable_requests_get_etcds_status(single: Target, name: str) -> None:
    """INTERNAL with grpc-go's message, as etcd answers, instead of UNKNOWN ``Unexpected <class 'DecodeError'>`` (or,
    for Watch, a stream that ended with OK)."""
    method = METHODS[name]
    body = b"\x0a\x05ab" if name != "Auth.UserAdd" else b"\x0a\x02\xff\xfe"  # cut short; a string that is not UTF-8
    outcome = send_raw(single.channels[0], method, body)
    prefix = UNDECODABLE_STREAM if method.streaming else UNDECODABLE_UNARY
    assert outcome.code == grpc.StatusCode.INTERNAL and outcome.details.startswith(prefix), outcome


def test_unknown_fields_are_dropped(single: Target) -> None:
    """As etcd: fields the API does not define neither count towards --max-request-bytes nor reach the log."""
    put = rpc_pb2.PutRequest(key=b"fuzz/unknown-field", value=b"v").SerializeToString()
    outcome = call_unary(single.channels[0], METHODS["KV.Put"], put + unknown_field(b"u" * (MAX_REQUEST_BYTES + 1)))
    assert outcome.code == grpc.StatusCode.OK, outcome
    got = rpc_pb2.RangeResponse.FromString(
        unary(single.channels[0], "KV.Range", rpc_pb2.RangeRequest(key=b"fuzz/unknown-field"))
    )
    assert [kv.value for kv in got.kvs] == [b"v"]


def test_request_size_is_checked_before_key_length(single: Target) -> None:
    """etcd refuses a request that is too large before anything else but its own validation; coord's key length limit
    (which etcd lacks) comes after it."""
    too_long = call_unary(single.channels[0], METHODS["KV.Put"], rpc_pb2.PutRequest(key=b"k" * 600).SerializeToString())
    assert too_long.details == KEY_TOO_LONG.message
    for request in (
        rpc_pb2.PutRequest(key=b"k" * (MAX_REQUEST_BYTES + 1)),
        rpc_pb2.TxnRequest(
            success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"k" * (MAX_REQUEST_BYTES + 1)))]
        ),
    ):
        name = "KV.Put" if isinstance(request, rpc_pb2.PutRequest) else "KV.Txn"
        outcome = call_unary(single.channels[0], METHODS[name], request.SerializeToString())
        assert (outcome.code, outcome.details) == (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: request is too large")


def test_a_nested_txn_goes_through_the_log(single: Target) -> None:
    """etcd answers a txn from local state only when its branches hold nothing but range ops; a nested txn, even one
    that only reads, goes through the log and so is held to --max-request-bytes."""
    big_range = rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"r" * (MAX_REQUEST_BYTES + 1)))
    local = rpc_pb2.TxnRequest(success=[big_range])
    assert call_unary(single.channels[0], METHODS["KV.Txn"], local.SerializeToString()).code == grpc.StatusCode.OK
    nested = rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp(request_txn=rpc_pb2.TxnRequest(success=[big_range]))])
    outcome = call_unary(single.channels[0], METHODS["KV.Txn"], nested.SerializeToString())
    assert (outcome.code, outcome.details) == (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: request is too large")


def test_the_applier_refuses_a_key_too_long_to_store(tmp_path: Path) -> None:
    """The API layer refuses such keys; an entry that carries one anyway is refused when applied, deterministically,
    instead of failing the apply (which stops the member)."""
    backend = Backend(tmp_path, map_size=64 * 1024**2)
    try:
        applier = Applier(backend, min_lease_ttl=2)
        long_put = rpc_pb2.PutRequest(key=b"\x00" * 300, value=b"v")
        txn_put = rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp(request_put=long_put)])
        with backend.write() as txn:
            put = applier.apply(txn, LogEntry(5, 1, 0, encode(Kind.PUT, 1, long_put)))
            in_txn = applier.apply(txn, LogEntry(6, 1, 0, encode(Kind.TXN, 2, txn_put)))
            after = applier.apply(txn, LogEntry(7, 1, 0, encode(Kind.PUT, 3, rpc_pb2.PutRequest(key=b"k"))))
        for refused in (put, in_txn):
            assert isinstance(refused.result, Rejected) and refused.result.spec is KEY_TOO_LONG
            assert refused.events == [] and refused.revision == 1
        assert isinstance(after.result, rpc_pb2.PutResponse) and after.revision == 2
    finally:
        backend.close()
