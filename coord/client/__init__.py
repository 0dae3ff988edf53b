"""coord's client SDK core: transport, KV, Watch, Lease, Cluster, Maintenance and Session over the etcd v3 API.

The public names are re-exported from :mod:`coord`; import them from there.
"""

from coord.client._default import connect, default_client, set_default_client
from coord.client._sync import Client, SyncKeepAlive, SyncSession, SyncWatcher
from coord.client.client import AsyncClient
from coord.client.cluster import Member, MemberList
from coord.client.lease import KeepAlive, LeaseGrant, LeaseInfo, LeaseKeepAliveResult
from coord.client.maintenance import Alarm, AlarmType, HashKV, Status
from coord.client.results import (
    CompactResult,
    DeleteResult,
    GetResult,
    Header,
    KeyValue,
    PutResult,
    TxnResult,
    WatchEvent,
    WatchEventType,
)
from coord.client.session import Session, SessionEvent, SessionState
from coord.client.txn import (
    Compare,
    CreateRevision,
    Delete,
    Get,
    LeaseId,
    ModRevision,
    Put,
    SortOrder,
    SortTarget,
    Txn,
    Value,
    Version,
)
from coord.client.watch import Watcher

__all__ = [
    "Alarm",
    "AlarmType",
    "AsyncClient",
    "Client",
    "CompactResult",
    "Compare",
    "CreateRevision",
    "Delete",
    "DeleteResult",
    "Get",
    "GetResult",
    "HashKV",
    "Header",
    "KeepAlive",
    "KeyValue",
    "LeaseGrant",
    "LeaseId",
    "LeaseInfo",
    "LeaseKeepAliveResult",
    "Member",
    "MemberList",
    "ModRevision",
    "Put",
    "PutResult",
    "Session",
    "SessionEvent",
    "SessionState",
    "SortOrder",
    "SortTarget",
    "Status",
    "SyncKeepAlive",
    "SyncSession",
    "SyncWatcher",
    "Txn",
    "TxnResult",
    "Value",
    "Version",
    "WatchEvent",
    "WatchEventType",
    "Watcher",
    "connect",
    "default_client",
    "set_default_client",
]
