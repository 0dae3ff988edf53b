"""How a client request travels in the log: a kind byte, the proposer's request id, then the etcd request message.

The entry is what a member appends and (later) replicates; the request id lets the proposing member find the waiter
to resolve when the entry is applied. The format is private to coord-server.
"""

from __future__ import annotations

import enum
import struct

from google.protobuf.message import Message

from coord._proto.etcdserverpb import rpc_pb2

_HEADER = struct.Struct(">BQ")


class Kind(enum.IntEnum):
    PUT = 1
    DELETE_RANGE = 2
    TXN = 3
    COMPACT = 4
    LEASE_GRANT = 5
    LEASE_REVOKE = 6


REQUEST_TYPES: dict[Kind, type[Message]] = {
    Kind.PUT: rpc_pb2.PutRequest,
    Kind.DELETE_RANGE: rpc_pb2.DeleteRangeRequest,
    Kind.TXN: rpc_pb2.TxnRequest,
    Kind.COMPACT: rpc_pb2.CompactionRequest,
    Kind.LEASE_GRANT: rpc_pb2.LeaseGrantRequest,
    Kind.LEASE_REVOKE: rpc_pb2.LeaseRevokeRequest,
}


def encode(kind: Kind, request_id: int, message: Message) -> bytes:
    return _HEADER.pack(kind, request_id) + message.SerializeToString()


def decode(data: bytes) -> tuple[Kind, int, Message]:
    """(kind, request id, request message) of an entry; raises ValueError for an unknown kind."""
    kind_value, request_id = _HEADER.unpack_from(data)
    kind = Kind(kind_value)
    return kind, request_id, REQUEST_TYPES[kind].FromString(data[_HEADER.size :])
