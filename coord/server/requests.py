"""How a client request travels in the log: a kind byte, the proposer's request id, then the etcd request message.

The entry is what a member appends and (later) replicates; the request id lets the proposing member find the waiter
to resolve when the entry is applied. The format is private to coord-server.

A request made with credentials (auth, see :mod:`coord.server.auth`) carries an auth header between the request id
and the message, as etcd's ``RequestHeader{username, auth_revision}``: the applier checks permissions against it on
every member. The kind byte's high bit says whether the header is there, so entries written before auth existed
decode unchanged (kinds stay below 128). Header layout: flags (1 byte; bit 0 = issued by the server itself, which no
permission check refuses), auth revision (8 bytes), user name length (2 bytes), user name (UTF-8).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from google.protobuf.message import Message

from coord._proto.etcdserverpb import rpc_pb2

_HEADER = struct.Struct(">BQ")
_AUTH_HEADER = struct.Struct(">BQH")
_WITH_AUTH = 0x80
_SYSTEM = 0x01


class Kind(enum.IntEnum):
    PUT = 1
    DELETE_RANGE = 2
    TXN = 3
    COMPACT = 4
    LEASE_GRANT = 5
    LEASE_REVOKE = 6
    # coord.server.lease: remaining TTLs recorded by the leader (etcd's internal LeaseCheckpoint request).
    LEASE_CHECKPOINT = 7
    # Membership bookkeeping (coord.server.membership); the payload is an etcd ``Member``.
    MEMBER_ATTR = 64  # a member publishes its name and client URLs
    MEMBER_UPDATE = 65  # MemberUpdate: new peer URLs
    ALARM = 66  # coord.server.alarms: raise, disarm or list alarms; the payload is an etcd AlarmRequest
    # Auth (coord.server.auth); the payload is the etcd request, with passwords replaced by their bcrypt hash.
    AUTH_ENABLE = 32
    AUTH_DISABLE = 33
    AUTH_STATUS = 34
    AUTHENTICATE = 35  # the password was checked by the proposer; the entry carries the user name only
    USER_ADD = 36
    USER_GET = 37
    USER_LIST = 38
    USER_DELETE = 39
    USER_CHANGE_PASSWORD = 40
    USER_GRANT_ROLE = 41
    USER_REVOKE_ROLE = 42
    ROLE_ADD = 43
    ROLE_GET = 44
    ROLE_LIST = 45
    ROLE_DELETE = 46
    ROLE_GRANT_PERMISSION = 47
    ROLE_REVOKE_PERMISSION = 48


REQUEST_TYPES: dict[Kind, type[Message]] = {
    Kind.PUT: rpc_pb2.PutRequest,
    Kind.DELETE_RANGE: rpc_pb2.DeleteRangeRequest,
    Kind.TXN: rpc_pb2.TxnRequest,
    Kind.COMPACT: rpc_pb2.CompactionRequest,
    Kind.LEASE_GRANT: rpc_pb2.LeaseGrantRequest,
    Kind.LEASE_REVOKE: rpc_pb2.LeaseRevokeRequest,
    Kind.LEASE_CHECKPOINT: rpc_pb2.LeaseCheckpointRequest,
    Kind.MEMBER_ATTR: rpc_pb2.Member,
    Kind.MEMBER_UPDATE: rpc_pb2.Member,
    Kind.ALARM: rpc_pb2.AlarmRequest,
    Kind.AUTH_ENABLE: rpc_pb2.AuthEnableRequest,
    Kind.AUTH_DISABLE: rpc_pb2.AuthDisableRequest,
    Kind.AUTH_STATUS: rpc_pb2.AuthStatusRequest,
    Kind.AUTHENTICATE: rpc_pb2.AuthenticateRequest,
    Kind.USER_ADD: rpc_pb2.AuthUserAddRequest,
    Kind.USER_GET: rpc_pb2.AuthUserGetRequest,
    Kind.USER_LIST: rpc_pb2.AuthUserListRequest,
    Kind.USER_DELETE: rpc_pb2.AuthUserDeleteRequest,
    Kind.USER_CHANGE_PASSWORD: rpc_pb2.AuthUserChangePasswordRequest,
    Kind.USER_GRANT_ROLE: rpc_pb2.AuthUserGrantRoleRequest,
    Kind.USER_REVOKE_ROLE: rpc_pb2.AuthUserRevokeRoleRequest,
    Kind.ROLE_ADD: rpc_pb2.AuthRoleAddRequest,
    Kind.ROLE_GET: rpc_pb2.AuthRoleGetRequest,
    Kind.ROLE_LIST: rpc_pb2.AuthRoleListRequest,
    Kind.ROLE_DELETE: rpc_pb2.AuthRoleDeleteRequest,
    Kind.ROLE_GRANT_PERMISSION: rpc_pb2.AuthRoleGrantPermissionRequest,
    Kind.ROLE_REVOKE_PERMISSION: rpc_pb2.AuthRoleRevokePermissionRequest,
}


@dataclass(frozen=True, slots=True)
class AuthInfo:
    """Who makes a request, as etcd's AuthInfo: the user name and the auth revision its credentials were checked
    at (0 = no credentials). ``system`` marks requests the server makes itself (lease expiry), which are never
    refused for permissions."""

    username: str
    revision: int
    system: bool = False


SYSTEM = AuthInfo("", 0, system=True)


@dataclass(frozen=True, slots=True)
class Entry:
    """A decoded log entry: kind, the proposer's request id, the request, and its auth header (None without)."""

    kind: Kind
    request_id: int
    request: Message
    auth: AuthInfo | None


def encode(kind: Kind, request_id: int, message: Message, auth: AuthInfo | None = None) -> bytes:
    """The log entry data for ``message``, with ``auth`` as its auth header when given."""
    if auth is None:
        return _HEADER.pack(kind, request_id) + message.SerializeToString()
    name = auth.username.encode()
    flags = _SYSTEM if auth.system else 0
    return (
        _HEADER.pack(kind | _WITH_AUTH, request_id)
        + _AUTH_HEADER.pack(flags, auth.revision, len(name))
        + name
        + message.SerializeToString()
    )


def decode(data: bytes) -> tuple[Kind, int, Message]:
    """(kind, request id, request message) of an entry; raises ValueError for an unknown kind."""
    entry = decode_entry(data)
    return entry.kind, entry.request_id, entry.request


def request_id_of(data: bytes) -> int:
    """The proposer's request id of an entry, or 0 when even the fixed header is missing."""
    return int(_HEADER.unpack_from(data)[1]) if len(data) >= _HEADER.size else 0


def decode_entry(data: bytes) -> Entry:
    """The entry with its auth header; raises ValueError for an unknown kind."""
    kind_value, request_id = _HEADER.unpack_from(data)
    offset = _HEADER.size
    auth: AuthInfo | None = None
    if kind_value & _WITH_AUTH:
        kind_value &= ~_WITH_AUTH
        flags, revision, name_length = _AUTH_HEADER.unpack_from(data, offset)
        offset += _AUTH_HEADER.size
        name = bytes(data[offset : offset + name_length]).decode()
        offset += name_length
        auth = AuthInfo(name, revision, system=bool(flags & _SYSTEM))
    kind = Kind(kind_value)
    return Entry(kind, request_id, REQUEST_TYPES[kind].FromString(data[offset:]), auth)
