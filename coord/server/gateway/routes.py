"""The gateway's URL table: which gRPC method each ``POST /v3/...`` path calls, as etcd's grpc-gateway binds them.

The table follows the ``google.api.http`` annotations of etcd 3.4's rpc.proto, v3lock.proto and v3election.proto.
Two quirks of etcd 3.4 are kept: ``/v3/maintenance/hash`` calls Hash (3.4 binds Hash and HashKV to the same path and
the first binding wins), and the lease endpoints also answer under ``/v3/kv/lease/...``. Three paths of later etcd
versions are served too, because coord has the methods: ``/v3/maintenance/hashkv``, ``/v3/maintenance/downgrade``
and ``/v3/auth/status``. Every path is also served under ``/v3beta/``, as etcd 3.4 does.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.descriptor import Descriptor, FileDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from coord._proto.etcdserverpb import rpc_pb2
from coord._proto.v3electionpb import v3election_pb2
from coord._proto.v3lockpb import v3lock_pb2

PREFIXES = ("/v3/", "/v3beta/")


@dataclass(frozen=True)
class Route:
    """One gateway endpoint: the gRPC method it calls and how its body and answer are streamed.

    ``keep_open`` (bidirectional streams only): the request stream stays open after the HTTP body ends, until the
    client disconnects. etcd's Watch keeps serving after the client half-closes, so a watch posted with curl keeps
    delivering events; LeaseKeepAlive ends when the body does, as in etcd.
    """

    path: str  # without the /v3/ prefix, e.g. "kv/range"
    method: str  # gRPC method path, e.g. "/etcdserverpb.KV/Range"
    request_type: type[Message]
    client_streaming: bool
    server_streaming: bool
    keep_open: bool = False
    recursive: bool = False  # the request type can contain itself (a Txn nests Txns)

    @property
    def service(self) -> str:
        return self.method.split("/")[1]

    @property
    def name(self) -> str:
        return self.method.split("/")[2]


def _recursive(message: Descriptor) -> bool:
    """Whether ``message`` can contain a message of its own type at some depth."""
    seen: set[str] = set()
    stack = [f.message_type for f in message.fields if f.message_type is not None]
    while stack:
        current = stack.pop()
        if current.full_name == message.full_name:
            return True
        if current.full_name in seen:
            continue
        seen.add(current.full_name)
        stack.extend(f.message_type for f in current.fields if f.message_type is not None)
    return False


def _route(file: FileDescriptor, service: str, method: str, path: str, keep_open: bool = False) -> Route:
    descriptor: MethodDescriptor = file.services_by_name[service].methods_by_name[method]
    return Route(
        path=path,
        method=f"/{descriptor.containing_service.full_name}/{method}",
        request_type=GetMessageClass(descriptor.input_type),
        client_streaming=descriptor.client_streaming,
        server_streaming=descriptor.server_streaming,
        keep_open=keep_open,
        recursive=_recursive(descriptor.input_type),
    )


_RPC = rpc_pb2.DESCRIPTOR
_BINDINGS: list[tuple[FileDescriptor, str, str, str]] = [
    (_RPC, "KV", "Range", "kv/range"),
    (_RPC, "KV", "Put", "kv/put"),
    (_RPC, "KV", "DeleteRange", "kv/deleterange"),
    (_RPC, "KV", "Txn", "kv/txn"),
    (_RPC, "KV", "Compact", "kv/compaction"),
    (_RPC, "Lease", "LeaseGrant", "lease/grant"),
    (_RPC, "Lease", "LeaseRevoke", "lease/revoke"),
    (_RPC, "Lease", "LeaseRevoke", "kv/lease/revoke"),
    (_RPC, "Lease", "LeaseKeepAlive", "lease/keepalive"),
    (_RPC, "Lease", "LeaseTimeToLive", "lease/timetolive"),
    (_RPC, "Lease", "LeaseTimeToLive", "kv/lease/timetolive"),
    (_RPC, "Lease", "LeaseLeases", "lease/leases"),
    (_RPC, "Lease", "LeaseLeases", "kv/lease/leases"),
    (_RPC, "Cluster", "MemberAdd", "cluster/member/add"),
    (_RPC, "Cluster", "MemberRemove", "cluster/member/remove"),
    (_RPC, "Cluster", "MemberUpdate", "cluster/member/update"),
    (_RPC, "Cluster", "MemberList", "cluster/member/list"),
    (_RPC, "Cluster", "MemberPromote", "cluster/member/promote"),
    (_RPC, "Maintenance", "Alarm", "maintenance/alarm"),
    (_RPC, "Maintenance", "Status", "maintenance/status"),
    (_RPC, "Maintenance", "Defragment", "maintenance/defragment"),
    (_RPC, "Maintenance", "Hash", "maintenance/hash"),
    (_RPC, "Maintenance", "HashKV", "maintenance/hashkv"),
    (_RPC, "Maintenance", "Snapshot", "maintenance/snapshot"),
    (_RPC, "Maintenance", "MoveLeader", "maintenance/transfer-leadership"),
    (_RPC, "Maintenance", "Downgrade", "maintenance/downgrade"),
    (_RPC, "Auth", "AuthEnable", "auth/enable"),
    (_RPC, "Auth", "AuthDisable", "auth/disable"),
    (_RPC, "Auth", "AuthStatus", "auth/status"),
    (_RPC, "Auth", "Authenticate", "auth/authenticate"),
    (_RPC, "Auth", "UserAdd", "auth/user/add"),
    (_RPC, "Auth", "UserGet", "auth/user/get"),
    (_RPC, "Auth", "UserList", "auth/user/list"),
    (_RPC, "Auth", "UserDelete", "auth/user/delete"),
    (_RPC, "Auth", "UserChangePassword", "auth/user/changepw"),
    (_RPC, "Auth", "UserGrantRole", "auth/user/grant"),
    (_RPC, "Auth", "UserRevokeRole", "auth/user/revoke"),
    (_RPC, "Auth", "RoleAdd", "auth/role/add"),
    (_RPC, "Auth", "RoleGet", "auth/role/get"),
    (_RPC, "Auth", "RoleList", "auth/role/list"),
    (_RPC, "Auth", "RoleDelete", "auth/role/delete"),
    (_RPC, "Auth", "RoleGrantPermission", "auth/role/grant"),
    (_RPC, "Auth", "RoleRevokePermission", "auth/role/revoke"),
    (v3lock_pb2.DESCRIPTOR, "Lock", "Lock", "lock/lock"),
    (v3lock_pb2.DESCRIPTOR, "Lock", "Unlock", "lock/unlock"),
    (v3election_pb2.DESCRIPTOR, "Election", "Campaign", "election/campaign"),
    (v3election_pb2.DESCRIPTOR, "Election", "Proclaim", "election/proclaim"),
    (v3election_pb2.DESCRIPTOR, "Election", "Leader", "election/leader"),
    (v3election_pb2.DESCRIPTOR, "Election", "Observe", "election/observe"),
    (v3election_pb2.DESCRIPTOR, "Election", "Resign", "election/resign"),
]

ROUTES: dict[str, Route] = {path: _route(file, service, method, path) for file, service, method, path in _BINDINGS}
ROUTES["watch"] = _route(_RPC, "Watch", "Watch", "watch", keep_open=True)


def lookup(url_path: str) -> Route | None:
    """The route for a request path such as ``/v3/kv/range`` or ``/v3beta/kv/range``; None when nothing is bound."""
    for prefix in PREFIXES:
        if url_path.startswith(prefix):
            return ROUTES.get(url_path[len(prefix) :])
    return None
